"""Figures of our runs: mean training curves per run, every fold's validation curve with its
best epoch (convergence), and one B-scan segmented by every run's held-out model (the styles
of the paper's Figures 2-7)."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from oct_seg.data.pipeline import add_gaussian_noise
from oct_seg.data.readers import read_dataset, read_mask
from oct_seg.evaluate import noise_seed, predict_probabilities
from oct_seg.io import atomic_write
from oct_seg.loading import load_model
from oct_seg.metrics import case_scores
from oct_seg.plots import plot_curves, plot_grid, save_figure
from oct_seg.rundir import RunDir
from oct_seg.training import TrainConfig


def mean_history(run_dir) -> pd.DataFrame:
    """history.csv averaged over the finished folds, epoch by epoch (folds that stopped early
    drop out of later epochs; column n_folds counts those averaged)."""
    frames = [fold.read_history() for fold in RunDir(run_dir).finished_folds()
              if fold.history.is_file()]
    if not frames:
        raise ValueError(f"{run_dir}: no finished fold with a history.csv")
    long = pd.concat(frames, ignore_index=True)
    out = long.groupby("epoch").mean(numeric_only=True)
    out["n_folds"] = long.groupby("epoch").size()
    return out.reset_index()


def curves_figure(run_dirs: dict, labels: dict | None = None, out_png=None):
    """Dice, Jaccard and loss per epoch (mean over folds) for each run: train solid,
    validation dashed (paper Figures 2 and 4-6 style). Returns the matplotlib Figure."""
    hist = {(labels or {}).get(k, k): mean_history(d) for k, d in run_dirs.items()
            if RunDir(d).finished_folds()}
    if not hist:
        raise ValueError("none of the run directories has a finished fold")
    return plot_curves(hist, out_png)


def convergence_figure(run_dirs: dict, labels: dict | None = None, ncols: int = 3,
                       out_png=None) -> Figure:
    """One panel per run: validation Dice (whole held-out B-scans) per epoch of every finished
    fold, its best epoch marked with a dot, and the training Dice (patches) of the folds'
    mean, dashed. A plateau shows as flat lines at the right. Returns the Figure (saved to
    out_png when given)."""
    runs = {k: d for k, d in run_dirs.items() if RunDir(d).finished_folds()}
    if not runs:
        raise ValueError("none of the run directories has a finished fold")
    nrows = -(-len(runs) // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.2 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (key, run_dir) in zip(axes, runs.items()):
        for i, fold in enumerate(RunDir(run_dir).finished_folds()):
            hist = fold.read_history()
            if hist is None or "val_dice" not in hist:
                continue
            epoch = hist["epoch"].to_numpy() + 1
            ax.plot(epoch, hist["val_dice"], color=f"C{i}", lw=1, label=fold.name)
            best = int(np.nanargmax(hist["val_dice"].to_numpy(float)))
            ax.plot(epoch[best], hist["val_dice"].iloc[best], "o", color=f"C{i}", ms=4)
        mean = mean_history(run_dir)
        if "dice" in mean:
            ax.plot(mean["epoch"] + 1, mean["dice"], "k--", lw=1, label="train (mean)")
        ax.set(title=(labels or {}).get(key, key), xlabel="epoch", ylabel="val Dice",
               ylim=(0, 1))
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[len(runs):]:
        ax.set_visible(False)
    if out_png is not None:
        save_figure(fig, out_png)
    return fig


def pick_example_scan(data_dir) -> str:
    """The B-scan with the largest fluid fraction (ties: first by name): the visual example."""
    index = pd.read_csv(Path(data_dir) / "index.csv")
    index = index.sort_values(["fluid_fraction", "name"], ascending=[False, True])
    return str(index["name"].iloc[0])


def _example_path(fold_dir, scan: str, condition: str) -> Path:
    return Path(fold_dir) / f"example_{scan}_{condition}.png"


def _example_image(config: TrainConfig, image, scan: str, condition: str) -> np.ndarray:
    """The scan as scored under ``condition``: clean, or with the evaluation's seeded noise."""
    if condition == "clean":
        return image
    return np.asarray(add_gaussian_noise(image, config.noise_std,
                                         seed=noise_seed(config.seed, scan)), np.float32)


