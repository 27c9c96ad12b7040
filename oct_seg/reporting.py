"""Paper-reproduction reporting: the published numbers as data, experiment settings, and the
tables and figures that put our cross-validated runs beside Darooei et al. (2023).

Everything the notebooks in ``notebooks/`` show is computed here, so they only call functions.

Run layout: one run directory per (network, loss) under an output root,
``OUT/<model>__<loss>`` (see :func:`run_dir_for`), written by :func:`oct_seg.train`.
Table 1 (six networks, Dice loss), Table 3 (TransUNet, five losses, clean scans) and Table 4
(the same runs scored on the seeded noisy scans) all read from one root, so TransUNet + Dice is
trained once and appears in Tables 1, 3 and 4.

Scores (fractions in [0, 1] in files; percent in the tables returned here):
* ``per-image`` -- mean over a fold's scans of each scan's Dice / Jaccard at its original
  size (scans whose truth and prediction are both empty are skipped), then mean +- sample std
  over folds (``RUN/summary.csv``).
* ``pooled`` -- TP, FP, FN summed over all scans of a fold, one Dice / Jaccard per fold, then
  mean +- std over folds: the form a Keras Dice metric reports, closest to how training-log
  numbers such as the paper's are usually produced.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "PAPER", "PAPER_SOURCE", "PUBLISHED_DUKE", "PROTOCOL_NOTES", "NETWORK_LABELS",
    "LOSS_LABELS", "NETWORKS", "LOSSES", "SETTINGS", "network_kwargs", "LOSS_KWARGS",
    "experiment_configs", "run_dir_for", "run_experiments", "subset_data", "run_summary", "run_facts", "trivial_baseline",
    "pooled_scores", "results_table",
    "compare_with_paper", "setting_differences", "mean_history", "curves_figure",
    "pick_example_scan", "segmentation_grid", "write_csv",
]

PAPER_SOURCE = ("R. Darooei, M. Nazari, R. Kafieh, H. Rabbani, \"Loss-modified transformer-based "
                "U-Net for accurate segmentation of fluids in optical coherence tomography images "
                "of retinal diseases\", J Med Signals Sens 2023;13(4):253-260, "
                "doi:10.4103/jmss.jmss_52_22")

NETWORKS = ("unet", "att_unet", "transunet", "r2_unet", "unet3plus", "swin_unet")  # Table 1 order
LOSSES = ("dice", "focal_tversky", "wbce", "tversky", "combined")  # Table 3 order
NETWORK_LABELS = {"unet": "U-Net", "att_unet": "Attention U-Net", "transunet": "TransUNet",
                  "r2_unet": "R2 U-Net", "unet3plus": "UNet 3+", "swin_unet": "Swin-UNet"}
LOSS_LABELS = {"dice": "Dice", "focal_tversky": "Focal Dice (focal Tversky)",
               "wbce": "Weighted BCE", "tversky": "Tversky",
               "combined": "Proposed (Dice + focal Tversky + WBCE)"}

# Published values (percent) that we could verify: the abstract gives the proposed loss's
# 95.52 (clean) and 92.79 (noisy); the four validation / Table 1 values were confirmed from the
# paper's tables by the project lead. Every other cell of Tables 1, 3 and 4 is "not available":
# the full text could not be retrieved, so no number is filled in from memory or inference.
PAPER = {
    "table1": {"transunet": {"train_dice": 89.54, "val_dice": 80.40}},
    "table3": {"combined": {"train_dice": 95.52, "val_dice": 83.52}},
    "table4": {"combined": {"train_dice": 92.79, "val_dice": 67.88}},
}

# Other published results on the Duke DME set (Chiu et al. 2015) with how their protocol
# differs from ours. Only numbers read in the cited source are given.
PUBLISHED_DUKE = [
    {"method": "KR + GTDP (Chiu et al. 2015)",
     "citation": "S. J. Chiu et al., Biomed. Opt. Express 6(4):1172-1194 (2015), "
                 "doi:10.1364/BOE.6.001172",
     "dice": 78.0, "reference": "inter-observer Dice 79.0",
     "protocol": "110 B-scans of 10 patients (ours: 88 of subjects 1-8); no training split "
                 "(kernel regression + graph search); Dice averaged over the 7 retinal layers "
                 "AND fluid together, not fluid alone: not comparable to a fluid-only Dice"},
    {"method": "ReLayNet (Roy et al. 2017)",
     "citation": "A. G. Roy et al., Biomed. Opt. Express 8(8):3627-3642 (2017), "
                 "doi:10.1364/BOE.8.003627",
     "dice": float("nan"), "reference": "fluid Dice: not available (full text not retrieved)",
     "protocol": "same Duke DME set (10 patients), 7 layers + fluid trained jointly "
                 "(multi-class), one fixed train/test split of the patients, not "
                 "cross-validation"},
]

# What every notebook says about its protocol before the results (Markdown); the numbers of
# a run are in setting_differences(config), shown after the results.
PROTOCOL_NOTES = """### What differs from the paper's protocol

