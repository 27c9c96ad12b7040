"""Accuracy benchmark: oct_seg's default recipe vs keras-unet-collection's, on the same folds.

One command, from the repository root (resumable: rerun it to continue):

    .venv/bin/python bench/accuracy.py --data ../shared/data/duke_dme

trains, on the same 5 patient-wise folds of the data folder (oct_seg.data.make_folds, seed 0):
  ours_unet       `oct-seg train --data D --out RUN --fold K` with every default (U-Net,
                  filters 8-128)
  ours_transunet  the same with `--model transunet` (the paper's TransUNet, CPU widths)
  kuc_unet        keras-unet-collection's unet_2d by its own recipe (bench/_kuc_recipe.py)
and, only when named in --recipes, recipe experiments (EXPERIMENTS): a base recipe with one
change, reported beside the base on the folds both finished (the same held-out B-scans):
  ours_unet16     twice the width (filters 16-256, 4 x the FLOPs: the recipe's default until
                  it measured no gain)
  ours_unet8_bal  the loss's recall emphasis removed: focal Tversky fp_weight = fn_weight =
                  0.5 (the paper's "focal Dice") and weighted-BCE fluid weight 3 (about the
                  fourth root of the class ratio) instead of 0.3 / 0.7 and ~10 (the square root)
  ours_unet8_long twice the epochs (120 of the same warm-up + cosine schedule)
  ours_unet8_noise Gaussian noise of std U(0, 0.1) added to each training patch
                  (--augment-noise 0.1), so that the network meets the noisy condition
one fold per subprocess (CPU seconds from the child's rusage), then scores, without training:
  ours_unet+tta        the U-Net fold models with flip test-time augmentation
  ours_unet+transunet  per fold, the average of the U-Net and TransUNet probabilities (an
                       ensemble of two models that saw the same training patients)

Reported per recipe over all cross-validated B-scans (each predicted by the fold model that
did not train on its patient): pooled Dice (TP, FP, FN summed over every scan), per-fold pooled
Dice (mean, sd), per-image Dice over the fluid-positive scans, false-positive area on the
fluid-free scans, and CPU minutes. Raw per-scan CSVs go to --results
(bench/results/accuracy/<recipe>/fold_K/val_scores.csv with each fold's history and config);
the models stay in --runs (not committed). The table replaces the "accuracy" section of
BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _markdown import replace_section  # noqa: E402

N_FOLDS = 5
TRAINED = {  # name -> (kind, extra `oct-seg train` arguments)
    "ours_unet": ("oct_seg", ["--model", "unet"]),
    "ours_transunet": ("oct_seg", ["--model", "transunet"]),
    "kuc_unet": ("kuc", []),
}
EXPERIMENTS = {  # name -> (base recipe, `oct-seg train` arguments added to the base's)
    "ours_unet16": ("ours_unet", ["--model-kwargs", '{"filter_num": [16, 32, 64, 128, 256]}']),
    "ours_unet8_bal": ("ours_unet", ["--loss-kwargs", '{"fp_weight": 0.5, "fn_weight": 0.5, '
                                                       '"pos_weight": 3.0}']),
    "ours_unet8_long": ("ours_unet", ["--epochs", "120"]),
    "ours_unet8_noise": ("ours_unet", ["--augment-noise", "0.1"]),
}
DERIVED = ("ours_unet+tta", "ours_unet+transunet")
LABELS = {
    "ours_unet": "oct_seg U-Net, default recipe (filters 8-128)",
    "ours_unet16": "U-Net at twice the width (filters 16-256)",
    "ours_unet8_bal": "8-128 U-Net, loss without recall emphasis (Tversky 0.5 / 0.5, BCE "
                      "fluid weight 3)",
    "ours_unet8_long": "8-128 U-Net, 120 epochs (2 x the recipe's)",
    "ours_unet8_noise": "8-128 U-Net, Gaussian noise of std U(0, 0.1) on the training patches",
    "ours_transunet": "oct_seg TransUNet (Table 2 transformer, CPU widths), default recipe",
    "kuc_unet": "keras-unet-collection unet_2d, its recipe (256 x 384, dice + BCE, flips)",
    "ours_unet+tta": "oct_seg U-Net + flip TTA",
    "ours_unet+transunet": "oct_seg U-Net + TransUNet ensemble (per fold)",
}


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list, log: Path) -> dict:
    """Run a command with its output appended to log; CPU and wall seconds of the child,
    summed over every session of a resumed fold (each session, finished or failed, is
    appended to log's sibling sessions.json; a session killed with the benchmark is lost)."""
    cpu, wall = _cpu_children(), time.time()
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(map(str, command))}\n")
        fh.flush()
        code = subprocess.run(list(map(str, command)), stdout=fh, stderr=subprocess.STDOUT,
                              cwd=REPO).returncode
    sessions_file = log.parent / "sessions.json"
    sessions = json.loads(sessions_file.read_text()) if sessions_file.is_file() else []
    sessions.append({"cpu_s": round(_cpu_children() - cpu, 1),
                     "wall_s": round(time.time() - wall, 1), "exit": code})
    sessions_file.write_text(json.dumps(sessions, indent=2) + "\n")
    if code:
        raise RuntimeError(f"{command[:4]}... failed with exit {code}; see {log}")
    return {"cpu_s": round(sum(s["cpu_s"] for s in sessions), 1),
            "wall_s": round(sum(s["wall_s"] for s in sessions), 1), "sessions": len(sessions)}