def write_example_predictions(run_dir, k: int, data_dir, dest=None) -> list[Path]:
    """Save fold k's predicted mask of the example scan (pick_example_scan), clean and noisy,
    as 0 / 255 PNGs ``example_<scan>_<condition>.png`` (a few kB each) in ``dest`` (default
    the fold's folder), when fold k held that scan out; returns the paths written.

    These small files let segmentation_grid draw the figure after the model is gone (models
    are not committed, and retraining one costs half a CPU-hour or more)."""
    from PIL import Image as PILImage

    run = RunDir(run_dir)
    scan = pick_example_scan(data_dir)
    if scan not in run.read_splits()[k]["val"]:
        return []
    cfg = TrainConfig.from_dict(run.read_config())
    fold = run.fold(k, cfg.n_folds)
    scans = read_dataset(data_dir)
    image = scans.images[scans.names.index(scan)]
    model = load_model(fold.model)
    written = []
    for condition in ("clean", "noisy") if cfg.noise_std > 0 else ("clean",):
        noisy = _example_image(cfg, image, scan, condition)
        prob = predict_probabilities(model, [noisy], image_size=cfg.image_size)[0]
        path = _example_path(fold.path if dest is None else dest, scan, condition)
        mask = ((prob > cfg.threshold) * 255).astype(np.uint8)
        atomic_write(path, lambda tmp: PILImage.fromarray(mask).save(tmp, format="png"))
        written.append(path)
    keras.backend.clear_session()
    return written


def segmentation_grid(run_dirs: dict, data_dir, scan: str | None = None, noisy: bool = False,
                      labels: dict | None = None, ncols: int = 3, out_png=None):
    """One B-scan segmented by each run's model of the fold that held it out (paper
    Figures 3 and 7 style), drawn from the predicted masks saved with the fold
    (write_example_predictions), so committed results suffice. First panel: the scan with
    the truth (green); then each run's prediction (red) with its Dice. noisy: the scan with
    the evaluation's seeded noise. Runs whose fold holding the scan is not there are left out.
    Returns (Figure, DataFrame of label, fold, dice, jaccard)."""
    scans = read_dataset(data_dir)
    scan = pick_example_scan(data_dir) if scan is None else scan
    if scan not in scans.names:
        raise ValueError(f"scan {scan!r} not in {data_dir}")
    i = scans.names.index(scan)
    condition = "noisy" if noisy else "clean"
    truth = scans.masks[i] > 0
    shown, preds, titles, rows = None, [], [], []
    for key, run_dir in run_dirs.items():
        run = RunDir(run_dir)
        if not run.config.is_file():
            continue
        cfg = TrainConfig.from_dict(run.read_config())
        k = run.val_fold(scan)
        path = _example_path(run.fold(k, cfg.n_folds).path, scan, condition)
        if not path.is_file():
            continue
        shown = _example_image(cfg, scans.images[i], scan, condition)
        pred = read_mask(path)
        s = case_scores(truth, pred)
        label = (labels or {}).get(key, key)
        preds.append(pred)
        titles.append(f"{label}: Dice {100 * s['dice']:.1f}")
        rows.append({"label": label, "fold": k, "dice": 100 * s["dice"],
                     "jaccard": 100 * s["jaccard"]})
    if not rows:
        raise ValueError(f"no run holds the {condition} prediction of {scan} (the fold that "
                         "held it out is not finished in any of them)")
    fig = plot_grid([shown] * (len(preds) + 1), [truth] * (len(preds) + 1), [None] + preds,
                    [f"{scan}{' + noise' if noisy else ''}: truth (green)"] + titles,
                    ncols=ncols, out_png=out_png)
    return fig, pd.DataFrame(rows)
