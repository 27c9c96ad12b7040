"""Figures: curves per fold (train solid, val dashed), overlays, grids."""
import numpy as np
import pandas as pd
import pytest

from oct_seg.plots import plot_curves, plot_grid, plot_overlay


def _history(n, offset):
    e = np.arange(n)
    return pd.DataFrame({"epoch": e, "loss": 1 / (e + 1) + offset, "dice": e / n,
                         "jaccard": e / (2 * n), "val_loss": 1 / (e + 2), "val_dice": e / (n + 1),
                         "val_jaccard": e / (2 * n + 2)})


def test_plot_curves_lines_per_fold(tmp_path):
    out = tmp_path / "sub" / "curves.png"
    fig = plot_curves({"fold_0": _history(4, 0.0), "fold_1": _history(6, 0.1)}, out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert not list(out.parent.glob(".tmp-*"))
    axes = fig.axes[:3]
    assert [ax.get_title() for ax in axes] == ["Dice", "Jaccard", "Loss"]
    for ax in axes:
        lines = ax.get_lines()
        assert len(lines) == 4  # 2 folds x (train, val)
        assert [ln.get_linestyle() for ln in lines] == ["-", "--", "-", "--"]
    # x axis is 1-based epochs; y is the history column
    dice_train_fold1 = axes[0].get_lines()[2]
    np.testing.assert_array_equal(dice_train_fold1.get_xdata(), np.arange(1, 7))
    np.testing.assert_allclose(dice_train_fold1.get_ydata(), np.arange(6) / 6)


def test_overlay_and_grid(tmp_path):
    img = np.random.default_rng(0).random((40, 60)).astype(np.float32)
    truth = np.zeros((40, 60), np.uint8)
    truth[10:20, 10:30] = 1
    pred = np.zeros((40, 60), np.float32)
    pred[12:22, 12:32] = 0.9
    ax = plot_overlay(img, truth, pred, out_png=tmp_path / "o.png", title="scan")
    assert (tmp_path / "o.png").is_file() and ax.get_title() == "scan"
    assert len(ax.collections) >= 2  # a contour for truth and one for prediction
    ax = plot_overlay(img, np.zeros_like(truth), None)  # empty masks: no contours, no error
    assert len(ax.collections) == 0
    fig = plot_grid([img] * 5, [truth] * 5, [pred] * 5, titles=list("abcde"), ncols=3,
                    out_png=tmp_path / "g.png")
    assert len(fig.axes) == 6 and (tmp_path / "g.png").is_file()
    assert [a.get_title() for a in fig.axes[:5]] == list("abcde")
    with pytest.raises(ValueError, match="at least one"):
        plot_grid([])
