"""Figures: training curves (paper Figs. 4-6 style), mask overlays, image grids.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state), so they work headless,
in threads and in notebooks (a returned Figure displays inline in Jupyter).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from oct_seg.io import atomic_write

_PANELS = (("dice", "Dice"), ("jaccard", "Jaccard"), ("loss", "Loss"))


def save_figure(fig: Figure, path, format="png", dpi=120) -> Path:
    """Write `fig` atomically as `format` ("png", "pdf", ...; dpi: pixels per inch of the
    raster parts). Returns the path."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=format))


def plot_curves(histories: dict, out_png=None) -> Figure:
    """Dice, Jaccard and loss per epoch; one colour per fold, train solid, validation dashed.

    histories: {label: DataFrame with columns epoch, dice, jaccard, loss, val_dice,
    val_jaccard, val_loss (history.csv)}. Missing columns are skipped. Saved atomically to
    ``out_png`` when given. Returns the Figure.
    """
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, len(_PANELS))
    colours = [f"C{i % 10}" for i in range(len(histories))]
    for (label, df), colour in zip(histories.items(), colours):
        epochs = (df["epoch"].to_numpy() + 1) if "epoch" in df else np.arange(1, len(df) + 1)
        for ax, (key, _) in zip(axes, _PANELS):
            if key in df:
                ax.plot(epochs, df[key], color=colour, ls="-", label=f"{label} train")
            if f"val_{key}" in df:
                ax.plot(epochs, df[f"val_{key}"], color=colour, ls="--", label=f"{label} val")
    for ax, (_, title) in zip(axes, _PANELS):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if histories:
        axes[-1].legend(fontsize="small", ncol=1 + len(histories) // 6)
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def plot_overlay(image, truth=None, pred=None, out_png=None, ax=None, title=None):
    """Grey B-scan with the true mask outlined in green and the prediction in red.

    image: (H, W) or (H, W, 1) in [0, 1]; truth, pred: (H, W) binary (pred may be a
    probability map, drawn at 0.5). Draws on ``ax`` if given, else on a new Figure (saved to
    ``out_png`` when given). Returns the Axes.
    """
    fig = None
    if ax is None:
        fig = Figure(figsize=(8, 8 * np.shape(image)[0] / max(np.shape(image)[1], 1)))
        ax = fig.add_subplot()
    ax.imshow(np.squeeze(image), cmap="gray", vmin=0, vmax=1)
    for mask, colour in ((truth, "lime"), (pred, "red")):
        if mask is not None and np.any(np.squeeze(mask) > 0.5):
            ax.contour(np.squeeze(mask).astype(np.float32), levels=[0.5], colors=colour,
                       linewidths=0.8)
    if title:
        ax.set_title(title, fontsize="small")
    ax.set_axis_off()
    if fig is not None and out_png is not None:
        save_figure(fig, out_png)
    return ax


def plot_grid(images, truths=None, preds=None, titles=None, ncols=3, out_png=None) -> Figure:
    """Overlays of several scans in a grid (for notebooks and reports). Returns the Figure."""
    n = len(images)
    if n == 0:
        raise ValueError("plot_grid needs at least one image")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    h, w = np.shape(images[0])[:2]
    fig = Figure(figsize=(4 * ncols, 4 * nrows * h / max(w, 1) + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        plot_overlay(images[i], None if truths is None else truths[i],
                     None if preds is None else preds[i], ax=ax,
                     title=None if titles is None else titles[i])
    if out_png is not None:
        save_figure(fig, out_png)
    return fig
