"""Paper-reproduction reporting: everything the notebooks in ``notebooks/`` show is computed
here, so they only call functions.

    paper.py         the published numbers as data, table rows and labels, protocol notes
    experiments.py   the ten experiments, their settings, the committed per-fold results
                     (results/folds) and filling a missing fold (python -m oct_seg.reporting)
    tables.py        our results beside the paper's, run facts, convergence, the committed
                     folds' progress, per-scan scores and three Dice forms, baseline,
                     setting differences
    significance.py  paired Wilcoxon tests of the paper's claims across scans, Holm-corrected;
                     the same claims per patient (sign test); robustness as the per-scan
                     clean-to-noisy change
    figures.py       training curves, convergence per fold, one B-scan segmented by every run
"""
from oct_seg.reporting.experiments import (PAPER_EXPERIMENTS, SETTINGS, collect_experiments,
                                           experiment_configs, experiment_name, fill_fold,
                                           missing_folds, network_kwargs, run_dir_for,
                                           subset_data)
from oct_seg.reporting.figures import (convergence_figure, curves_figure, mean_history,
                                       pick_example_scan, segmentation_grid,
                                       write_example_predictions)
from oct_seg.reporting.paper import (LOSS_LABELS, NETWORK_LABELS, PAPER, PAPER_SOURCE,
                                     PROTOCOL_NOTES, PUBLISHED_DUKE, STAND_INS,
                                     TABLE1_NETWORKS, TABLE3_LOSSES, paper_row)
from oct_seg.reporting.significance import (claim_table, claim_tests, compare_paired, holm,
                                             paired_dice, patient_dice, patient_tests,
                                             robustness_table, wilcoxon_pair)
from oct_seg.reporting.tables import (compare_with_paper, convergence_table, dice_forms,
                                      fold_progress, markdown_table, plateau_gain,
                                      pooled_scores, results_table, run_facts,
                                      run_summary, scan_scores, scan_summary,
                                      setting_differences, trivial_baseline, write_csv)

__all__ = [
    "PAPER", "PAPER_SOURCE", "STAND_INS", "paper_row", "PUBLISHED_DUKE", "PROTOCOL_NOTES",
    "NETWORK_LABELS", "LOSS_LABELS", "TABLE1_NETWORKS", "TABLE3_LOSSES", "SETTINGS",
    "PAPER_EXPERIMENTS", "network_kwargs", "experiment_configs", "experiment_name",
    "run_dir_for", "fill_fold", "collect_experiments", "missing_folds", "subset_data",
    "run_summary", "run_facts", "convergence_table", "fold_progress", "markdown_table",
    "plateau_gain", "scan_scores", "scan_summary", "dice_forms", "trivial_baseline",
    "pooled_scores", "results_table",
    "compare_with_paper", "setting_differences", "write_csv", "claim_table", "claim_tests", "paired_dice",
    "wilcoxon_pair", "holm", "patient_dice", "patient_tests",
    "compare_paired", "robustness_table", "mean_history", "curves_figure", "convergence_figure",
    "pick_example_scan", "write_example_predictions", "segmentation_grid",
]
