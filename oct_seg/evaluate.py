"""Per-image evaluation of a trained model at the scans' original size.

With ``image_size`` (the training size) each scan is resized exactly as in training
(``oct_seg.data.pipeline.fit_to_size(..., policy="resize")``), predicted in batches and the
probability map is resized back (bilinear) to the scan's H x W; without it the scan is
predicted at its own size by ``oct_seg.inference.predict_image`` (padding for any-size nets).
The mask is thresholded there and compared with the original mask (``score_table``). A
multi-class set (``ScanSet.classes``, from index.csv) needs a softmax model with one channel
per class (background + the fluid classes): each pixel takes the most probable class and the
table gains per-class Dice / Jaccard columns (oct_seg.metrics).

Noisy condition: ``add_gaussian_noise(image, noise_std, seed=(seed, name))`` on the
original-size image (the seed tuple is hashed with SHA-256), so a given scan gets the same
noise in every run, fold, subset order and program.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from oct_seg.data.pipeline import add_gaussian_noise, fit_to_size
from oct_seg.data.readers import read_dataset
from oct_seg.inference import predict_image
from oct_seg.io import write_csv
from oct_seg.loading import load_models
from oct_seg.metrics import score_table, summarize_scores
from oct_seg.rundir import RunDir, scores_name

__all__ = ["evaluate_model", "evaluate_folder", "evaluate_conditions", "summarize_conditions",
           "predict_probabilities", "noise_seed", "summarize_scores"]


def noise_seed(seed: int, name: str) -> tuple:
    """Seed of the noise added to scan ``name``: (seed, name), independent of order."""
    return (int(seed), str(name))


def _as_hw(size) -> tuple[int, int]:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be (height, width) of positive ints, got {size}")
    return size


def _fluid_channel(prob: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W) for a one-channel (sigmoid) map; (H, W, C) softmax maps as they are."""
    prob = np.asarray(prob, dtype=np.float32)
    return prob[..., 0] if prob.ndim == 3 and prob.shape[-1] == 1 else prob


def predict_probabilities(model, images, image_size=None, batch_size=2, tta=False
                          ) -> list[np.ndarray]:
    """Fluid probability maps (float32 (H, W), each the size of its input image; (H, W, C)
    class probabilities for a softmax model of C > 1 channels).

    model: a keras.Model or a list of them (an ensemble: probabilities averaged).
    images: list of float32 (H, W) arrays in [0, 1]. image_size: (h, w) the model was trained
    at (resize mode), or None to predict at native size via predict_image. tta: add the
    left-right mirrored prediction (predict_image).
    """
    if image_size is None:
        return [_fluid_channel(predict_image(model, img, batch_size=1, tta=tta))
                for img in images]
    size = _as_hw(image_size)
    step = max(1, int(batch_size))
    out = []
    for start in range(0, len(images), step):
        chunk = images[start:start + step]
        x = np.stack([np.asarray(fit_to_size(img, size, policy="resize"), np.float32)
                      .reshape(size + (1,)) for img in chunk])
        probs = predict_image(model, x, batch_size=step, tta=tta)
        for img, prob in zip(chunk, probs):
            prob = _fluid_channel(prob)
            if prob.shape != img.shape[:2]:
                prob = fit_to_size(prob, img.shape[:2], policy="resize")
            out.append(prob)
    return out


