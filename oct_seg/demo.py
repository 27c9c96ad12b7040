"""`oct-seg demo`: the whole pipeline in a few CPU minutes on synthetic OCT phantoms.

Default network: TransUNet (build_transunet) at 128 x 128 with CNN filters [16, 32, 64],
3 levels, 4 x 4 patches (so an 8 x 8 token grid), 2 transformer blocks of width 64 (2 heads,
MLP 128) -- about 0.2 M parameters instead of the paper's ~100 M at 512 x 512.
Data: 6 phantom subjects x 8 B-scans of 248 x 384 pixels (half the Duke size): subjects 1-4
train, 5-6 are the held-out test set (their validation curves are only watched: no early
stopping or checkpoint selection uses them). Loss: the paper's combined loss (Dice + focal
Tversky + weighted BCE with fluid weight (1 - f) / f from the training masks, capped at 20);
Adam at 3e-4 (1e-3 collapses to all-background on these phantoms), constant for 60 % of the
time budget, then cosine-decayed to 10 % so the last epoch's weights are settled. Training
stops when the time budget (--minutes, default 3) would be exceeded by another epoch.
`--quick` shrinks everything (and skips the validation curves) to finish in seconds (tests).

Training is oct_seg.training.fit_fold (the per-fold step of `oct-seg train`) with the last
epoch kept (checkpoint "last") and the time budget as an extra callback; the test subjects are scored
like a fold's (score_parts). Run folder (a FoldDir, see oct_seg.rundir): config.json,
model.keras, history.csv, trained.json, curves.png, test_scores_clean.csv, test_scores_noisy.csv
(noise std 0.1), summary.csv, comparison.png (truth green, prediction red, the 6 test scans with
most fluid), predictions/ (`oct-seg predict` output for the test B-scans: masks, overlays, fluid
CSVs), savedmodel/ (exported), data/ (the phantoms, if made).

``fluid_types=True`` (--fluid-types) makes the phantoms multi-class (IRF, SRF, PED:
oct_seg.data.phantom) and trains a softmax over them; a multi-class --data folder does the
same. The BCE then takes the recipe's per-class weights instead of the capped fluid weight.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

SETTINGS = {
    "default": dict(
        image_size=(128, 128), batch_size=4, learning_rate=3e-4, minutes=3.0, max_epochs=500,
        n_subjects=6, n_test_subjects=2, per_subject=8, phantom_size=(248, 384), noise_std=0.1,
        model_kwargs=dict(filter_num=[16, 32, 64], embed_dim=64, num_mlp=128, num_heads=2,
                          num_transformer=2, patch_size=(4, 4))),
    "quick": dict(
        image_size=(32, 32), batch_size=2, learning_rate=1e-3, minutes=0.2, max_epochs=1,
        n_subjects=3, n_test_subjects=1, per_subject=2, phantom_size=(40, 48), noise_std=0.1,
        model_kwargs=dict(filter_num=[4, 8], embed_dim=8, num_mlp=16, num_heads=1,
                          num_transformer=1, patch_size=(2, 2))),
}
LOSS = "combined"
POS_WEIGHT_CAP = 20.0  # weighted-BCE fluid weight (1 - f) / f, capped: phantoms have f ~ 0.7 %
HOLD, FINAL_LR = 0.6, 0.1  # constant LR for 60 % of the budget, then cosine down to 10 %
N_COMPARISON = 6


def _time_budget_callback(seconds: float, learning_rate: float):
    import keras

    class TimeBudget(keras.callbacks.Callback):
        """Learning rate constant for HOLD of the time budget, then cosine decay to FINAL_LR
        of it (so the final weights are settled); stop before the epoch that would end
        after `seconds` from the start of fit."""

        def on_train_begin(self, logs=None):
            self.start = self.last = time.monotonic()
            self.stopped_for_time = False

        def on_epoch_begin(self, epoch, logs=None):
            done = min(1.0, (time.monotonic() - self.start) / seconds)
            decay = max(0.0, (done - HOLD) / (1.0 - HOLD))
            factor = FINAL_LR + (1.0 - FINAL_LR) * 0.5 * (1.0 + math.cos(math.pi * decay))
            self.model.optimizer.learning_rate.assign(learning_rate * factor)

        def on_epoch_end(self, epoch, logs=None):
            now = time.monotonic()
            epoch_time, self.last = now - self.last, now
            if now - self.start + epoch_time > seconds:
                self.model.stop_training = True
                self.stopped_for_time = True

    return TimeBudget()


def _split(scans, n_test: int):
    subjects = sorted(scans.index["subject"].unique())
    if len(subjects) < 2:
        raise ValueError("the demo needs data from at least 2 subjects (index.csv 'subject')")
    n_test = min(n_test, len(subjects) - 1)
    test_subjects = set(subjects[-n_test:])
    is_test = scans.index["subject"].isin(test_subjects).to_numpy()
    names = np.asarray(scans.names)
    return scans.subset(list(names[~is_test])), scans.subset(list(names[is_test]))


def _image_files(data_dir: Path, names) -> list[Path]:
    files = []
    for name in names:
        found = sorted((data_dir / "images").glob(f"{name}.*"))
        if not found:
            raise FileNotFoundError(f"{data_dir / 'images'}: no image file for scan {name}")
        files.append(found[0])
    return files


def run_demo(out="demo_run", data=None, minutes=None, quick=False, seed=0, overwrite=False,
             verbose=True, fluid_types=False) -> dict:
    """Train, evaluate and export the demo TransUNet into run folder `out`.

    data: labelled data folder (images/, masks/, optional index.csv) or None for synthetic phantoms.
    fluid_types: multi-class phantoms (IRF, SRF, PED) instead of binary ones.
    minutes: training time budget (default from SETTINGS). Returns {name: Path} of the
    outputs plus "summary" (DataFrame) and "seconds" (wall time).
    """
    from PIL import Image

    from oct_seg.data.readers import read_dataset
    from oct_seg.evaluate import summarize_conditions
    from oct_seg.export import export_model
    from oct_seg.io import atomic_dir, write_csv, write_json
    from oct_seg.loading import load_model
    from oct_seg.losses import pos_weight_from_masks
    from oct_seg.plots import plot_curves, plot_grid
    from oct_seg.predict import predict_files
    from oct_seg.rundir import FoldDir, scores_name
    from oct_seg.training import TrainConfig, fit_fold, score_parts

    started = time.monotonic()
    s = dict(SETTINGS["quick" if quick else "default"])
    if minutes is not None:
        if minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {minutes}")
        s["minutes"] = float(minutes)
    out = Path(out)
    say = print if verbose else (lambda *a, **k: None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if data is None:
            from oct_seg.data.phantom import write_phantom_dataset

            h, w = s["phantom_size"]
            say(f"writing {s['n_subjects']} x {s['per_subject']} synthetic phantom B-scans "
                f"({h} x {w})")
            data_dir = write_phantom_dataset(tmp / "data", n_subjects=s["n_subjects"],
                                             per_subject=s["per_subject"], height=h, width=w,
                                             seed=seed, fluid_types=fluid_types)
            data_dir = Path(data_dir)
        else:
            data_dir = Path(data)
        scans = read_dataset(data_dir)
        train, test = _split(scans, s["n_test_subjects"])
        # multi-class: the recipe's per-class weights (oct_seg.training.recipe)
        pos_weight = None if train.classes else pos_weight_from_masks(train.masks,
                                                                      cap=POS_WEIGHT_CAP)
        # no early stopping (checkpoint "last"): the time budget ends the fit
        config = TrainConfig(model="transunet", model_kwargs=s["model_kwargs"], loss=LOSS,
                             loss_kwargs={} if train.classes else {"pos_weight": pos_weight},
                             image_size=s["image_size"],
                             epochs=s["max_epochs"], batch_size=s["batch_size"],
                             learning_rate=s["learning_rate"], seed=seed, n_folds=1,
                             checkpoint="last", noise_std=s["noise_std"], augment=True)
        run = FoldDir(tmp)
        budget = _time_budget_callback(60.0 * s["minutes"], s["learning_rate"])
        say(f"training TransUNet ({config.image_size[0]} x {config.image_size[1]}) on "
            f"{len(train.names)} B-scans for up to {s['minutes']:g} min")
        fit_start = time.monotonic()
        # the test subjects are only watched (validation curves): checkpoint "last" keeps the
        # last epoch, and the time-budget callback drives a constant-then-cosine learning rate
        fit_fold(config, train, None if quick else test, run, verbose=2 if verbose else 0,
                 learning_rate=s["learning_rate"], callbacks=[budget])
        train_seconds = time.monotonic() - fit_start
        hist = run.read_history()
        plot_curves({"demo": hist}, tmp / "curves.png")
        model = load_model(run.model)

        tables = score_parts(model, {"test": test}, config, run)
        scores = {condition: df for (_, condition), df in tables.items()}
        summary = summarize_conditions(scores)
        write_csv(tmp / "summary.csv", summary)

        predict_files(model, _image_files(data_dir, test.names), tmp / "predictions",
                      progress=False, classes=test.classes)
        # the comparison figure shows the test scans with the most true fluid
        fluid = [int(np.count_nonzero(m)) for m in test.masks]
        shown = sorted(range(len(test.names)), key=lambda i: -fluid[i])[:N_COMPARISON]
        pred_masks = [np.asarray(Image.open(tmp / "predictions" / "masks" /
                                            f"{test.names[i]}.png")) > 0 for i in shown]
        dice = scores["clean"].set_index("name")["dice"]
        plot_grid([test.images[i] for i in shown], [test.masks[i] for i in shown], pred_masks,
                  titles=[f"{test.names[i]}  Dice {dice[test.names[i]]:.2f}" for i in shown],
                  out_png=tmp / "comparison.png")
        export_model(model, tmp / "savedmodel")

        write_json(tmp / "config.json", dict(
            network="transunet", loss=LOSS, pos_weight=pos_weight, seed=seed, quick=bool(quick),
            data=str(data) if data is not None else "synthetic phantoms (data/)",
            train_scans=list(train.names), test_scans=list(test.names), epochs_run=len(hist),
            stopped_for_time=budget.stopped_for_time, train_seconds=round(train_seconds, 1),
            parameters=int(model.count_params()), **s))
    out = out.absolute()
    seconds = time.monotonic() - started
    paths = {name: out / rel for name, rel in (
        ("run", "."), ("model", "model.keras"), ("savedmodel", "savedmodel"),
        ("summary_csv", "summary.csv"), ("scores", scores_name("test", "clean")),
        ("curves", "curves.png"), ("comparison", "comparison.png"),
        ("overlays", "predictions/overlays"), ("fluid_csv", "predictions/fluid_areas.csv"))}
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        say(f"\ntest-set scores ({len(test.names)} B-scans of held-out subjects):")
        say(summary.to_string(index=False))
    say(f"\ndemo finished in {seconds / 60:.1f} min; run folder {paths['run'].resolve()}")
    for name in ("model", "savedmodel", "summary_csv", "curves", "comparison", "overlays",
                 "fluid_csv"):
        say(f"  {name:12s} {paths[name].resolve()}")
    return dict(paths, summary=summary, seconds=seconds)


def run_preset_demo(out="demo_preset", data=None, preset="duke_dme_fluid", seed=0,
                    overwrite=False, verbose=True) -> dict:
    """Show a pretrained preset (oct_seg.presets) on B-scans without any training.

    data: a labelled data folder (e.g. `oct-seg data duke` of the full Duke release: its
    subjects 9 and 10 are not among the preset's 8 training subjects). The N_COMPARISON
    B-scans with the most true fluid, preferring subjects the preset did not train on, are
    segmented by `oct-seg predict`'s code and shown against the truth with their Dice and a
    "seen in training" mark. Without data: a 25-B-scan 496 x 768 phantom volume (a multi-page
    TIFF with its mm spacing) gives the volume outputs (fluid mm^3, en-face map, ETDRS report);
    phantoms are not real B-scans, and a model trained on Spectralis B-scans finds little of
    their fluid, which the summary states.
    Writes into `out`: predictions/ (masks, overlays, fluid CSVs, reports), comparison.png
    (truth green, prediction red), scores.csv (per shown B-scan: Dice, Jaccard, sensitivity,
    precision against the truth) and, without data, the input phantom_volume.tif. Returns {name: Path} plus "scores" (DataFrame) and "seconds".
    """
    import tifffile
    from PIL import Image

    from oct_seg.data.phantom import make_phantom_volume
    from oct_seg.data.readers import read_dataset
    from oct_seg.io import atomic_dir, write_csv
    from oct_seg.metrics import case_scores
    from oct_seg.plots import plot_grid
    from oct_seg.predict import predict_files
    from oct_seg.presets import from_preset, preset_metadata

    started = time.monotonic()
    say = print if verbose else (lambda *a, **k: None)
    meta = preset_metadata(preset)
    model = from_preset(preset)
    seen = set(meta["trained_on"].get("subject_ids", []))
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if data is not None:
            scans = read_dataset(data)
            subjects = [str(s) for s in scans.index["subject"]]
            fluid = [int(np.count_nonzero(m)) for m in scans.masks]
            order = sorted(range(len(scans.names)), key=lambda i: (subjects[i] in seen, -fluid[i]))
            shown = order[:N_COMPARISON]
            names = [scans.names[i] for i in shown]
            images, truths = [scans.images[i] for i in shown], [scans.masks[i] for i in shown]
            marks = ["seen in training" if subjects[i] in seen else "unseen subject"
                     for i in shown]
            inputs = _image_files(Path(data), names)
            source = f"{len(names)} B-scans of {data}"
        else:
            bscans, labels, spacing, _ = make_phantom_volume(seed, n_bscans=25, height=496,
                                                             width=768)
            tif = tmp / "phantom_volume.tif"
            tifffile.imwrite(tif, (bscans * 255).astype(np.uint8), imagej=True,
                             resolution=(1 / spacing[0], 1 / spacing[1]),
                             metadata={"spacing": spacing[2], "unit": "mm"})
            shown = sorted(range(len(labels)), key=lambda k: -int(labels[k].sum()))[:N_COMPARISON]
            names = [f"phantom_volume_b{k:03d}" for k in shown]
            images, truths = [bscans[k] for k in shown], [labels[k] for k in shown]
            marks = ["synthetic phantom"] * len(shown)
            inputs = [tif]
            source = "a synthetic 25-B-scan phantom volume (not real OCT)"
        say(f"segmenting {source} with preset {preset!r} (no training)")
        predict_files(model, inputs, tmp / "predictions", progress=False)
        preds = [np.asarray(Image.open(tmp / "predictions" / "masks" / f"{n}.png")) > 0
                 for n in names]
        rows = [{"name": n, "source": m, **case_scores(t, p)}
                for n, m, t, p in zip(names, marks, truths, preds)]
        scores = pd.DataFrame(rows)
        write_csv(tmp / "scores.csv", scores)
        plot_grid(images, truths, preds, out_png=tmp / "comparison.png",
                  titles=[f"{n}  Dice {r['dice']:.2f}  ({m})"
                          for n, r, m in zip(names, rows, marks)])
    out = out.absolute()
    paths = {"run": out, "comparison": out / "comparison.png", "scores_csv": out / "scores.csv",
             "predictions": out / "predictions",
             "fluid_csv": out / "predictions" / "fluid_areas.csv"}
    seconds = time.monotonic() - started
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        say(scores[["name", "source", "dice", "jaccard"]].to_string(index=False))
    if data is None:
        say("note: phantoms are drawn shapes, not OCT; the preset learned real Spectralis "
            "B-scans, so it misses most phantom fluid. See it on real data with --data "
            "(e.g. `oct-seg data duke` of the Duke release: subjects 9 and 10 are unseen).")
    say(f"\npreset demo finished in {seconds:.0f} s; folder {out}")
    for name in ("comparison", "scores_csv", "predictions", "fluid_csv"):
        say(f"  {name:12s} {paths[name]}")
    return dict(paths, scores=scores, seconds=seconds)
