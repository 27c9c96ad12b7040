"""The paper's side: its published numbers as data (every cell of Tables 1, 3 and 4), the rows
of its tables, display labels, other published Duke DME results, and the protocol differences
every notebook states.

Darooei et al. (2023) is the paper reproduced (PAPER_SOURCE); values are percent.
"""
from __future__ import annotations

PAPER_SOURCE = ("R. Darooei, M. Nazari, R. Kafieh, H. Rabbani, \"Loss-modified transformer-based "
                "U-Net for accurate segmentation of fluids in optical coherence tomography images "
                "of retinal diseases\", J Med Signals Sens 2023;13(4):253-260, "
                "doi:10.4103/jmss.jmss_52_22")

# the rows of the paper's tables, in its order (names from oct_seg.MODELS / oct_seg.LOSSES)
TABLE1_NETWORKS = ("unet", "att_unet", "transunet", "r2_unet", "unet3plus", "swin_unet")
TABLE3_LOSSES = ("dice", "focal_tversky", "wbce", "tversky", "combined")
NETWORK_LABELS = {"unet": "U-Net", "att_unet": "Attention U-Net", "transunet": "TransUNet",
                  "r2_unet": "R2 U-Net", "unet3plus": "UNet 3+", "swin_unet": "Swin-UNet"}
LOSS_LABELS = {"dice": "Dice", "focal_tversky": "Focal Dice (focal Tversky)",
               "wbce": "Weighted BCE", "tversky": "Tversky",
               "combined": "Proposed (Dice + focal Tversky + WBCE)"}

# Every cell of the paper's Tables 1, 3 and 4 (percent, as printed; Table 3's proposed-loss
# training Dice is printed with three decimals, 95.524, and rounded to 95.52 in the abstract).
# Each table prints "Dice (validation)" and "Jaccard (validation)": the training-set figure
# with the validation figure in brackets. Printed oddities, kept as printed:
# * Table 1's training Jaccard repeats the validation Dice of the same row for U-Net (78.70),
#   Attention U-Net (79.30), R2 U-Net (78.90) and UNet 3+ (63.90); the paper gives no other
#   figure for these cells. The caption of Figure 2 quotes 89.54 and 77.2 as TransUNet's best
#   Dice and Jaccard; 77.2 is in no table (Table 1: 80.60 train, 66.80 validation).
# * Table 1 trained every network with the Dice loss, so its TransUNet row is the paper's
#   TransUNet + Dice result; Tables 3 and 4 have no plain Dice row (see STAND_INS).
PAPER = {
    "table1": {
        "unet": {"train_dice": 85.90, "val_dice": 78.70, "train_jaccard": 78.70,
                 "val_jaccard": 55.73},
        "att_unet": {"train_dice": 88.30, "val_dice": 79.30, "train_jaccard": 79.30,
                     "val_jaccard": 53.80},
        "transunet": {"train_dice": 89.54, "val_dice": 80.40, "train_jaccard": 80.60,
                      "val_jaccard": 66.80},
        "r2_unet": {"train_dice": 88.40, "val_dice": 78.90, "train_jaccard": 78.90,
                    "val_jaccard": 63.16},
        "unet3plus": {"train_dice": 76.50, "val_dice": 63.90, "train_jaccard": 63.90,
                      "val_jaccard": 45.70},
        "swin_unet": {"train_dice": 77.60, "val_dice": 65.60, "train_jaccard": 71.63,
                      "val_jaccard": 42.30},
    },
    "table3": {  # TransUNet, clean B-scans
        "combined": {"train_dice": 95.524, "val_dice": 83.52, "train_jaccard": 90.88,
                     "val_jaccard": 72.21},
        "focal_tversky": {"train_dice": 95.14, "val_dice": 83.11, "train_jaccard": 90.75,
                          "val_jaccard": 71.52},
        "wbce": {"train_dice": 68.66, "val_dice": 63.03, "train_jaccard": 53.56,
                 "val_jaccard": 46.94},
        "tversky": {"train_dice": 93.33, "val_dice": 82.30, "train_jaccard": 87.57,
                    "val_jaccard": 70.63},
    },
    "table4": {  # TransUNet, noisy B-scans
        "combined": {"train_dice": 92.79, "val_dice": 67.88, "train_jaccard": 86.61,
                     "val_jaccard": 56.20},
        "focal_tversky": {"train_dice": 86.88, "val_dice": 62.82, "train_jaccard": 77.37,
                          "val_jaccard": 48.14},
        "wbce": {"train_dice": 30.01, "val_dice": 27.69, "train_jaccard": 18.24,
                 "val_jaccard": 12.21},
        "tversky": {"train_dice": 89.63, "val_dice": 64.25, "train_jaccard": 81.34,
                    "val_jaccard": 47.34},
    },
}

# Rows of our tables that the paper's table lacks, and the paper row that stands in for them:
# our Table 3 Dice row (TransUNet + Dice, clean) is compared with Table 1's TransUNet row, the
# same network and loss. The paper prints no noisy Dice result, so Table 4's Dice row has none.
STAND_INS = {("table3", "dice"): ("table1", "transunet")}


