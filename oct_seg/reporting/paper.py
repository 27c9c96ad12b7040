"""The paper's side: its published numbers as data, the rows of its tables, display labels,
other published Duke DME results, and the protocol differences every notebook states.

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