Read every comparison with these differences in mind; the table after the results lists each
setting of the runs shown beside the paper's.

* **Data.** The public Duke DME set (Chiu et al. 2015): 88 B-scans of 8 DME patients (11 per
  patient, grader 1's fluid masks; 26 of the 88 masks are empty). The paper used its own OCT
  fluid data: other images, annotators and fluid burden, so **absolute numbers are not
  comparable**; rankings and trends are what can be compared.
* **Scale.** The paper: 512 x 512 inputs, keras-unet-collection's widths (64-1024 filters;
  TransUNet per its Table 2), 2 GPUs. Ours (FULL): inputs resized to 128 x 192 (probabilities
  resized back and scored at the original 496 x 768, so the smallest cysts are partly lost),
  4 levels of 8-64 filters (100-1000x fewer weights), 20 epochs of 17 steps on a 2-core CPU.
  Read our numbers as a small-budget comparison, not as what the architectures can reach.
* **Cross-validation.** 5 folds split by patient, as in the paper; with 8 patients a
  validation fold holds 1-2 patients (11-22 B-scans), so fold-to-fold spread is large.
* **Model selection.** Each fold keeps the epoch with the best validation Dice (the paper does
  not say how it selected); this flatters the validation column somewhat.
* **Batch norm and whole-batch losses.** Batch norm with momentum 0.9 and Dice / Tversky /
  focal Tversky computed over the whole batch (`per_image=False`, keras-unet-collection's form)
  were chosen after four discarded FULL attempts, each of which left the networks at the
  trivial floor (all-zero or all-fluid output): (1) no batch norm, 96 x 160, batch 2, 12
  epochs, 2-fold CV; (2) batch norm with Keras' default momentum 0.99, whose moving statistics
  had not caught up after ~200 steps, so in inference mode every net marked the whole scan as
  fluid; (3) learning rate 2e-3 (collapse to all-zero); (4) the overlap losses averaged per
  B-scan (`per_image=True`): an all-zero output scores the 26 empty scans perfectly while a
  fluid scan's loss stays near 1 whatever is predicted, and the nets settled there.
* **Metric.** Dice / Jaccard per B-scan at original size, averaged over a fold's scans, then
  mean ± sample std over folds ("ours"); a scan with empty truth and empty prediction is
  skipped, an empty-truth scan with any predicted fluid scores 0. "pooled" sums TP / FP / FN
  over a fold's scans (the form of a Keras Dice metric), which weighs large fluid regions more.
"""

# ----------------------------------------------------------------------------- settings
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
    "QUICK": dict(image_size=(32, 48), epochs=1, n_folds=2, batch_size=4, learning_rate=2e-3,
                  patience=6, noise_std=0.1, seed=0),
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


def experiment_configs(pairs, model_kwargs: dict, image_size=(96, 160), epochs=15,
                       n_folds=5, batch_size=4, learning_rate=1e-3, patience=6,
                       noise_std=0.1, seed=0, bn_momentum=None, loss_kwargs=None) -> dict:
    """{(model, loss): TrainConfig} for each (model, loss) pair, sharing every other setting.

    model_kwargs: {model: builder kwargs} (see network_kwargs); loss_kwargs defaults to
    LOSS_KWARGS. noise_std is the std of the seeded additive Gaussian noise of the noisy
    test condition (images in [0, 1]); bn_momentum: see TrainConfig.
    """
    from oct_seg.training import TrainConfig

    loss_kwargs = LOSS_KWARGS if loss_kwargs is None else loss_kwargs
    out = {}
    for model, loss in pairs:
        if model not in model_kwargs:
            raise ValueError(f"no model kwargs for {model!r}; have {sorted(model_kwargs)}")
        out[(model, loss)] = TrainConfig(
            model=model, model_kwargs=dict(model_kwargs[model]), loss=loss,
            loss_kwargs=dict(loss_kwargs.get(loss, {})), image_size=tuple(image_size),
            epochs=int(epochs), batch_size=int(batch_size), learning_rate=float(learning_rate),
            seed=int(seed), n_folds=int(n_folds), patience=int(patience),
            noise_std=float(noise_std), bn_momentum=bn_momentum)
    return out


def _finished_folds(run_dir: Path) -> set:
    return {int(p.parent.name.split("_")[1]) for p in Path(run_dir).glob("fold_*/fold.json")}


def run_experiments(data_dir, out_dir, configs: dict, folds=None, verbose=2) -> dict:
    """Train / resume every config into run_dir_for(out_dir, model, loss); returns run dirs.

    Fold-major order (fold 0 of every experiment, then fold 1, ...), so a run cut short
    leaves every experiment with the same folds. Finished folds are skipped by the library,
    so calling this on finished run dirs only reads them.
    """
    from oct_seg.training import summarize_run, train

    dirs = {key: run_dir_for(out_dir, *key) for key in configs}
    n_folds = {cfg.n_folds for cfg in configs.values()}
    if len(n_folds) != 1:
        raise ValueError(f"all configs must share n_folds; got {sorted(n_folds)}")
    folds = range(n_folds.pop()) if folds is None else folds
    for k in folds:
        for key, cfg in configs.items():
            if k in _finished_folds(dirs[key]):
                continue
            train(data_dir, dirs[key], cfg.__class__.from_dict({**cfg.to_dict(), "folds": [k]}),
                  verbose=verbose)
    for key, d in dirs.items():
        if d.is_dir() and not (d / "summary.csv").is_file():
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
    keep.to_csv(out_dir / "index.csv", index=False)
    return out_dir


# ----------------------------------------------------------------------------- tables
def run_summary(run_dir) -> pd.DataFrame:
    """RUN/summary.csv (set, condition, metric, mean, std, n_folds, fold_K ...)."""
    path = Path(run_dir) / "summary.csv"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no summary.csv: the run has not finished any fold")
    return pd.read_csv(path)


def pooled_scores(scores: pd.DataFrame) -> dict:
    """Dice and Jaccard of TP, FP, FN summed over all scans of a per-image score table.

    Uses truth_pixels T, pred_pixels P and each scan's Dice d: TP = d (T + P) / 2 (0 when
    both are empty). Returns {"dice": 2 TP / (T + P), "jaccard": TP / (T + P - TP)} (NaN when
    nothing is predicted and nothing is true).
    """
    t = scores["truth_pixels"].to_numpy(float)
    p = scores["pred_pixels"].to_numpy(float)
    d = np.nan_to_num(scores["dice"].to_numpy(float), nan=0.0)
    tp = float(np.sum(d * (t + p) / 2.0))
    total = float(np.sum(t + p))
    if total == 0:
        return {"dice": float("nan"), "jaccard": float("nan")}
    return {"dice": 2.0 * tp / total, "jaccard": tp / (total - tp)}


def _fold_dirs(run_dir: Path) -> list:
    return sorted((p for p in Path(run_dir).glob("fold_*") if (p / "fold.json").is_file()),
                  key=lambda p: int(p.name.split("_")[1]))


def _pooled_over_folds(run_dir, part: str, condition: str) -> dict:
    vals = {"dice": [], "jaccard": []}
    for fd in _fold_dirs(run_dir):
        path = fd / f"{part}_scores_{condition}.csv"
        if path.is_file():
            s = pooled_scores(pd.read_csv(path))
            for m in vals:
                vals[m].append(s[m])
    out = {}
    for m, v in vals.items():
        arr = np.array(v, dtype=float)
        finite = arr[np.isfinite(arr)]
        out[f"{m}_mean"] = float(finite.mean()) if finite.size else float("nan")
        out[f"{m}_std"] = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return out


def results_table(run_dirs: dict, condition: str = "clean",
                  labels: dict | None = None) -> pd.DataFrame:
    """Our numbers (percent) per run: one row per key of run_dirs, in its order.

    Columns: row, label, n_folds, then for set in (train, val) and metric in (dice, jaccard):
    {set}_{metric} and {set}_{metric}_std (per-image form, see module docstring) and
    {set}_{metric}_pooled, {set}_{metric}_pooled_std. Runs without a summary give NaN rows.
    """
    if condition not in ("clean", "noisy"):
        raise ValueError(f"condition must be 'clean' or 'noisy', got {condition!r}")
    rows = []
    for key, run_dir in run_dirs.items():
        row = {"row": key, "label": (labels or {}).get(key, key)}
        try:
            summ = run_summary(run_dir)
        except ValueError:
            summ = pd.DataFrame(columns=["set", "condition", "metric", "mean", "std", "n_folds"])
        row["n_folds"] = len(_fold_dirs(run_dir)) if Path(run_dir).is_dir() else 0
        for part in ("train", "val"):
            pooled = _pooled_over_folds(run_dir, part, condition) if row["n_folds"] else {}
            for metric in ("dice", "jaccard"):
                sel = summ[(summ["set"] == part) & (summ["condition"] == condition)
                           & (summ["metric"] == metric)]
                mean = float(sel["mean"].iloc[0]) if len(sel) else float("nan")
                std = float(sel["std"].iloc[0]) if len(sel) else float("nan")
                row[f"{part}_{metric}"] = 100.0 * mean
                row[f"{part}_{metric}_std"] = 100.0 * std
                nan = float("nan")
                row[f"{part}_{metric}_pooled"] = 100.0 * pooled.get(f"{metric}_mean", nan)
                row[f"{part}_{metric}_pooled_std"] = 100.0 * pooled.get(f"{metric}_std", nan)
        rows.append(row)
    return pd.DataFrame(rows)


def run_facts(run_dirs: dict, labels: dict | None = None) -> pd.DataFrame:
    """Per run: finished folds, epochs run per fold, best epochs, and the wall time of the
    folds (sum of each fold's fit + evaluation seconds, from fold.json), in minutes."""
    rows = []
    for key, run_dir in run_dirs.items():
        facts = [json.loads((fd / "fold.json").read_text()) for fd in _fold_dirs(run_dir)]
        rows.append({"run": (labels or {}).get(key, key), "folds": len(facts),
                     "epochs run": ", ".join(str(f.get("epochs_run", "?")) for f in facts),
                     "best epoch (0-based)": ", ".join(str(f.get("best_epoch", "?"))
                                                       for f in facts),
                     "wall minutes": round(sum(float(f.get("seconds_last_session", 0.0))
                                               for f in facts) / 60.0, 1)})
    return pd.DataFrame(rows).set_index("run")


def trivial_baseline(data_dir) -> pd.DataFrame:
    """Dice / Jaccard (percent) of marking every pixel of every B-scan as fluid, from
    index.csv's fluid fractions: the floor a network must beat. Per-image form (mean over scans;
    an empty-truth scan scores 0) and pooled form (2 sum T / (sum T + sum N))."""
    index = pd.read_csv(Path(data_dir) / "index.csv")
    f = index["fluid_fraction"].to_numpy(float)
    n = (index["height"] * index["width"]).to_numpy(float)
    dice = 2 * f / (1 + f)
    pooled = 2 * np.sum(f * n) / (np.sum(f * n) + np.sum(n))
    return pd.DataFrame({"Dice": [100 * dice.mean(), 100 * pooled],
                         "Jaccard": [100 * f.mean(), 100 * pooled / (2 - pooled)]},
                        index=["all fluid, per-image mean", "all fluid, pooled"]).round(2)


def _fmt(mean, std=float("nan")) -> str:
    if mean is None or not np.isfinite(mean):
        return "not available"
    return f"{mean:.2f}" if not np.isfinite(std) else f"{mean:.2f} ± {std:.2f}"


def compare_with_paper(ours: pd.DataFrame, table: str) -> pd.DataFrame:
    """Ours (per-image mean ± std over folds, and pooled) beside the paper, as display strings.

    ours: results_table output; table: "table1", "table3" or "table4" (keys of PAPER).
    Cells the paper's text did not give us read "not available".
    """
    if table not in PAPER:
        raise ValueError(f"table must be one of {sorted(PAPER)}, got {table!r}")
    paper = PAPER[table]
    out = []
    for _, r in ours.iterrows():
        p = paper.get(r["row"], {})
        rec = {"": r["label"], "folds": int(r["n_folds"])}
        for part, name in (("train", "train"), ("val", "validation")):
            for metric, mname in (("dice", "Dice"), ("jaccard", "Jaccard")):
                rec[f"{mname} {name} (ours)"] = _fmt(r[f"{part}_{metric}"],
                                                     r[f"{part}_{metric}_std"])
                rec[f"{mname} {name} (ours, pooled)"] = _fmt(r[f"{part}_{metric}_pooled"],
                                                              r[f"{part}_{metric}_pooled_std"])
                rec[f"{mname} {name} (paper)"] = _fmt(p.get(f"{part}_{metric}", float("nan")))
        out.append(rec)
    return pd.DataFrame(out).set_index("")


def setting_differences(config, data_dir=None, hardware="2-core CPU (shared), TensorFlow CPU",
                        wall_minutes=None, train_on_noisy=False) -> pd.DataFrame:
    """What differs between our runs and the paper's protocol, as a two-column table.

    config: a TrainConfig (or its dict) of our runs.
    """
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    h, w = cfg["image_size"]
    n_subjects, data = None, "Duke DME (Chiu et al. 2015), grader 1 fluid masks"
    if data_dir is not None and (Path(data_dir) / "index.csv").is_file():
        index = pd.read_csv(Path(data_dir) / "index.csv")
        n_subjects = int(index["subject"].nunique())
        data += (f": {len(index)} B-scans of {n_subjects} DME patients, "
                 f"{int((index['fluid_fraction'] == 0).sum())} masks empty")
    rows = [
        ("data", "the paper's own OCT fluid set (size and source per the paper)", data),
        ("resolution", "B-scans resized to 512 x 512",
         f"B-scans resized to {h} x {w} for training; scored at the original 496 x 768"),
        ("cross-validation", "5-fold CV",
         f"{cfg['n_folds']}-fold CV split by patient" + ("" if n_subjects is None else
         f" ({n_subjects} patients: {n_subjects // cfg['n_folds']}-"
         f"{-(-n_subjects // cfg['n_folds'])} per validation fold)")),
        ("epochs", "not stated in the text we had",
         (f"{cfg['epochs']}, no early stopping" if cfg["patience"] >= cfg["epochs"] else
          f"at most {cfg['epochs']} (early stopping on val Dice, patience {cfg['patience']})")
         + "; the best-validation-Dice epoch is the fold's model"),
        ("widths", "keras-unet-collection widths, e.g. TransUNet filter_num "
         "[64, 128, 256, 512, 1024], embed 96, MLP 384 (paper Table 2)",
         f"narrow CPU widths: {cfg['model']} kwargs {cfg['model_kwargs']} (this run)"),
        ("normalisation", "not stated in the text we had",
         "batch norm" + (f", momentum {cfg['bn_momentum']}" if cfg.get("bn_momentum") else "")
         if cfg["model_kwargs"].get("batch_norm") else "no batch norm"),
        ("optimiser", "not stated in the text we had",
         f"Adam, lr {cfg['learning_rate']} with 1 warm-up epoch + cosine decay, batch "
         f"{cfg['batch_size']}, augmentation {'on' if cfg['augment'] else 'off'}"),
        ("noisy condition", "additive Gaussian noise (level per the paper)",
         f"seeded additive Gaussian noise, std {cfg['noise_std']} on [0, 1] images, added at "
         "the original size; " + ("models trained on noisy scans" if train_on_noisy else
                                   "models trained on clean scans, scored on noisy ones")),
        ("metric", "Dice, Jaccard (train and validation)",
         "per-image mean at original size (empty truth + empty prediction skipped), mean ± "
         "sample std over folds; also pooled (TP/FP/FN summed per fold)"),
        ("hardware", "2 GPUs", hardware + ("" if wall_minutes is None
                                           else f"; wall time {wall_minutes:.0f} min")),
    ]
    return pd.DataFrame(rows, columns=["aspect", "paper", "ours"]).set_index("aspect")


# ----------------------------------------------------------------------------- figures
def mean_history(run_dir) -> pd.DataFrame:
    """history.csv averaged over the finished folds, epoch by epoch (folds that stopped early
    drop out of later epochs; column n_folds counts those averaged)."""
    frames = [pd.read_csv(fd / "history.csv") for fd in _fold_dirs(run_dir)
              if (fd / "history.csv").is_file()]
    if not frames:
        raise ValueError(f"{run_dir}: no finished fold with a history.csv")
    long = pd.concat(frames, ignore_index=True)
    out = long.groupby("epoch").mean(numeric_only=True)
    out["n_folds"] = long.groupby("epoch").size()
    return out.reset_index()


def curves_figure(run_dirs: dict, labels: dict | None = None, out_png=None):
    """Dice, Jaccard and loss per epoch (mean over folds) for each run: train solid,
    validation dashed (paper Figures 2 and 4-6 style). Returns the matplotlib Figure."""
    from oct_seg.plots import plot_curves

    hist = {(labels or {}).get(k, k): mean_history(d) for k, d in run_dirs.items()
            if _fold_dirs(d)}
    if not hist:
        raise ValueError("none of the run directories has a finished fold")
    return plot_curves(hist, out_png)


def pick_example_scan(data_dir) -> str:
    """The B-scan with the largest fluid fraction (ties: first by name): the visual example."""
    index = pd.read_csv(Path(data_dir) / "index.csv")
    index = index.sort_values(["fluid_fraction", "name"], ascending=[False, True])
    return str(index["name"].iloc[0])


def _val_fold(run_dir: Path, name: str) -> int:
    splits = json.loads((Path(run_dir) / "splits.json").read_text())
    for k, s in enumerate(splits):
        if name in s["val"]:
            return k
    raise ValueError(f"scan {name!r} is in no validation fold of {run_dir}")


def segmentation_grid(run_dirs: dict, data_dir, scan: str | None = None, noisy: bool = False,
                      labels: dict | None = None, ncols: int = 3, out_png=None):
    """One B-scan segmented by each run's model of the fold that held it out (paper
    Figures 3 and 7 style). First panel: the scan with the truth (green); then each run's
    prediction (red) with its Dice. noisy: the scan gets the pipeline's seeded noise, as in
    the noisy evaluation. Returns (Figure, DataFrame of label, fold, dice, jaccard)."""
    import keras

    from oct_seg.data.pipeline import add_gaussian_noise
    from oct_seg.data.readers import read_dataset
    from oct_seg.evaluate import noise_seed, predict_probabilities
    from oct_seg.metrics import case_scores
    from oct_seg.plots import plot_grid
    from oct_seg.training import TrainConfig

    scans = read_dataset(data_dir)
    scan = pick_example_scan(data_dir) if scan is None else scan
    if scan not in scans.names:
        raise ValueError(f"scan {scan!r} not in {data_dir}")
    i = scans.names.index(scan)
    clean, truth = scans.images[i], scans.masks[i] > 0
    images, truths, preds, titles, rows = [], [], [], [], []
    shown = None
    for key, run_dir in run_dirs.items():
        run_dir = Path(run_dir)
        cfg = TrainConfig.from_json(run_dir / "config.json")
        image = clean
        if noisy:
            image = np.asarray(add_gaussian_noise(clean, cfg.noise_std,
                                                  seed=noise_seed(cfg.seed, scan)), np.float32)
        if shown is None:
            shown = image
        k = _val_fold(run_dir, scan)
        path = run_dir / f"fold_{k}" / "model.keras"
        if not path.is_file():
            continue
        model = keras.saving.load_model(str(path), compile=False)
        prob = predict_probabilities(model, [image], image_size=cfg.image_size)[0]
        keras.backend.clear_session()
        s = case_scores(truth, prob)
        label = (labels or {}).get(key, key)
        images.append(image)
        truths.append(truth)
        preds.append(prob)
        titles.append(f"{label}: Dice {100 * s['dice']:.1f}")
        rows.append({"label": label, "fold": k, "dice": 100 * s["dice"],
                     "jaccard": 100 * s["jaccard"]})
    if shown is None:
        raise ValueError("no run directory given")
    images = [shown] + images
    truths = [truth] + truths
    preds = [None] + preds
    titles = [f"{scan}{' + noise' if noisy else ''}: truth (green)"] + titles
    fig = plot_grid(images, truths, [None if p is None else p for p in preds], titles,
                    ncols=ncols, out_png=out_png)
    return fig, pd.DataFrame(rows)


def write_csv(df: pd.DataFrame, path, index=True) -> Path:
    """Write a table CSV (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=index, float_format="%.4f")
    return path