def write_splits(data: Path, results: Path) -> Path:
    """The benchmark's folds (oct_seg's make_folds, seed 0) as results/splits.json."""
    from oct_seg.data import make_folds, read_dataset, write_splits as write

    path = results / "splits.json"
    if not path.is_file():
        results.mkdir(parents=True, exist_ok=True)
        write(path, make_folds(read_dataset(data).index, n_folds=N_FOLDS, seed=0))
    return path


def recipe_arguments(name: str) -> tuple:
    """(kind, extra `oct-seg train` arguments) of a trained recipe or an experiment (its
    base recipe's arguments, then its own)."""
    if name in EXPERIMENTS:
        base, added = EXPERIMENTS[name]
        kind, extra = TRAINED[base]
        return kind, [*extra, *added]
    return TRAINED[name]


def train_fold(name: str, k: int, args) -> None:
    """Train (or resume) fold k of a trained recipe; copy its small results to --results."""
    kind, extra = recipe_arguments(name)
    out = args.results / name / f"fold_{k}"
    if (out / "val_scores.csv").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train.log"
    if kind == "oct_seg":
        run = args.runs / name
        command = [sys.executable, "-m", "oct_seg", "train", "--data", args.data, "--out", run,
                   "--folds", N_FOLDS, "--fold", k, *extra, *args.ours_args]
        timing = _run(command, log)
        stored = json.loads((run / "splits.json").read_text())
        expected = json.loads((args.results / "splits.json").read_text())
        if stored != expected:
            raise RuntimeError(f"{run}/splits.json differs from the benchmark's folds")
        from oct_seg.rundir import RunDir

        RunDir(run).export_fold(k, N_FOLDS, args.results / name)  # history, scores, jsons
        shutil.copy2(out / "val_scores_clean.csv", out / "val_scores.csv")
    else:
        command = [sys.executable, HERE / "_kuc_recipe.py", "--data", args.data, "--splits",
                   args.results / "splits.json", "--fold", k, "--out", args.runs / name / f"fold_{k}",
                   *args.kuc_args]
        timing = _run(command, log)
        for file in ("val_scores.csv", "fold.json"):
            shutil.copy2(args.runs / name / f"fold_{k}" / file, out / file)
    (out / "cpu.json").write_text(json.dumps({**timing, "command": " ".join(map(str, command))},
                                             indent=2) + "\n")
    print(f"[accuracy] {name} fold {k}: {timing['cpu_s'] / 60:.1f} CPU min", flush=True)


def score_derived(name: str, k: int, args) -> None:
    """Score a derived row (TTA, ensemble) of fold k from the trained fold models."""
    out = args.results / name / f"fold_{k}"
    if (out / "val_scores.csv").is_file():
        return
    from oct_seg.data import read_dataset
    from oct_seg.evaluate import evaluate_model
    from oct_seg.io import write_csv
    from oct_seg.loading import load_model

    split = json.loads((args.results / "splits.json").read_text())[k]
    val = read_dataset(args.data).subset(split["val"])
    unet = load_model(args.runs / "ours_unet" / f"fold_{k}" / "model.keras")
    cpu = time.process_time()
    if name == "ours_unet+tta":
        scores = evaluate_model(unet, val, tta=True)
    else:
        tu = load_model(args.runs / "ours_transunet" / f"fold_{k}" / "model.keras")
        scores = evaluate_model([unet, tu], val)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "val_scores.csv", scores)
    (out / "cpu.json").write_text(json.dumps({"cpu_s": round(time.process_time() - cpu, 1),
                                              "scoring_only": True}) + "\n")


