"""Tables of our runs beside the paper: per-run results (per-image and pooled), run facts and
convergence, the per-scan scores and their three Dice forms, the trivial baseline, the
comparison with the published numbers and the protocol differences.

Every function reads run folders (RunDir layout); the committed results/folds folders have
that layout without models, so all of this works from committed files alone.

Scores (fractions in [0, 1] in files; percent in the tables returned here):
* ``per-image`` -- mean over a fold's scans of each scan's Dice / Jaccard at its original
  size (scans whose truth and prediction are both empty are skipped), then mean +- sample std
  over folds (``RUN/summary.csv``).
* ``pooled`` -- TP, FP, FN summed over all scans of a fold, one Dice / Jaccard per fold, then
  mean +- std over folds: the form a Keras Dice metric reports, closest to how training-log
  numbers such as the paper's are usually produced.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from oct_seg.io import write_csv as atomic_csv
from oct_seg.metrics import pooled_from_table
from oct_seg.reporting.paper import paper_row
from oct_seg.rundir import RunDir
from oct_seg.training.recipe import network_kwargs as recipe_network_kwargs


def run_summary(run_dir) -> pd.DataFrame:
    """RUN/summary.csv (set, condition, metric, mean, std, n_folds, fold_K ...)."""
    path = RunDir(run_dir).summary
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


def _pooled_over_folds(run_dir, part: str, condition: str) -> dict:
    vals = {"dice": [], "jaccard": []}
    for fold in RunDir(run_dir).finished_folds():
        path = fold.scores(part, condition)
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
        row["n_folds"] = len(RunDir(run_dir).finished_folds())
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
        facts = [fold.read_done() for fold in RunDir(run_dir).finished_folds()]
        rows.append({"run": (labels or {}).get(key, key), "folds": len(facts),
                     "epochs run": ", ".join(str(f.get("epochs_run", "?")) for f in facts),
                     "best epoch (0-based)": ", ".join(str(f.get("best_epoch", "?"))
                                                       for f in facts),
                     "wall minutes": round(sum(float(f.get("seconds_last_session", 0.0))
                                               for f in facts) / 60.0, 1)})
    return pd.DataFrame(rows).set_index("run")


def plateau_gain(val_dice, window: int | None = None) -> float:
    """How much the validation Dice rose in the last ``window`` epochs: max over them minus
    max over the epochs before (NaN with fewer than window + 1 epochs).

    window None: max(5, epochs // 6), 10 of the recipe's 60 epochs. A gain below
    PLATEAU_GAIN counts as plateaued: on the accuracy benchmark's fold 0 (U-Net, 60 epochs)
    the gain was 0.005 while the epoch-to-epoch wobble of the last 10 epochs was ~0.005.
    """
    v = np.asarray(val_dice, dtype=float)
    window = max(5, len(v) // 6) if window is None else int(window)
    if len(v) <= window:
        return float("nan")
    return float(np.nanmax(v[-window:]) - np.nanmax(v[:-window]))


PLATEAU_GAIN = 0.01  # Dice (fraction): below it the last window added nothing that shows


def convergence_table(run_dirs: dict, labels: dict | None = None) -> pd.DataFrame:
    """Per run and finished fold: epochs run, the best epoch by validation Dice (0-based,
    from trained.json) with its Dice, the last epoch's Dice, the gain of the last window
    (plateau_gain) and whether it plateaued (gain < PLATEAU_GAIN)."""
    rows = []
    for key, run_dir in run_dirs.items():
        for fold in RunDir(run_dir).finished_folds():
            trained = fold.read_trained() if fold.trained.is_file() else {}
            hist = fold.read_history()
            gain = (plateau_gain(hist["val_dice"]) if hist is not None and "val_dice" in hist
                    else float("nan"))
            rows.append({"run": (labels or {}).get(key, key), "fold": fold.name,
                         "epochs run": trained.get("epochs_run"),
                         "best epoch": trained.get("best_epoch"),
                         "best val Dice": trained.get("best_val_dice", float("nan")),
                         "last val Dice": trained.get("last_val_dice", float("nan")),
                         "gain, last window": gain,
                         "plateaued": bool(gain < PLATEAU_GAIN) if np.isfinite(gain) else None})
    columns = ["run", "fold", "epochs run", "best epoch", "best val Dice", "last val Dice",
               "gain, last window", "plateaued"]
    return pd.DataFrame(rows, columns=columns)


def fold_progress(run_dirs: dict, labels: dict | None = None) -> pd.DataFrame:
    """One row per run and finished fold, for following the experiments while their folds
    are committed one at a time: held-out subjects, epochs run, the best epoch (1-based, by
    validation Dice), validation Dice (percent) of the kept model pooled over the fold's
    scans and per-image over its fluid-positive scans, clean and noisy, the fluid-free scans
    given any fluid, and the fold's wall minutes (fold.json). A single fold is a progress
    report, not a result: the tables need every fold."""
    rows = []
    for key, run_dir in run_dirs.items():
        for fold in RunDir(run_dir).finished_folds():
            done = fold.read_done()
            trained = fold.read_trained() if fold.trained.is_file() else {}
            best = trained.get("best_epoch", done.get("best_epoch"))
            row = {"run": (labels or {}).get(key, key), "fold": fold.name,
                   "epochs run": trained.get("epochs_run", done.get("epochs_run")),
                   "best epoch": None if best is None else int(best) + 1}
            tables = {}
            for condition in ("clean", "noisy"):
                path = fold.scores("val", condition)
                if not path.is_file():
                    raise ValueError(f"{path} is missing: the fold finished without its "
                                     f"val / {condition} scores")
                tables[condition] = pd.read_csv(path)
            row["held out"] = ", ".join(str(v) for v in
                                        sorted(tables["clean"]["subject"].unique()))
            for condition, scans in tables.items():
                s = scan_summary([scans])
                row[f"pooled {condition}"] = 100 * s["pooled_dice"]
                row[f"per-image fluid {condition}"] = 100 * s["image_dice_fluid_mean"]
                row[f"fluid-free with FP {condition}"] = (
                    f"{s['fluid_free_scans_with_fp']}/{s['n_fluid_free']}")
            row["wall min"] = float(done.get("seconds_last_session", float("nan"))) / 60.0
            rows.append(row)
    columns = ["run", "fold", "held out", "epochs run", "best epoch", "pooled clean",
               "pooled noisy", "per-image fluid clean", "per-image fluid noisy",
               "fluid-free with FP clean", "fluid-free with FP noisy", "wall min"]
    return pd.DataFrame(rows, columns=columns)


def markdown_table(df: pd.DataFrame, digits: int = 1) -> str:
    """df as a GitHub Markdown table (floats rounded to ``digits``; index not shown), for
    pasting a table printed by a command into a README."""
    def cell(v):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in rec) + " |"
              for rec in df.itertuples(index=False)]
    return "\n".join(lines)


def scan_scores(run_dirs: dict, condition: str = "clean", part: str = "val") -> pd.DataFrame:
    """Every scan's scores under each run, long form: one row per (run, scan) with columns
    run (the key of run_dirs), fold, and the score table's (name, subject, dice, ...,
    truth_pixels, pred_pixels). part "val": each scan scored once, by the fold model that
    did not train on its patient."""
    frames = []
    for key, run_dir in run_dirs.items():
        for fold in RunDir(run_dir).finished_folds():
            path = fold.scores(part, condition)
            if not path.is_file():
                raise ValueError(f"{path} is missing: the fold finished without its "
                                 f"{part} / {condition} scores")
            table = pd.read_csv(path)
            table.insert(0, "fold", fold.name)
            table.insert(0, "run", [key] * len(table))
            frames.append(table)
    if not frames:
        return pd.DataFrame(columns=["run", "fold", "name", "dice", "truth_pixels",
                                     "pred_pixels"])
    return pd.concat(frames, ignore_index=True)


def scan_summary(per_fold: list) -> dict:
    """Three forms of Dice (fractions) over the score tables of a run's folds (one per fold).

    pooled_dice: TP, FP, FN summed over every scan of every fold; fold_pooled_mean / _sd:
    one pooled Dice per fold, then mean and sample sd; image_dice_mean: mean of the per-scan
    Dice (scans with empty truth and prediction skipped, an empty-truth scan with any fluid
    predicted scores 0); image_dice_fluid_mean / _sd: the same over fluid-positive scans only
    (truth_pixels > 0); fp_pixels_fluid_free and fluid_free_scans_with_fp: predicted area on
    the n_fluid_free scans without fluid.
    """
    scans = pd.concat(per_fold, ignore_index=True)
    fluid = scans[scans["truth_pixels"] > 0]
    empty = scans[scans["truth_pixels"] == 0]
    per_fold_pooled = [pooled_from_table(t)["dice"] for t in per_fold]
    return {"scans": len(scans), "pooled_dice": pooled_from_table(scans)["dice"],
            "fold_pooled_mean": float(np.mean(per_fold_pooled)),
            "fold_pooled_sd": float(np.std(per_fold_pooled, ddof=1)) if len(per_fold) > 1
            else float("nan"),
            "image_dice_mean": float(scans["dice"].mean()),
            "image_dice_fluid_mean": float(fluid["dice"].mean()),
            "image_dice_fluid_sd": float(fluid["dice"].std(ddof=1)),
            "fp_pixels_fluid_free": float(empty["pred_pixels"].mean()),
            "fluid_free_scans_with_fp": int((empty["pred_pixels"] > 0).sum()),
            "n_fluid_free": len(empty), "per_fold_pooled": per_fold_pooled}


def dice_forms(run_dirs: dict, table: str, condition: str = "clean",
               labels: dict | None = None) -> pd.DataFrame:
    """Validation Dice (percent) of each run in three forms side by side, over every
    cross-validated scan (scan_summary), beside the paper's validation Dice (paper_row).

    Columns: scans, pooled, pooled per fold (mean ± sd), per-image (all scans), per-image
    (fluid scans), paper, paper source. Runs with no finished fold read "not available".
    """
    scans = scan_scores(run_dirs, condition)
    rows = []
    for key in run_dirs:
        mine = scans[scans["run"] == key]
        cells, source = paper_row(table, key)
        paper = cells.get("val_dice")
        rec = {"": (labels or {}).get(key, key), "scans": len(mine),
               "paper": "not in the paper" if paper is None
               else np.format_float_positional(paper, min_digits=2),
               "paper source": source}
        if len(mine):
            s = scan_summary([f for _, f in mine.groupby("fold", sort=True)])
            rec.update({"pooled": _fmt(100 * s["pooled_dice"]),
                        "pooled per fold": _fmt(100 * s["fold_pooled_mean"],
                                                100 * s["fold_pooled_sd"]),
                        "per-image": _fmt(100 * s["image_dice_mean"]),
                        "per-image, fluid scans": _fmt(100 * s["image_dice_fluid_mean"],
                                                       100 * s["image_dice_fluid_sd"])})
        rows.append(rec)
    columns = ["", "scans", "pooled", "pooled per fold", "per-image", "per-image, fluid scans",
               "paper", "paper source"]
    return pd.DataFrame(rows, columns=columns).fillna("not available").set_index("")


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
    "paper source" names the printed row each paper cell comes from (paper.paper_row); paper
    cells show the number as printed, or "not in the paper"; our cells read "not available"
    where a run has no result.
    """
    out = []
    for _, r in ours.iterrows():
        cells, source = paper_row(table, r["row"])
        rec = {"": r["label"], "folds": int(r["n_folds"]), "paper source": source}
        for part, name in (("train", "train"), ("val", "validation")):
            for metric, mname in (("dice", "Dice"), ("jaccard", "Jaccard")):
                rec[f"{mname} {name} (ours)"] = _fmt(r[f"{part}_{metric}"],
                                                     r[f"{part}_{metric}_std"])
                rec[f"{mname} {name} (ours, pooled)"] = _fmt(r[f"{part}_{metric}_pooled"],
                                                              r[f"{part}_{metric}_pooled_std"])
                key = f"{part}_{metric}"
                rec[f"{mname} {name} (paper)"] = (
                    np.format_float_positional(cells[key], min_digits=2) if key in cells
                    else "not in the paper")
        out.append(rec)
    return pd.DataFrame(out).set_index("")


