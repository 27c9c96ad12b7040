"""The experiments of the paper reproduction: settings, network widths, loss options, one run
folder per (network, loss), and running them.

Run layout: one run directory per (network, loss) under an output root,
``OUT/<model>__<loss>`` (:func:`run_dir_for`), written by :func:`oct_seg.train`. Table 1 (six
networks, Dice loss), Table 3 (TransUNet, five losses, clean scans) and Table 4 (the same runs
scored on the seeded noisy scans) all read from one root, so TransUNet + Dice is trained once
and appears in Tables 1, 3 and 4.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd

from oct_seg.io import write_csv
from oct_seg.rundir import RunDir
from oct_seg.training import TrainConfig, summarize_run, train

# Batch norm on (the paper does not say; keras-unet-collection's batch_norm=True option) with
# momentum 0.9 (TrainConfig.bn_momentum): an earlier FULL attempt without it collapsed to the
# all-zero or all-fluid output, and one with Keras' default momentum 0.99 failed because after
# ~200 optimiser steps the moving statistics were still far from the batch statistics, so every
# net in inference mode marked the whole B-scan as fluid while its training Dice rose.
# Swin-UNet has layer norm only (no batch_norm argument).
_FULL_NETS = {
    "unet": dict(filter_num=[8, 16, 32, 64], batch_norm=True),
    "att_unet": dict(filter_num=[8, 16, 32, 64], batch_norm=True),
    "r2_unet": dict(filter_num=[8, 16, 32, 64], batch_norm=True),
    "unet3plus": dict(filter_num_down=[8, 16, 32, 64], batch_norm=True),
    "transunet": dict(filter_num=[8, 16, 32, 64], embed_dim=32, num_mlp=64, num_heads=2,
                      num_transformer=2, patch_size=(2, 2), batch_norm=True),
    "swin_unet": dict(filter_num_begin=16, depth=3, num_heads=[2, 4, 4],
                      window_size=[4, 2, 2], num_mlp=64, patch_size=(4, 4)),
}
_QUICK_NETS = {
    "unet": dict(filter_num=[4, 8, 16]),
    "att_unet": dict(filter_num=[4, 8, 16]),
    "r2_unet": dict(filter_num=[4, 8, 16], recur_num=1),
    "unet3plus": dict(filter_num_down=[4, 8, 16]),
    "transunet": dict(filter_num=[4, 8, 16], embed_dim=8, num_mlp=16, num_heads=2,
                      num_transformer=1, patch_size=(2, 2)),
    "swin_unet": dict(filter_num_begin=8, depth=2, num_heads=[2, 2], window_size=[2, 2],
                      num_mlp=16, patch_size=(2, 2)),
}
# The paper does not publish its WBCE class weight. Duke DME has a fluid fraction f ~ 0.0088,
# i.e. (1 - f) / f ~ 113; a weight that large makes p > 0.5 wherever fluid is merely 1 %
# likely (over-segmentation at the 0.5 threshold), so we fix w = 10 ~ sqrt(113) a priori
# (not tuned on any result) for the WBCE row and the WBCE term of the combined loss.
# Overlap losses are computed over the whole batch (per_image=False: keras-unet-collection's
# form, which the paper's nets come from). With per_image=True a FULL attempt collapsed: 26 of
# the 88 scans are empty, an all-zero output gives them loss 0 while every fluid scan's loss sits
# at 1 whatever is predicted, and U-Net, Attention U-Net and R2 U-Net fell into that all-zero
# state within ~5 epochs (best epochs 0-1).
_BATCH = {"per_image": False}
LOSS_KWARGS = {"dice": dict(_BATCH), "focal_tversky": dict(_BATCH),
               "wbce": {"pos_weight": 10.0}, "tversky": dict(_BATCH),
               "combined": {"pos_weight": 10.0, **_BATCH}}


# Training settings of the real runs and of the test-suite runs (QUICK). FULL is what the
# 2-core CPU finishes for all ten experiments x 5 folds in about 1.5 h (two trainings at a
# time, one thread each; a U-Net fold of 20 epochs takes ~2 min there).
# learning_rate 1e-3 (the TrainConfig default): at 2e-3 a narrow U-Net with Dice loss collapsed
# to an all-zero output within ~40 steps even when over-fitting 8 fluid-rich scans.
SETTINGS = {
    "FULL": dict(image_size=(128, 192), epochs=20, n_folds=5, batch_size=4, learning_rate=1e-3,
                 patience=20, noise_std=0.1, seed=0, bn_momentum=0.9),
    # QUICK: one epoch of tiny nets, a smoke run of the notebooks' code; the output bias starts
    # at 0.5 (not the fluid prior) so that such a run still marks fluid and its tables differ
    # between the clean and the noisy condition
    "QUICK": dict(image_size=(32, 48), epochs=1, n_folds=2, batch_size=4, learning_rate=2e-3,
                  patience=6, noise_std=0.1, seed=0, prior_bias=False),
}


def network_kwargs(mode: str = "FULL") -> dict:
    """Builder kwargs per network: "FULL" (narrow CPU widths of the real runs; input H, W
    multiples of 32) or "QUICK" (tiny test nets; H, W multiples of 8)."""
    mode = str(mode).upper()
    if mode not in ("FULL", "QUICK"):
        raise ValueError(f"mode must be 'FULL' or 'QUICK', got {mode!r}")
    table = _FULL_NETS if mode == "FULL" else _QUICK_NETS
    return {k: dict(v) for k, v in table.items()}


def run_dir_for(out_dir, model: str, loss: str) -> Path:
    """The run directory of one (network, loss) experiment: OUT/<model>__<loss>."""
    return Path(out_dir) / f"{model}__{loss}"


def experiment_configs(pairs, model_kwargs: dict, loss_kwargs=None, **fields) -> dict:
    """{(model, loss): TrainConfig} for each (model, loss) pair, sharing every other setting.

    model_kwargs: {model: builder kwargs} (see network_kwargs); loss_kwargs: {loss: kwargs},
    default LOSS_KWARGS. fields: the other TrainConfig fields (e.g. SETTINGS[mode]), shared by
    every experiment; noise_std is the std of the seeded additive Gaussian noise of the noisy
    test condition (images in [0, 1]).
    """
    loss_kwargs = LOSS_KWARGS if loss_kwargs is None else loss_kwargs
    out = {}
    for model, loss in pairs:
        if model not in model_kwargs:
            raise ValueError(f"no model kwargs for {model!r}; have {sorted(model_kwargs)}")
        out[(model, loss)] = TrainConfig(
            model=model, model_kwargs=dict(model_kwargs[model]), loss=loss,
            loss_kwargs=dict(loss_kwargs.get(loss, {})), **fields)
    return out


def run_experiments(data_dir, out_dir, configs: dict, folds=None, verbose=2) -> dict:
    """Train / resume every config into run_dir_for(out_dir, model, loss); returns run dirs.

    Fold-major order (fold 0 of every experiment, then fold 1, ...), so a run cut short
    leaves every experiment with the same folds. Finished folds are skipped by the library,
    so calling this on finished run dirs only reads them.
    """
    dirs = {key: run_dir_for(out_dir, *key) for key in configs}
    n_folds = {cfg.n_folds for cfg in configs.values()}
    if len(n_folds) != 1:
        raise ValueError(f"all configs must share n_folds; got {sorted(n_folds)}")
    folds = range(n_folds.pop()) if folds is None else folds
    for k in folds:
        for key, cfg in configs.items():
            if RunDir(dirs[key]).fold(k, cfg.n_folds).finished:
                continue
            train(data_dir, dirs[key], dataclasses.replace(cfg, folds=[k]), verbose=verbose)
    for d in dirs.values():
        if d.is_dir() and not RunDir(d).summary.is_file():
            summarize_run(d)
    return dirs


def subset_data(data_dir, out_dir, subjects) -> Path:
    """A dataset folder with only the given subjects (symlinks to the images, masks and
    instances; filtered index.csv). For quick runs; the images are never copied."""
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir)
    index = pd.read_csv(data_dir / "index.csv")
    keep = index[index["subject"].isin(list(subjects))]
    if keep.empty:
        raise ValueError(f"no scans of subjects {list(subjects)} in {data_dir}/index.csv "
                         f"(subjects there: {sorted(index['subject'].unique().tolist())})")
    for sub in ("images", "masks", "instances"):
        if not (data_dir / sub).is_dir():
            continue
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        files = {p.stem: p for p in (data_dir / sub).iterdir()}
        for name in keep["name"].astype(str):
            if name in files:
                link = out_dir / sub / files[name].name
                if not link.exists():
                    os.symlink(files[name], link)
    write_csv(out_dir / "index.csv", keep)
    return out_dir