def finished_folds(name: str, results: Path) -> set:
    """The folds of a recipe whose val_scores.csv is in results."""
    return {k for k in range(N_FOLDS)
            if (results / name / f"fold_{k}" / "val_scores.csv").is_file()}


def recipe_row(name: str, results: Path, fold_ids) -> dict:
    """One table row from results/<name>/fold_K/val_scores.csv over the folds fold_ids."""
    import pandas as pd

    from oct_seg.reporting.tables import scan_summary

    folds = [results / name / f"fold_{k}" for k in sorted(fold_ids)]
    cpu_files = [json.loads((f / "cpu.json").read_text()) for f in folds]
    return {"recipe": name, **scan_summary([pd.read_csv(f / "val_scores.csv") for f in folds]),
            "cpu_min": sum(c["cpu_s"] for c in cpu_files) / 60.0,
            "cpu_incomplete": any("incomplete" in c for c in cpu_files)}


def figure(names: list, fold_ids, results: Path) -> Path:
    """accuracy.png: left, per epoch of every finished fold of the oct_seg recipes, training
    Dice (patches, dashed) and validation pooled Dice (whole held-out B-scans, solid); right,
    per held-out B-scan, predicted against true fluid area (pixels, log-log; fluid-free scans
    on the left edge), one colour per recipe."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    fig, (curves, areas) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name in names:
        for k in sorted(fold_ids):
            folder = results / name / f"fold_{k}"
            if (folder / "history.csv").is_file():
                h = pd.read_csv(folder / "history.csv")
                epoch = h["epoch"] + 1
                curves.plot(epoch, h["dice"], "--", color=colours[name], alpha=0.6)
                curves.plot(epoch, h["val_dice"], "-", color=colours[name],
                            label=f"{name} fold {k}")
            scans = pd.read_csv(folder / "val_scores.csv")
            areas.scatter(np.maximum(scans["truth_pixels"], 0.5),
                          np.maximum(scans["pred_pixels"], 0.5), s=14, color=colours[name],
                          alpha=0.7, label=name if k == min(fold_ids) else None)
    curves.set(xlabel="epoch", ylabel="Dice", ylim=(0, 1),
               title="training (dashed, patches) and validation pooled Dice (solid)")
    curves.legend(fontsize=8)
    lim = (0.4, 3e4)
    areas.plot(lim, lim, color="grey", lw=0.8)
    areas.set(xscale="log", yscale="log", xlim=lim, ylim=lim, xlabel="true fluid pixels",
              ylabel="predicted fluid pixels",
              title="held-out B-scans (0 drawn at 0.5; diagonal = exact area)")
    areas.legend(fontsize=8)
    fig.tight_layout()
    path = results / "accuracy.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(rows: list, fold_ids, missing: list, args) -> str:
    partial = len(fold_ids) < N_FOLDS
    ours = f' --ours-args="{" ".join(args.ours_args)}"' if args.ours_args else ""
    lines = [
        "## Accuracy on Duke DME (5 patient-wise folds of subjects 1-8)",
        "",
        (f"**Partial: folds {', '.join(map(str, sorted(fold_ids)))} of 0-{N_FOLDS - 1}** "
         "(the folds every row below has finished; the benchmark resumes where it stopped). "
         if partial else "")
        + f"Command (resumable): `.venv/bin/python bench/accuracy.py{ours}`. "
        + ("Not run yet: " + ", ".join(missing) + ". " if missing else "")
        + "Same folds for every row "
        "(`bench/results/accuracy/splits.json`); each B-scan is predicted by the fold model "
        "that did not train on its patient, at its original 496 x 768 size, threshold 0.5. "
        "Per-scan scores: `bench/results/accuracy/<recipe>/fold_K/val_scores.csv`.",
        "",
        "![learning curves and per-scan fluid areas](bench/results/accuracy/accuracy.png)",
        "",
        "| recipe | pooled Dice (all scans) | pooled Dice per fold, mean ± sd | per-image Dice, "
        "fluid scans, mean ± sd | FP pixels per fluid-free scan (scans with any) | CPU min |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        minutes = f"{r['cpu_min']:.1f}" if r["cpu_min"] < 10 else f"{r['cpu_min']:.0f}"
        cpu = (">= " if r["cpu_incomplete"] else "") + minutes + (
            " (scoring)" if "+" in r["recipe"] else "")
        lines.append(
            f"| {LABELS.get(r['recipe'], r['recipe'])} | **{r['pooled_dice']:.3f}** | "
            f"{r['fold_pooled_mean']:.3f} ± {r['fold_pooled_sd']:.3f} | ".replace("± nan", "")
            + 
            f"{r['image_dice_fluid_mean']:.3f} ± {r['image_dice_fluid_sd']:.3f} | "
            f"{r['fp_pixels_fluid_free']:.0f} ({r['fluid_free_scans_with_fp']}/"
            f"{r['n_fluid_free']}) | {cpu} |")
    lines += ["", "Per-fold pooled Dice: " + "; ".join(
        f"{r['recipe']} " + ", ".join(f"{v:.3f}" for v in r["per_fold_pooled"]) for r in rows),
        "", "CPU minutes: user + system time of the training subprocess (data loading, "
        "training, the fold's scoring), summed over the sessions of each fold and the folds; "
        "2-core machine; \">=\" where a session's time was lost (the fold's cpu.json says "
        "which)."]
    return "\n".join(lines) + "\n"


def beyond_common(rows: list) -> str:
    """Recipes that finished more folds than the common ones: their own pooled scores."""
    lines = ["Over every fold a recipe has finished (not comparable across recipes until the "
             "others catch up):", ""]
    for r in rows:
        lines.append(
            f"- {LABELS.get(r['recipe'], r['recipe'])}, folds "
            f"{', '.join(map(str, r['folds']))}: pooled Dice **{r['pooled_dice']:.3f}** "
            f"(per fold {', '.join(f'{v:.3f}' for v in r['per_fold_pooled'])}); per-image "
            f"Dice on fluid scans {r['image_dice_fluid_mean']:.3f} ± "
            f"{r['image_dice_fluid_sd']:.3f}; fluid-free scans with any fluid marked "
            f"{r['fluid_free_scans_with_fp']}/{r['n_fluid_free']}; CPU {r['cpu_min']:.0f} min")
    return "\n".join(lines) + "\n"


def experiment_row(name: str, results: Path) -> dict | None:
    """An experiment and its base recipe over the folds both finished (None if none):
    {"name", "base_name", "folds", "experiment": {...}, "base": {...}}, each of the two
    with pooled Dice, precision, sensitivity and predicted / true area from the summed
    TP / FP / FN, per-fold pooled Dice, per-image Dice on the fluid scans, pooled Dice on
    the noisy condition (val_scores_noisy.csv; None where a fold has none), CPU minutes."""
    import pandas as pd

    from oct_seg.metrics import pooled_from_table

    base = EXPERIMENTS[name][0]
    folds = finished_folds(name, results) & finished_folds(base, results)
    if not folds:
        return None
    row = {"name": name, "base_name": base, "folds": sorted(folds)}
    for key, recipe in (("experiment", name), ("base", base)):
        tables = [pd.read_csv(results / recipe / f"fold_{k}" / "val_scores.csv")
                  for k in sorted(folds)]
        scans = pd.concat(tables, ignore_index=True)
        c = pooled_from_table(scans)
        fluid = scans[scans["truth_pixels"] > 0]
        noisy = [results / recipe / f"fold_{k}" / "val_scores_noisy.csv" for k in sorted(folds)]
        row[key] = {"pooled_dice": c["dice"], "precision": c["tp"] / (c["tp"] + c["fp"]),
                    "sensitivity": c["tp"] / (c["tp"] + c["fn"]),
                    "area_ratio": (c["tp"] + c["fp"]) / (c["tp"] + c["fn"]),
                    "image_dice_fluid_mean": float(fluid["dice"].mean()),
                    "per_fold_pooled": [pooled_from_table(t)["dice"] for t in tables],
                    "noisy_pooled_dice": pooled_from_table(pd.concat(
                        [pd.read_csv(f) for f in noisy], ignore_index=True))["dice"]
                    if all(f.is_file() for f in noisy) else None,
                    "cpu_min": recipe_row(recipe, results, folds)["cpu_min"]}
    return row


def experiments_markdown(rows: list) -> str:
    """The experiments table: each value of the experiment with its base's in brackets."""
    lines = ["Recipe experiments: one change to a base recipe, scored on the folds both have "
             "finished (the same held-out B-scans); the base recipe's value in brackets.", "",
             "| experiment | folds | pooled Dice | per fold | precision | sensitivity | "
             "predicted / true area | per-image Dice, fluid scans | pooled Dice, noisy "
             "B-scans | CPU min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, b = r["experiment"], r["base"]

        def cell(key, fmt="{:.3f}"):
            shown = ["n/a" if v[key] is None else fmt.format(v[key]) for v in (e, b)]
            return f"{shown[0]} ({shown[1]})"

        per_fold = ", ".join(f"{x:.3f} ({y:.3f})"
                             for x, y in zip(e["per_fold_pooled"], b["per_fold_pooled"]))
        lines.append(f"| {LABELS.get(r['name'], r['name'])} | "
                     f"{', '.join(map(str, r['folds']))} | {cell('pooled_dice')} | {per_fold} | "
                     f"{cell('precision')} | {cell('sensitivity')} | "
                     f"{cell('area_ratio', '{:.2f}')} | {cell('image_dice_fluid_mean')} | "
                     f"{cell('noisy_pooled_dice')} | {cell('cpu_min', '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "duke_dme")
    p.add_argument("--runs", type=Path, default=REPO.parent / "runs" / "accuracy",
                   help="where the models are trained (outside the repository)")
    p.add_argument("--results", type=Path, default=HERE / "results" / "accuracy")
    p.add_argument("--recipes", default=",".join([*TRAINED, *DERIVED]))
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--ours-args", default="", help="extra `oct-seg train` arguments, e.g. "
                   "'--precision mixed_bfloat16'")
    p.add_argument("--kuc-args", default="", help="extra bench/_kuc_recipe.py arguments")
    p.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md")
    a = p.parse_args(argv)
    a.command = "python bench/accuracy.py" + ("" if argv is None and len(sys.argv) == 1
                                               else " " + " ".join(argv or sys.argv[1:]))
    a.recipes = [r for r in a.recipes.split(",") if r]
    unknown = set(a.recipes) - set(TRAINED) - set(EXPERIMENTS) - set(DERIVED)
    if unknown:
        p.error(f"unknown recipes {sorted(unknown)}; choose from "
                f"{[*TRAINED, *EXPERIMENTS, *DERIVED]}")
    a.folds = [int(k) for k in a.folds.split(",") if k]
    a.ours_args, a.kuc_args = a.ours_args.split(), a.kuc_args.split()
    a.data, a.runs, a.results = a.data.resolve(), a.runs.resolve(), a.results.resolve()
    return a


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    write_splits(args.data, args.results)
    for name in [r for r in args.recipes if r in TRAINED or r in EXPERIMENTS]:
        for k in args.folds:
            train_fold(name, k, args)
    for name in [r for r in args.recipes if r in DERIVED]:
        for k in args.folds:
            score_derived(name, k, args)
    done = {n: finished_folds(n, args.results) for n in [*TRAINED, *DERIVED]}
    started = [n for n in done if done[n]]
    common = set.intersection(*(done[n] for n in started)) if started else set()
    if common:
        rows = [recipe_row(n, args.results, common) for n in started]
        missing = [LABELS[n] for n in done if not done[n]]
        figure(started, common, args.results)
        text = markdown(rows, common, missing, args)
        more = [recipe_row(n, args.results, done[n]) | {"folds": sorted(done[n])}
                for n in started if done[n] > common]
        if more:
            text += "\n" + beyond_common(more)
        experiments = [r for n in EXPERIMENTS if (r := experiment_row(n, args.results))]
        if experiments:
            text += "\n" + experiments_markdown(experiments)
        (args.results / "summary.json").write_text(json.dumps(
            {"folds": sorted(common), "rows": rows, "experiments": experiments},
            indent=2) + "\n")
        replace_section(args.markdown, "accuracy", text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
