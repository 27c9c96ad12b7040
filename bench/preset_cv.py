"""The cross_validation block of a preset's preset.json, from the accuracy benchmark's folds.

    .venv/bin/python bench/preset_cv.py bench/results/accuracy/ours_unet > cross_validation.json
    oct-seg presets make ... --metadata cross_validation.json

Reads every finished fold's val_scores.csv (one row per held-out B-scan) and writes JSON:
per fold the held-out subjects, B-scans, pooled Dice, mean per-image Dice over fluid B-scans and
fluid-free B-scans with any fluid marked; over all finished folds the pooled and per-image Dice.
"""
import json
import sys
from pathlib import Path

import pandas as pd

from oct_seg.reporting.tables import scan_summary


def cross_validation(recipe_dir: Path) -> dict:
    folds = sorted((p for p in recipe_dir.glob("fold_*") if (p / "val_scores.csv").is_file()),
                   key=lambda p: int(p.name.split("_")[1]))
    if not folds:
        raise SystemExit(f"{recipe_dir}: no finished fold (fold_K/val_scores.csv)")
    tables = [pd.read_csv(p / "val_scores.csv") for p in folds]
    summary = scan_summary(tables)
    rows = []
    for path, table, pooled in zip(folds, tables, summary["per_fold_pooled"]):
        fluid, empty = table[table["truth_pixels"] > 0], table[table["truth_pixels"] == 0]
        rows.append({"fold": int(path.name.split("_")[1]), "scans": len(table),
                     "subjects": sorted(map(str, table["subject"].unique())),
                     "pooled_dice": round(pooled, 4),
                     "image_dice_fluid_mean": round(float(fluid["dice"].mean()), 4),
                     "fluid_free_scans_with_fp": int((empty["pred_pixels"] > 0).sum()),
                     "fluid_free_scans": len(empty)})
    return {"recipe": f"bench/accuracy.py recipe {recipe_dir.name}",
            "folds_finished": f"{len(folds)} of 5", "folds": rows,
            "pooled_dice": round(summary["pooled_dice"], 4),
            "image_dice_fluid_mean": round(summary["image_dice_fluid_mean"], 4),
            "scans": summary["scans"]}


if __name__ == "__main__":
    print(json.dumps({"cross_validation": cross_validation(Path(sys.argv[1]))}, indent=1))