def _as_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _exceptions(cfg: dict, others, field: str) -> str:
    """" (swin_unet: 120)": the runs among ``others`` whose ``field`` differs from cfg's."""
    differ = {}
    for other in map(_as_dict, (others or {}).values()):
        if other[field] != cfg[field]:
            differ.setdefault(other["model"], other[field])
    return f" ({'; '.join(f'{m}: {v}' for m, v in differ.items())})" if differ else ""


def setting_differences(config, data_dir=None, hardware="2-core CPU (shared), TensorFlow CPU",
                        wall_minutes=None, others=None) -> pd.DataFrame:
    """What differs between our runs and the paper's protocol, as a two-column table.

    config: a TrainConfig (or its dict) of our runs. others: {key: TrainConfig} of the other
    runs of the same table; the epochs and learning-rate rows name those whose values differ
    from config's (the recipe gives Swin-UNet its own).
    """
    cfg = _as_dict(config)
    epochs = f"{cfg['epochs']}{_exceptions(cfg, others, 'epochs')}"
    widths = recipe_network_kwargs(cfg["model"], cfg["model_kwargs"])
    if cfg["image_size"] is None:
        ph, pw = cfg["patch_size"]
        resolution = (f"native pixel spacing: {ph} x {pw} patches for training, whole B-scans "
                      "predicted and scored at their original 496 x 768")
    else:
        h, w = cfg["image_size"]
        resolution = f"B-scans resized to {h} x {w} for training; scored at the original 496 x 768"
    momentum = {"auto": "momentum 1 - 1 / steps per epoch in [0.9, 0.99]",
                None: "Keras' momentum 0.99"}.get(cfg["bn_momentum"],
                                                  f"momentum {cfg['bn_momentum']}")
    n_subjects, data = None, "Duke DME (Chiu et al. 2015), grader 1 fluid masks"
    if data_dir is not None and (Path(data_dir) / "index.csv").is_file():
        index = pd.read_csv(Path(data_dir) / "index.csv")
        n_subjects = int(index["subject"].nunique())
        data += (f": {len(index)} B-scans of {n_subjects} DME patients, "
                 f"{int((index['fluid_fraction'] == 0).sum())} masks empty")
    rows = [
        ("data", "the authors' set: 194 Cirrus B-scans with fluid + 185 normal, augmented "
         "(rotation, shift, crop) to ~2000 sub-images", data),
        ("resolution", "B-scans resized to 512 x 512", resolution),
        ("cross-validation", "80 / 20 split, 5-fold CV (split by patient: not stated)",
         f"{cfg['n_folds']}-fold CV split by patient" + ("" if n_subjects is None else
         f" ({n_subjects} patients: {n_subjects // cfg['n_folds']}-"
         f"{-(-n_subjects // cfg['n_folds'])} per validation fold)")),
        ("epochs", "100 for Table 1; not stated for Tables 3-4",
         f"{epochs}, the last epoch is the fold's model (the best epoch is reported "
         "to show the plateau, not chosen)" if cfg["checkpoint"] == "last" else
         (f"{epochs}, no early stopping" if cfg["patience"] >= cfg["epochs"] else
          f"at most {epochs} (early stopping on val Dice, patience {cfg['patience']})")
         + "; the best-validation-Dice epoch is the fold's model"),
        ("widths", "keras-unet-collection widths (assumed), e.g. TransUNet filter_num "
         "[64, 128, 256, 512, 1024], embed 96, MLP 384 (paper Table 2)",
         f"narrow CPU widths: {cfg['model']} kwargs {widths} (this run)"),
        ("normalisation", "not stated in the paper",
         f"batch norm, {momentum}" if widths.get("batch_norm") else "no batch norm"),
        ("optimiser", "not stated in the paper (nor learning rate, batch size)",
         f"Adam, lr {cfg['learning_rate']}{_exceptions(cfg, others, 'learning_rate')} "
         "with 1 warm-up epoch + cosine decay, batch "
         f"{cfg['batch_size']}, augmentation {'on' if cfg['augment'] else 'off'}"),
        ("noisy condition", "Gaussian noise added in the pixel domain, std not stated",
         f"seeded additive Gaussian noise, std {cfg['noise_std']} on [0, 1] images, added at "
         "the original size; " + (
             f"models trained with Gaussian noise of std U(0, {cfg['augment_noise']}) added to "
             "each training patch, scored on clean and on noisy scans"
             if cfg.get("augment_noise", 0) > 0 else
             "models trained on clean scans, scored on noisy ones")),
        ("metric", "Dice, Jaccard (train and validation); averaging over B-scans not stated",
         "per-image mean at original size (empty truth + empty prediction skipped), mean ± "
         "sample std over folds; also pooled (TP/FP/FN summed per fold)"),
        ("hardware", "two GeForce GTX 1080 Ti GPUs, Python 3.9",
         hardware + ("" if cfg.get("precision", "float32") == "float32" else
                     f", {cfg['precision']} compute (float32 weights)")
         + ("" if wall_minutes is None else f"; wall time {wall_minutes:.0f} min")),
    ]
    return pd.DataFrame(rows, columns=["aspect", "paper", "ours"]).set_index("aspect")


def write_csv(df: pd.DataFrame, path, index=True) -> Path:
    """Write a table CSV (atomic, creating the folder; 4 decimals); returns the path."""
    return atomic_csv(path, df, index=index, float_format="%.4f")
