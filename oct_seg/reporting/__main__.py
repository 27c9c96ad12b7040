"""Fill one fold of the paper's experiments, or list the missing or the committed ones (run
from the repository root, so that results/folds is the committed folder):

    python -m oct_seg.reporting --missing
    python -m oct_seg.reporting --committed    # per fold: best epoch, Dice, wall time (Markdown)
    python -m oct_seg.reporting --experiment transunet__combined --fold 3

The second trains fold 3 of TransUNet + the combined loss with the FULL settings into
--runs (outside the repository; resumes an interrupted fold) and copies its small files to
--results (oct_seg.reporting.experiments.fill_fold); then commit results/folds.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from oct_seg.reporting.experiments import (PAPER_EXPERIMENTS, SETTINGS, experiment_configs,
                                           experiment_name, fill_fold, missing_folds,
                                           network_kwargs, run_dir_for)
from oct_seg.reporting.tables import fold_progress, markdown_table


def main(argv=None) -> int:
    names = {experiment_name(*pair): pair for pair in PAPER_EXPERIMENTS}
    p = argparse.ArgumentParser(prog="python -m oct_seg.reporting",
                                description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get(
        "OCT_SEG_DATA", "../shared/data")) / "duke_dme", help="Duke DME data folder")
    p.add_argument("--runs", type=Path, default=Path(os.environ.get("OCT_SEG_RUNS",
                                                                    "../runs/paper")),
                   help="where the models are trained (outside the repository)")
    p.add_argument("--results", type=Path, default=Path("results/folds"),
                   help="the committed per-fold results")
    p.add_argument("--experiment", choices=sorted(names), metavar="MODEL__LOSS",
                   help=f"one of {', '.join(names)}")
    p.add_argument("--fold", type=int, metavar="K", help="the fold to fill (0-based)")
    p.add_argument("--missing", action="store_true", help="list the folds not committed yet")
    p.add_argument("--committed", action="store_true",
                   help="a Markdown table of the committed folds (fold-major): best epoch, "
                        "validation Dice clean / noisy, wall minutes")
    args = p.parse_args(argv)
    configs = experiment_configs(PAPER_EXPERIMENTS, network_kwargs("FULL"), **SETTINGS["FULL"])
    if args.missing:
        todo = missing_folds(args.results, configs)
        print(todo.to_string(index=False) if len(todo) else "every fold is committed")
        return 0
    if args.committed:
        runs = {experiment_name(*pair): run_dir_for(args.results, *pair) for pair in configs}
        table = fold_progress(runs).sort_values("fold", kind="stable")
        print(markdown_table(table) if len(table) else "no fold is committed yet")
        return 0
    if args.experiment is None or args.fold is None:
        p.error("give --experiment and --fold (or --missing, or --committed)")
    config = configs[names[args.experiment]]
    if not 0 <= args.fold < config.n_folds:
        p.error(f"--fold {args.fold}: must be in 0..{config.n_folds - 1}")
    out = fill_fold(args.data.resolve(), args.runs.resolve(), args.results, config, args.fold)
    print(f"committed files of fold {args.fold}: {out / f'fold_{args.fold}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
