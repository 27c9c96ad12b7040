"""Where a cross-validated recipe's errors lie: its fold models on their held-out B-scans.

    .venv/bin/python bench/error_anatomy.py --recipe ours_unet

For every fold of RECIPE that bench/accuracy.py finished (RESULTS/RECIPE/fold_K/val_scores.csv)
and whose model is still in RUNS (RUNS/RECIPE/fold_K/model.keras; models are not committed),
predicts the fold's held-out B-scans at native size and measures, pooled over all of them:

* the operating point: pooled Dice, precision, sensitivity and predicted / true fluid area at
  thresholds 0.3 ... 0.95 (0.5 is the benchmark's);
* where the false fluid lies: the share of false-positive pixels within d = 1, 2, 3, 5, 10,
  20 pixels of grader fluid, and the share inside predicted regions that touch a grader's
  pocket (the rest form separate regions, whose sizes are reported); likewise the missed
  fluid's distance to the nearest predicted pixel;
* what simple post-processing would change: pooled Dice after removing predicted regions
  smaller than 20 / 100 / 400 pixels, and after eroding the predictions by 1 / 2 pixels.

Regions are 8-connected. Distances are Euclidean, in pixels of the 496 x 768 B-scan (~3.9 um
deep, ~11-12 um wide on Spectralis). Writes RESULTS/RECIPE/errors.json and errors.png
(cumulative distance curves); prints a Markdown summary. The pooled Dice at 0.5 must match the
benchmark's val_scores.csv (a check that the models are the scored ones).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THRESHOLDS = (0.3, 0.5, 0.7, 0.9, 0.95)
DISTANCES = (1, 2, 3, 5, 10, 20)
MIN_SIZES = (20, 100, 400)
EROSIONS = (1, 2)
EIGHT = np.ones((3, 3), bool)


def counts(truths, preds) -> dict:
    """oct_seg.metrics.pooled_scores of boolean masks (TP / FP / FN summed over the scans) with
    the precision, sensitivity and predicted / true area derived from its counts."""
    from oct_seg.metrics import pooled_scores

    c = pooled_scores(truths, preds)
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    return {**c, "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "area_ratio": (tp + fp) / (tp + fn) if tp + fn else float("nan")}


def without_small_regions(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """mask without its 8-connected regions of fewer than min_pixels pixels."""
    labels, n = ndimage.label(mask, structure=EIGHT)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def distance_shares(target_masks, source_masks) -> np.ndarray:
    """Per distance d in DISTANCES, the share of the pixels (source & ~target) that lie within
    d pixels of target (Euclidean); images whose target is empty count as beyond every d."""
    within = np.zeros(len(DISTANCES))
    total = 0
    for target, source in zip(target_masks, source_masks):
        chosen = source & ~target
        n = int(np.count_nonzero(chosen))
        if n == 0:
            continue
        total += n
        if target.any():
            distance = ndimage.distance_transform_edt(~target)[chosen]
            within += [np.count_nonzero(distance <= d) for d in DISTANCES]
    return within / total if total else np.full(len(DISTANCES), np.nan)


def false_positive_regions(truths, preds) -> dict:
    """False-positive pixels inside predicted regions that touch grader fluid vs in separate
    regions (8-connected), with the separate regions' count and median size."""
    touching = separate = 0
    sizes = []
    for t, p in zip(truths, preds):
        labels, n = ndimage.label(p, structure=EIGHT)
        if n == 0:
            continue
        hit = np.zeros(n + 1, bool)
        hit[np.unique(labels[t & p])] = True
        hit[0] = False
        fp = p & ~t
        touching += int(np.count_nonzero(fp & hit[labels]))
        separate += int(np.count_nonzero(fp & ~hit[labels]))
        region_sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes += [int(region_sizes[i]) for i in range(1, n + 1) if not hit[i]]
    total = touching + separate
    return {"fp_pixels": total, "share_touching_truth": touching / total if total else None,
            "separate_regions": len(sizes),
            "separate_region_median_pixels": float(np.median(sizes)) if sizes else None}


def anatomy(truths, probs) -> dict:
    """Every measurement of the module docstring for boolean truths and probability maps."""
    preds = [p > 0.5 for p in probs]
    return {
        "scans": len(truths),
        "thresholds": {str(th): counts(truths, [p > th for p in probs]) for th in THRESHOLDS},
        "distances_px": list(DISTANCES),
        "fp_within": distance_shares(truths, preds).tolist(),
        "fn_within": distance_shares(preds, truths).tolist(),
        "fp_regions": false_positive_regions(truths, preds),
        "min_region_pixels": {str(n): counts(truths, [without_small_regions(p, n) for p in preds])
                              ["dice"] for n in MIN_SIZES},
        "eroded_px": {str(r): counts(truths, [ndimage.binary_erosion(p, iterations=r)
                                              for p in preds])["dice"] for r in EROSIONS},
    }


