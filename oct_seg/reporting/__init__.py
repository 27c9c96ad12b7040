"""Paper-reproduction reporting: everything the notebooks in ``notebooks/`` show is computed
here, so they only call functions.

    paper.py        the published numbers as data, table rows and labels, protocol notes
    experiments.py  settings and widths of our runs, one run folder per (network, loss)
    tables.py       our results beside the paper's, run facts, baseline, setting differences
    figures.py      mean training curves, one B-scan segmented by every run
"""
from oct_seg.reporting.experiments import (LOSS_KWARGS, SETTINGS, experiment_configs,
                                           network_kwargs, run_dir_for, run_experiments,
                                           subset_data)
from oct_seg.reporting.figures import (curves_figure, mean_history, pick_example_scan,
                                       segmentation_grid)
from oct_seg.reporting.paper import (LOSS_LABELS, NETWORK_LABELS, PAPER, PAPER_SOURCE,
                                     PROTOCOL_NOTES, PUBLISHED_DUKE, STAND_INS,
                                     TABLE1_NETWORKS, TABLE3_LOSSES, paper_row)
from oct_seg.reporting.tables import (compare_with_paper, pooled_scores, results_table,
                                      run_facts, run_summary, setting_differences,
                                      trivial_baseline, write_csv)

__all__ = [
    "PAPER", "PAPER_SOURCE", "STAND_INS", "paper_row", "PUBLISHED_DUKE", "PROTOCOL_NOTES",
    "NETWORK_LABELS", "LOSS_LABELS", "TABLE1_NETWORKS", "TABLE3_LOSSES", "SETTINGS",
    "network_kwargs", "LOSS_KWARGS", "experiment_configs", "run_dir_for", "run_experiments",
    "subset_data", "run_summary", "run_facts", "trivial_baseline", "pooled_scores",
    "results_table", "compare_with_paper", "setting_differences", "write_csv", "mean_history",
    "curves_figure", "pick_example_scan", "segmentation_grid",
]