def evaluate_model(model, scans, image_size=None, noise_std=0.0, seed=0, threshold=0.5,
                   batch_size=2, tta=False) -> pd.DataFrame:
    """Per-image scores of ``model`` (a keras.Model or an ensemble list) on a ScanSet.

    Returns score_table rows (name, dice, jaccard, sensitivity, precision, truth_pixels,
    pred_pixels; for a multi-class ScanSet also dice_NAME, jaccard_NAME, ... per class) plus
    ``subject``; dice/jaccard are NaN for scans where truth and prediction are both empty.
    Summarise with ``summarize_scores(df)``. ValueError when the model's channels do not fit
    the scans' classes.
    """
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    names = list(scans.names)
    images = [np.asarray(img, np.float32) for img in scans.images]
    if noise_std > 0:
        images = [np.asarray(add_gaussian_noise(img, noise_std, seed=noise_seed(seed, n)),
                             np.float32) for img, n in zip(images, names)]
    probs = predict_probabilities(model, images, image_size=image_size, batch_size=batch_size,
                                  tta=tta)
    channels = 1 if probs[0].ndim == 2 else probs[0].shape[-1]
    if channels != scans.n_labels:
        want = (f"{scans.n_labels} (background, {', '.join(scans.classes)})" if scans.classes
                else "1 (binary fluid; a multi-class set declares its classes in index.csv)")
        raise ValueError(f"the model outputs {channels} channel(s) but the scans need {want}")
    truths = [np.asarray(m) if scans.classes else np.asarray(m) > 0 for m in scans.masks]
    df = score_table(names, truths, probs, threshold=threshold, classes=scans.classes)
    subjects = dict(zip(scans.index["name"].astype(str), scans.index["subject"]))
    df.insert(1, "subject", [subjects.get(str(n)) for n in df["name"]])
    return df


def evaluate_conditions(model, scans, noise_std, image_size=None, seed=0, threshold=0.5,
                        batch_size=2, tta=False) -> dict:
    """{condition: evaluate_model table}: "clean" (the scans as they are) and, when
    noise_std > 0, "noisy" (the seeded noise of the module docstring)."""
    pairs = [("clean", 0.0)] + ([("noisy", float(noise_std))] if noise_std else [])
    return {condition: evaluate_model(model, scans, image_size=image_size, noise_std=std,
                                      seed=seed, threshold=threshold, batch_size=batch_size,
                                      tta=tta)
            for condition, std in pairs}


def summarize_conditions(tables: dict) -> pd.DataFrame:
    """One row per (condition, metric) of {condition: score table}: mean, std, n, n_skipped
    (summarize_scores)."""
    parts = []
    for condition, df in tables.items():
        summary = summarize_scores(df).rename_axis("metric").reset_index()
        summary.insert(0, "condition", condition)
        parts.append(summary)
    return pd.concat(parts, ignore_index=True)


def evaluate_folder(model_path, data_dir, out_dir=None, image_size="auto", noise_std="auto",
                    seed=None, threshold=0.5, batch_size=2, tta=False) -> pd.DataFrame:
    """Score a saved model, or a run folder's models as an ensemble, on a data folder.

    model_path: a model file (e.g. RUN_DIR/final/model.keras), a SavedModel folder, or a run
    folder (oct_seg.loading.load_models: a cross-validation run's fold models are averaged;
    score them only on patients that none of the folds trained on). image_size / noise_std /
    seed "auto"/None: taken from the run's config.json when the model lies in (or is) a run
    folder (training size in resize mode, noisy-condition std, seed), else native size, no
    noise, seed 0. tta: add the mirrored prediction. Writes all_scores_clean.csv
    (+ all_scores_noisy.csv) and summary.csv to out_dir when given. Returns the summary: one
    row per (condition, metric) with mean, std, n, n_skipped.
    """
    model_path = Path(model_path).resolve()
    if not model_path.exists():
        raise ValueError(f"model {model_path} does not exist")
    run = RunDir(model_path) if RunDir(model_path).config.is_file() else \
        RunDir.of_model(model_path)
    cfg = run.read_config() if run is not None else {}
    if image_size == "auto":
        image_size = tuple(cfg["image_size"]) if cfg.get("image_size") else None
    if noise_std == "auto":
        noise_std = float(cfg.get("noise_std", 0.0))
    seed = int(cfg.get("seed", 0)) if seed is None else int(seed)
    models = load_models(model_path)
    tables = evaluate_conditions(models, read_dataset(data_dir), noise_std,
                                 image_size=image_size, seed=seed, threshold=threshold,
                                 batch_size=batch_size, tta=tta)
    summary = summarize_conditions(tables)
    if out_dir is not None:
        for condition, df in tables.items():
            write_csv(Path(out_dir) / scores_name("all", condition), df)
        write_csv(Path(out_dir) / "summary.csv", summary)
    return summary