def paper_row(table: str, row: str) -> tuple[dict, str]:
    """The paper's cells for one row of our table, and where they are printed.

    Returns ({metric: percent}, source): source is e.g. "Table 3", "Table 1, TransUNet row
    (Dice loss)" for a stand-in (STAND_INS), or "not in the paper" with no cells.
    """
    if table not in PAPER:
        raise ValueError(f"table must be one of {sorted(PAPER)}, got {table!r}")
    if row in PAPER[table]:
        return PAPER[table][row], f"Table {table[-1]}"
    if (table, row) in STAND_INS:
        src_table, src_row = STAND_INS[(table, row)]
        return (PAPER[src_table][src_row],
                f"Table {src_table[-1]}, {NETWORK_LABELS[src_row]} row (Dice loss)")
    return {}, "not in the paper"


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

* **Data.** Ours: the public Duke DME set (Chiu et al. 2015): 88 B-scans of 8 DME patients
  (11 per patient, grader 1's fluid masks; 26 of the 88 masks are empty). The paper: its own
  set (its ref. 18) of 194 Cirrus B-scans with fluid plus 185 normal B-scans, of varying sizes,
  resized to 512 x 512 and augmented (rotation, shift, crop) into about 2000 sub-images of
  512 x 512. Other images, annotators and fluid burden, so **absolute numbers are not
  comparable**; rankings and trends are what can be compared.
* **Scale.** The paper: 512 x 512 inputs, full widths (TransUNet per its Table 2; for the
  others we assume keras-unet-collection's 64-1024 filters), 100 epochs for every network of
  Table 1 (no epoch count for Tables 3-4), Python 3.9 on two GeForce GTX 1080 Ti GPUs. Ours
  (FULL, oct_seg's default recipe, `oct_seg/training/recipe.py`): native pixel spacing
  (256 x 768 patches for training, whole 496 x 768 B-scans predicted, so a 2-pixel cyst stays
  2 pixels), 8-128 filters over 5 levels (TransUNet: the same CNN with the paper's Table 2
  transformer; Swin-UNet 16 channels, 3 levels), 60 epochs of 17-20 steps (Swin-UNet 120,
  at a peak learning rate of 3e-4 instead of 1e-3) on a 2-core CPU in mixed_bfloat16, ~33
  CPU minutes per U-Net fold (BENCHMARKS.md, Accuracy; twice the width, 16-256, scored no
  higher there at ~2x the time). **The paper's widths and
  512 x 512 do not fit 2 cores:** BENCHMARKS.md measures training of the paper-width U-Net
  at 512 x 512 at ~0.05 B-scans per second (~20 minutes per epoch of 66 training B-scans,
  ~20 h per 60-epoch fold, ~1000 h for the 50 folds), against ~0.9 per second for our widths
  at the same size. We chose the largest setting whose 50 folds fit in days on this machine
  and whose validation Dice plateaued within the schedule on the fold measured so far (U-Net,
  fold 0 of the accuracy benchmark: +0.005 over the last 10 of 60 epochs); the convergence
  section shows it for every fold.
* **Cross-validation.** The paper: an 80 / 20 split and 5-fold cross-validation, curves
  averaged over the folds; it does not say whether the folds were split by patient, nor
  whether sub-images of one B-scan could fall in different folds. Ours: 5 folds split by
  patient; with 8 patients a validation fold holds 1-2 patients (11-22 B-scans), so
  fold-to-fold spread is large.
* **Settings the paper does not state:** optimiser, learning rate, batch size, normalisation,
  the weights alpha / beta / gamma of the combined loss, the focal Tversky parameters and the
  WBCE weight. Ours are the recipe's (`oct_seg.training.recipe`); each fold's `trained.json`
  records the values it used (e.g. the WBCE weight from its training masks).
* **Noise.** The paper adds Gaussian noise in the pixel domain to make a second data set and
  does not give its standard deviation. Ours: std 0.1 on [0, 1] intensities, seeded per
  B-scan, added to the held-out B-scans at test time; every model trains with Gaussian noise
  of a random std U(0, 0.1) on each training patch, so one model serves the clean and the
  noisy table. Trained on clean patches only, a network marks no fluid at all on the noisy
  B-scans at native resolution (8-128 U-Net, 5 folds of the accuracy benchmark: pooled Dice
  0.000; with the noise augmentation 0.706, and 0.710 on the clean B-scans against 0.715).
* **Model selection.** The paper does not say how it selected a model. Ours: the last epoch of
  a fixed schedule, so the validation patients choose nothing; the epoch with the best
  validation Dice is reported only to show whether a run had plateaued.
* **Batch norm and whole-batch losses.** Batch norm on (momentum from the steps per epoch),
  Dice / Tversky / focal Tversky computed over the whole batch (`per_image=False`), the WBCE
  weight the square root of the class ratio and the output bias at the fluid prior: each fixes
  a way earlier runs collapsed to the trivial all-zero or all-fluid output (reasons and
  measurements in `oct_seg/training/recipe.py`).
* **Metric.** Dice / Jaccard per B-scan at original size, averaged over a fold's scans, then
  mean ± sample std over folds ("ours"); a scan with empty truth and empty prediction is
  skipped, an empty-truth scan with any predicted fluid scores 0. "pooled" sums TP / FP / FN
  over a fold's scans (the form of a Keras Dice metric), which weighs large fluid regions more.
  The paper defines Dice and Jaccard but does not say how it averages them over B-scans.
"""
