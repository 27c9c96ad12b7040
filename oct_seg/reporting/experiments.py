"""The experiments of the paper reproduction: which runs, their settings, and where their
results live so that they outlive the machine that trained them.

Two roots, one folder per experiment ``<model>__<loss>`` in each (:func:`run_dir_for`):

* RUNS (outside the repository, e.g. ``../runs/paper``): the run folders of
  :func:`oct_seg.train`, with the fold models. Lost with the machine.
* RESULTS (committed, ``results/folds``): the same layout without models
  (:meth:`oct_seg.rundir.RunDir.export_fold`): config.json, splits.json, summary.csv and
  per fold history.csv, trained.json, fold.json and the per-scan score CSVs
  (train / val x clean / noisy; tens of kB a fold), and in the fold that held out the
  figures' example scan its predicted masks (example_<scan>_<condition>.png), from which the
  segmentation grids are drawn without a model.

:func:`fill_fold` makes one fold of one experiment committed: nothing when RESULTS has it,
else it trains that fold into RUNS (resuming an interrupted one) and copies its small files to
RESULTS. A fold costs ~0.5 CPU-hour (U-Net; more for the other networks) on 2 cores, so
the 50 folds of the paper's tables are filled one call per fold over several sessions, each
committing what it finished (``python -m oct_seg.reporting``). Every table, figure and test
of the notebooks reads RESULTS only; :func:`collect_experiments` is the notebooks' call.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd

from oct_seg.io import write_csv
from oct_seg.reporting.figures import write_example_predictions
from oct_seg.reporting.paper import TABLE1_NETWORKS, TABLE3_LOSSES
from oct_seg.rundir import RunDir
from oct_seg.training import TrainConfig, summarize_run, train
from oct_seg.training.config import identity

# The ten trained experiments: Table 1's six networks with the Dice loss, and TransUNet with
# the four other losses of Table 3 (TransUNet + Dice is shared). Table 4 is the noisy scoring
# of Table 3's runs: every fold scores its model on clean and on seeded noisy scans.
PAPER_EXPERIMENTS = (*((m, "dice") for m in TABLE1_NETWORKS),
                     *(("transunet", loss) for loss in TABLE3_LOSSES if loss != "dice"))

# Training settings beyond TrainConfig's defaults.
# FULL: the default recipe (oct_seg.training.recipe: native 256 x 768 patches, widths 8-128,
#   60 epochs of a cosine schedule (Swin-UNet 120), the last epoch kept) with the paper's
#   5 folds, computed in mixed_bfloat16 (~1.6x faster on this CPU, float32 weights; the
#   accuracy benchmark's folds were trained so too). The noisy condition is additive Gaussian noise of std 0.1
#   on [0, 1] images, and the models train with Gaussian noise of std U(0, 0.1) on each
#   patch (augment_noise): trained on clean patches only, the 8-128 U-Net marked no fluid on
#   the noisy B-scans (pooled Dice 0.000 on the accuracy benchmark's 5 folds; 0.706 with it,
#   clean 0.710 against 0.715), which would leave Table 4 all zeros. On the accuracy
#   benchmark's fold 0 (U-Net) validation Dice rose by 0.005 over the last 10 of 60 epochs.
# QUICK: one epoch of tiny nets at 32 x 48, a smoke run of the notebooks' code; the output
#   bias starts at 0.5 (not the fluid prior) so that such a run still marks fluid and its
#   tables differ between the clean and the noisy condition.
SETTINGS = {
    "FULL": dict(n_folds=5, seed=0, noise_std=0.1, augment_noise=0.1,
                 precision="mixed_bfloat16"),
    "QUICK": dict(image_size=(32, 48), epochs=1, n_folds=2, batch_size=4, learning_rate=2e-3,
                  noise_std=0.1, augment_noise=0.1, seed=0, prior_bias=False),
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


def network_kwargs(mode: str = "FULL") -> dict:
    """Builder kwargs per network on top of the recipe's: "FULL" none (the recipe's CPU
    widths, oct_seg.training.recipe.NETWORK_KWARGS) or "QUICK" (tiny test nets; H, W
    multiples of 8)."""
    mode = str(mode).upper()
    if mode not in SETTINGS:
        raise ValueError(f"mode must be 'FULL' or 'QUICK', got {mode!r}")
    return {m: dict(_QUICK_NETS[m]) if mode == "QUICK" else {} for m in TABLE1_NETWORKS}


def experiment_name(model: str, loss: str) -> str:
    """The folder name of one experiment: <model>__<loss>."""
    return f"{model}__{loss}"


def run_dir_for(root, model: str, loss: str) -> Path:
    """The folder of one (network, loss) experiment under a RUNS or RESULTS root."""
    return Path(root) / experiment_name(model, loss)


def experiment_configs(pairs, model_kwargs: dict, **fields) -> dict:
    """{(model, loss): TrainConfig} for each (model, loss) pair, sharing every other setting.

    model_kwargs: {model: builder kwargs} (see network_kwargs); fields: the other TrainConfig
    fields (e.g. SETTINGS[mode]), shared by every experiment. Loss options are the recipe's
    (batch-level overlap terms, BCE weight from the training masks; each fold's trained.json
    keeps the values used).
    """
    out = {}
    for model, loss in pairs:
        if model not in model_kwargs:
            raise ValueError(f"no model kwargs for {model!r}; have {sorted(model_kwargs)}")
        out[(model, loss)] = TrainConfig(model=model, model_kwargs=dict(model_kwargs[model]),
                                         loss=loss, **fields)
    return out


def check_committed(result_dir, config: TrainConfig) -> None:
    """ValueError naming RESULT_DIR/config.json when the committed folds there were trained
    with another configuration than ``config`` (their results must not mix)."""
    run = RunDir(result_dir)
    if not run.config.is_file():
        return
    old = identity(TrainConfig.from_dict(run.read_config()).to_dict())
    new = identity(config.to_dict())
    diff = [f"{k}: committed {old.get(k)!r}, now {new.get(k)!r}" for k in new
            if old.get(k) != new.get(k)]
    if diff:
        raise ValueError(f"{run.config}: the committed folds have another configuration "
                         f"({'; '.join(diff)}); move them away or choose another results root")


def fill_fold(data_dir, runs_root, results_root, config: TrainConfig, k: int,
              verbose=2) -> Path:
    """Fold k of config's experiment in RESULTS: as committed, or trained now.

    When RESULTS/<model>__<loss>/fold_k/fold.json is absent: trains (or resumes) fold k into
    RUNS/<model>__<loss> with oct_seg.train, saves the fold's prediction of the figures'
    example scan if it held that scan out (figures.write_example_predictions), copies its
    small files to RESULTS and rebuilds RESULTS' summary.csv. Returns the
    RESULTS experiment folder.
    """
    run = RunDir(run_dir_for(runs_root, config.model, config.loss))
    result = RunDir(run_dir_for(results_root, config.model, config.loss))
    check_committed(result.path, config)
    if result.fold(k, config.n_folds).finished:
        return result.path
    train(data_dir, run.path, dataclasses.replace(config, folds=[k]), verbose=verbose)
    if result.splits.is_file() and result.read_splits() != run.read_splits():
        raise ValueError(f"{result.splits}: the committed folds split the patients otherwise "
                         f"than {run.splits} (another data folder?); not copied")
    write_example_predictions(run.path, k, data_dir, result.fold(k, config.n_folds).path)
    run.export_fold(k, config.n_folds, result.path)  # fold.json last: the fold is complete
    summarize_run(result.path, curves=False)  # the notebooks draw the curves
    return result.path


def collect_experiments(data_dir, runs_root, results_root, configs: dict, folds=None,
                        train_missing=True, verbose=2) -> dict:
    """{(model, loss): RESULTS experiment folder} for every config, filling each missing fold
    with fill_fold when train_missing (fold-major: fold 0 of every experiment first, so a
    session cut short leaves the experiments with the same folds); with train_missing False
    only reads what is committed (missing_folds lists the rest)."""
    n_folds = {cfg.n_folds for cfg in configs.values()}
    if len(n_folds) != 1:
        raise ValueError(f"all configs must share n_folds; got {sorted(n_folds)}")
    folds = range(n_folds.pop()) if folds is None else folds
    for cfg in configs.values():
        check_committed(run_dir_for(results_root, cfg.model, cfg.loss), cfg)
    if train_missing:
        for k in folds:
            for cfg in configs.values():
                fill_fold(data_dir, runs_root, results_root, cfg, k, verbose=verbose)
    return {key: run_dir_for(results_root, *key) for key in configs}


def missing_folds(results_root, configs: dict) -> pd.DataFrame:
    """The (experiment, fold) pairs not committed under RESULTS, with the command that
    fills each (columns experiment, fold, command); empty when all are there."""
    rows = []
    for (model, loss), cfg in configs.items():
        result = RunDir(run_dir_for(results_root, model, loss))
        for k in range(cfg.n_folds):
            if not result.fold(k, cfg.n_folds).finished:
                rows.append({"experiment": experiment_name(model, loss), "fold": k,
                             "command": "python -m oct_seg.reporting --experiment "
                                        f"{experiment_name(model, loss)} --fold {k}"})
    return pd.DataFrame(rows, columns=["experiment", "fold", "command"])


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