def figure(result: dict, path: Path, title: str) -> None:
    """Cumulative shares of false-positive and missed pixels by distance."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    d = result["distances_px"]
    ax.plot(d, result["fp_within"], "o-", label="false fluid: distance to grader fluid")
    ax.plot(d, result["fn_within"], "s-", label="missed fluid: distance to predicted fluid")
    ax.set(xscale="log", xticks=d, xticklabels=[str(v) for v in d], ylim=(0, 1),
           xlabel="distance (pixels, 496 x 768 B-scan)", ylabel="share of the error pixels within",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(result: dict, recipe: str, folds: list) -> str:
    th = result["thresholds"]
    lines = [f"Error anatomy of `{recipe}`, folds {', '.join(map(str, folds))} "
             f"({result['scans']} held-out B-scans):", "",
             "| threshold | pooled Dice | precision | sensitivity | predicted / true area |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['dice']:.3f} | {v['precision']:.3f} | {v['sensitivity']:.3f} | "
              f"{v['area_ratio']:.2f} |" for k, v in th.items()]
    share = " / ".join(f"{v:.0%}" for v in result["fp_within"])
    missed = " / ".join(f"{v:.0%}" for v in result["fn_within"])
    regions = result["fp_regions"]
    lines += ["", f"- False-positive pixels within {' / '.join(map(str, DISTANCES))} px of "
              f"grader fluid: {share}; in regions touching a grader's pocket: "
              f"{regions['share_touching_truth']:.0%} (the rest in {regions['separate_regions']}"
              f" separate regions, median {regions['separate_region_median_pixels']:.0f} px).",
              f"- Missed fluid pixels within the same distances of predicted fluid: {missed}.",
              "- Pooled Dice after removing regions under "
              + ", ".join(f"{n} px: {v:.3f}" for n, v in result["min_region_pixels"].items())
              + "; after eroding by "
              + ", ".join(f"{r} px: {v:.3f}" for r, v in result["eroded_px"].items()) + "."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", required=True)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "duke_dme")
    p.add_argument("--runs", type=Path, default=REPO.parent / "runs" / "accuracy")
    p.add_argument("--results", type=Path, default=HERE / "results" / "accuracy")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    folds = sorted(k for k in range(5)
                   if (args.results / args.recipe / f"fold_{k}" / "val_scores.csv").is_file()
                   and (args.runs / args.recipe / f"fold_{k}" / "model.keras").is_file())
    if not folds:
        sys.exit(f"{args.results / args.recipe}: no finished fold with its model in "
                 f"{args.runs / args.recipe}")
    import pandas as pd

    from oct_seg.data import read_dataset
    from oct_seg.evaluate import predict_probabilities
    from oct_seg.loading import load_model
    from oct_seg.metrics import pooled_from_table

    scans = read_dataset(args.data)
    splits = json.loads((args.results / "splits.json").read_text())
    truths, probs = [], []
    for k in folds:
        held_out = scans.subset(splits[k]["val"])
        model = load_model(args.runs / args.recipe / f"fold_{k}" / "model.keras")
        probs += predict_probabilities(model, held_out.images)
        truths += [m > 0 for m in held_out.masks]
        print(f"[error_anatomy] fold {k}: {len(held_out.names)} B-scans", flush=True)
    result = anatomy(truths, probs)
    scored = pooled_from_table(pd.concat(
        [pd.read_csv(args.results / args.recipe / f"fold_{k}" / "val_scores.csv")
         for k in folds]))["dice"]
    if abs(result["thresholds"]["0.5"]["dice"] - scored) > 2e-3:
        sys.exit(f"{args.runs / args.recipe}: these models give pooled Dice "
                 f"{result['thresholds']['0.5']['dice']:.4f}, the benchmark scored {scored:.4f}:"
                 " not the scored models")
    result |= {"recipe": args.recipe, "folds": folds}
    out = args.results / args.recipe
    (out / "errors.json").write_text(json.dumps(result, indent=2) + "\n")
    figure(result, out / "errors.png", f"{args.recipe}, {result['scans']} held-out B-scans")
    print(markdown(result, args.recipe, folds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
