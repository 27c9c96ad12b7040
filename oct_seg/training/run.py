"""Training runs: k-fold cross-validation and the final (deployment) model, resumable.

``train(data_dir, run_dir, **fields)`` builds a :class:`TrainConfig` and dispatches on
``n_folds``: 1 -> :func:`train_final` (one deployment model trained on every subject for the
configured epochs, as nnU-Net's "all" fold; with checkpoint="best" a held-out share of
subjects, ``val_fraction``, chooses the epoch instead), k >= 2 -> :func:`cross_validate`
(folds by subject from ``oct_seg.data.splits.make_folds``). The run
folder's layout is oct_seg.rundir's.

Resume: the same call on an existing RUN_DIR skips folds with fold.json, re-evaluates folds
with trained.json, and continues an interrupted fit from the last backup (granularity: one
epoch -- Keras restores epochs, not batches, so batch-level backups would only replay part of
an epoch from mid-epoch weights; at most one epoch is lost). history.csv is truncated to the
restored epoch, the best-Dice and early-stopping state are rebuilt from it, so nothing is
written twice or lost. A different config raises ValueError; ``overwrite=True`` starts anew.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from oct_seg import distribute
from oct_seg.data.readers import read_dataset
from oct_seg.data.splits import make_folds
from oct_seg.io import write_csv
from oct_seg.metrics import SCORE_NAMES, summarize_scores
from oct_seg.plots import plot_curves
from oct_seg.rundir import RunDir
from oct_seg.training.config import TrainConfig, check_buildable, check_field_names, identity
from oct_seg.training.fold import run_fold, verbosity


def _make_splits(index: pd.DataFrame, config: TrainConfig) -> list[dict]:
    if config.n_folds > 1:
        folds = make_folds(index, n_folds=config.n_folds, seed=config.seed)
    elif config.checkpoint == "last":  # every subject trains the deployment model
        folds = [{"train": sorted(index["name"].astype(str)), "val": []}]
    else:
        n_subjects = index["subject"].nunique()
        if n_subjects < 2:
            raise ValueError("n_folds=1 holds out whole subjects for early stopping; the data "
                             f"has {n_subjects} subject(s), at least 2 are needed")
        n = max(2, min(n_subjects, round(1.0 / config.val_fraction)))
        folds = make_folds(index, n_folds=n, seed=config.seed)[:1]
    return json.loads(json.dumps([{"train": list(map(str, f["train"])),
                                   "val": list(map(str, f["val"]))} for f in folds]))


def _prepare_run_dir(run: RunDir, data_dir: Path, config: TrainConfig, splits, overwrite):
    """Create, check (resume) or clear RUN_DIR and write config.json, splits.json (chief)."""
    if not run.is_empty():
        if not run.config.is_file():
            raise ValueError(f"{run.path} is not empty and holds no config.json: not a run "
                             "directory; choose a new or empty --out folder")
        if not overwrite:
            _check_same_run(run, data_dir, config, splits)
            return
        shutil.rmtree(run.path)
    if not run.create(config.to_dict(), data_dir, splits):
        _check_same_run(run, data_dir, config, splits)  # a parallel call made it first


def _check_same_run(run: RunDir, data_dir: Path, config: TrainConfig, splits) -> None:
    """ValueError unless RUN_DIR holds a run of the same configuration, data and folds."""
    old = run.read_record()
    new_id = identity(config.to_dict())
    old_id = identity(TrainConfig.from_dict(old["config"]).to_dict())
    diff = {k: (old_id.get(k), new_id.get(k)) for k in new_id if old_id.get(k) != new_id.get(k)}
    if str(Path(old["data_dir"])) != str(data_dir):
        diff["data_dir"] = (old["data_dir"], str(data_dir))
    if diff:
        lines = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{run.path} holds a run with a different configuration ({lines}). "
                         "Rerun with the same settings to resume it, choose another run "
                         "directory, or pass overwrite=True (--overwrite) to start it anew.")
    if json.loads(json.dumps(run.read_splits())) != splits:
        raise ValueError(f"the scans in {data_dir} no longer give the folds stored in "
                         f"{run.splits} (data changed); use a new run directory or "
                         "overwrite=True")


def summarize_run(run_dir, curves: bool = True) -> pd.DataFrame:
    """Rebuild RUN_DIR/summary.csv and (curves) curves.png from the finished folds; return the
    summary. curves False: the table only (a committed results folder, where a figure
    rewritten after every fold would swell the history).

    Per fold and condition the score is the mean over its scans (summarize_scores); the table
    gives mean and sample std (ddof=1) of those over folds, plus each fold's value.
    """
    run = RunDir(run_dir)
    folds = run.finished_folds()
    records = []
    for fold in folds:
        for (part, condition), path in fold.score_files().items():
            summary = summarize_scores(pd.read_csv(path))
            for metric in summary.index:  # SCORE_NAMES, then any per-class scores
                records.append({"set": part, "condition": condition, "metric": metric,
                                "fold": fold.name, "value": float(summary.loc[metric, "mean"])})
    if not records:
        return pd.DataFrame()
    long = pd.DataFrame(records)
    wide = long.pivot_table(index=["set", "condition", "metric"], columns="fold",
                            values="value", aggfunc="first")
    wide = wide[[f.name for f in folds if f.name in wide.columns]]
    summary = pd.DataFrame({"mean": wide.mean(axis=1), "std": wide.std(axis=1, ddof=1),
                            "n_folds": wide.notna().sum(axis=1)}).join(wide)
    order = {"val": 0, "train": 1, "clean": 0, "noisy": 1,
             **{metric: i for i, metric in enumerate(SCORE_NAMES)}}
    summary = summary.reset_index().sort_values(
        ["set", "condition", "metric"], key=lambda s: s.map(order)).reset_index(drop=True)
    write_csv(run.summary, summary)
    if curves:
        histories = {fold.name: fold.read_history() for fold in folds if fold.history.is_file()}
        plot_curves(histories, run.curves)
    return summary


def _run(data_dir, run_dir, config: TrainConfig, overwrite, strategy, verbose) -> pd.DataFrame:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    data_dir, run = Path(data_dir).resolve(), RunDir(Path(run_dir).resolve())
    check_buildable(config)  # before reading data or writing anything
    strategy = strategy if strategy is not None else distribute.get_strategy()
    chief = distribute.is_chief()
    verbose = verbosity(verbose)
    scans = read_dataset(data_dir)
    splits = _make_splits(scans.index, config)
    if chief:  # other workers only read RUN_DIR (checking it too would race the chief)
        _prepare_run_dir(run, data_dir, config, splits, overwrite)
    scratch = None if chief else RunDir(tempfile.mkdtemp(prefix="oct_seg_worker_"))
    read_root = scratch if (overwrite and not chief) else run
    write_root = run if chief else scratch
    try:
        folds = config.folds if config.folds is not None else range(len(splits))
        for k in folds:
            run_fold(k, splits[k], scans, config, read_root.fold(k, config.n_folds),
                     write_root.fold(k, config.n_folds), strategy, verbose)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch.path, ignore_errors=True)
    return summarize_run(run.path) if chief else pd.DataFrame()


def cross_validate(data_dir, run_dir, config: TrainConfig, overwrite=False, strategy=None,
                   verbose=None) -> pd.DataFrame:
    """k-fold cross-validation (config.n_folds >= 2) into run_dir; returns the summary table
    (also RUN_DIR/summary.csv). Resumes an existing run dir with the same config."""
    if config.n_folds < 2:
        raise ValueError("cross_validate needs n_folds >= 2; use train_final for n_folds=1")
    return _run(data_dir, run_dir, config, overwrite, strategy, verbose)


def train_final(data_dir, run_dir, config: TrainConfig, overwrite=False, strategy=None,
                verbose=None) -> pd.DataFrame:
    """One deployment model on every scan of data_dir (RUN_DIR/final/model.keras), trained
    for config.epochs (checkpoint "last"); with checkpoint "best" a held-out ~val_fraction
    of the subjects chooses the epoch and is not trained on."""
    if config.n_folds != 1:
        config = dataclasses.replace(config, n_folds=1, folds=None)
    return _run(data_dir, run_dir, config, overwrite, strategy, verbose)


def train(data_dir, run_dir, config: TrainConfig | None = None, *, overwrite=False,
          strategy=None, verbose=None, **fields) -> pd.DataFrame:
    """Public entry point: ``train(data, out, model="unet", loss="combined", n_folds=5, ...)``.

    fields are TrainConfig fields (override ``config`` when both are given). n_folds=1 ->
    train_final, else cross_validate. verbose: Keras progress (None: bar on a terminal, one
    line per epoch otherwise).
    """
    config = config if config is not None else TrainConfig()
    if fields:
        check_field_names(fields, "training options")
        config = dataclasses.replace(config, **fields)
    fn = train_final if config.n_folds == 1 else cross_validate
    return fn(data_dir, run_dir, config, overwrite=overwrite, strategy=strategy, verbose=verbose)
