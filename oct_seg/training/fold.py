"""One fold: build and compile the network, fit (or resume) it, score it on clean and noisy scans.

Optimiser: Adam on a cosine-decay schedule (1 warm-up epoch from 0.1 x learning_rate, then
cosine down to 1 % of it at the last epoch). Chosen over ReduceLROnPlateau because the
learning rate is then a pure function of the optimiser step: the backup restores it exactly
after a kill, every worker agrees on it, and it does not react to the noise of a validation
Dice measured on one or two subjects (which already drives early stopping).
"""
from __future__ import annotations

import importlib.util
import math
import shutil
import sys
import time

import keras
import numpy as np

from oct_seg import distribute
from oct_seg._keras_compat import prepare_distributed_fit
from oct_seg.data.pipeline import Augment, make_dataset, make_patch_dataset
from oct_seg.evaluate import evaluate_conditions, predict_probabilities
from oct_seg.io import remove_stale_temps, write_csv, write_json
from oct_seg.loading import load_model
from oct_seg.losses import get_loss
from oct_seg.metrics import (DiceCoefficient, JaccardIndex, pooled_from_table,
                             summarize_scores)
from oct_seg.models.registry import build_model
from oct_seg.precision import precision_scope
from oct_seg.rundir import FoldDir
from oct_seg.training import recipe
from oct_seg.training.callbacks import (MONITOR, AtomicBackupAndRestore, AtomicCSVLogger,
                                        BestCheckpoint, FloorWarning, ResumableEarlyStopping,
                                        ScanValidation)
from oct_seg.training.config import TrainConfig
from oct_seg.training.resume import resume_state


def verbosity(verbose) -> int:
    """Keras fit verbosity: None -> a progress bar on a terminal, one line per epoch else."""
    if verbose is None:
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def resolve_recipe(config: TrainConfig, steps_per_epoch: int, train_masks=None,
                   classes=()) -> dict:
    """The concrete values oct_seg.training.recipe gives one fold (JSON-ready; trained.json
    keeps them): model_kwargs, loss_kwargs, bn_momentum, output_prior, and for a multi-class
    set its ``classes`` (the network then has a softmax over background + those classes).

    train_masks: the fold's training masks, for the BCE weight and the output prior; None
    leaves both at the loss's / builder's own defaults. classes: the fluid class names of
    the data (ScanSet.classes); () for binary fluid.
    """
    n_labels = len(classes) + 1
    model_kwargs = recipe.network_kwargs(config.model, config.model_kwargs)
    loss_kwargs = recipe.loss_kwargs(config.loss, config.loss_kwargs, train_masks, n_labels)
    momentum = (recipe.bn_momentum(steps_per_epoch) if config.bn_momentum == "auto"
                else config.bn_momentum)
    prior = None
    if config.prior_bias and train_masks is not None:
        prior = recipe.fluid_prior(train_masks, loss_kwargs.get("pos_weight", 1.0), n_labels)
    resolved = {"model_kwargs": model_kwargs, "loss_kwargs": loss_kwargs,
                "bn_momentum": momentum, "output_prior": prior}
    return {**resolved, "classes": list(classes)} if classes else resolved


def build_and_compile(config: TrainConfig, steps_per_epoch: int, strategy=None,
                      learning_rate=None, resolved: dict | None = None) -> keras.Model:
    """The configured network, compiled with the configured loss, Dice and Jaccard metrics and
    Adam, inside ``strategy``'s scope (default: the current one) and ``config.precision``.

    resolved: resolve_recipe's values (default: resolved without training masks); with
    ``classes`` in it the network ends in a softmax over background + the classes and the
    metrics pool the fluid classes (ignore_background). The network takes any input size in
    native mode (patches in training, whole B-scans in prediction) and config.image_size in
    resize mode.
    learning_rate: None -> the schedule of the module docstring over config.epochs x
    steps_per_epoch optimiser steps; else a float or a keras LearningRateSchedule used as is.
    """
    strategy = strategy if strategy is not None else distribute.get_strategy()
    resolved = resolved if resolved is not None else resolve_recipe(config, steps_per_epoch)
    size = (None, None) if config.native else tuple(config.image_size)
    n_labels = len(resolved.get("classes", [])) + 1
    kwargs = {"input_size": size + (1,), "n_labels": n_labels, **resolved["model_kwargs"]}
    if n_labels > 1:
        kwargs["output_activation"] = "Softmax"
    metric_kwargs = {"ignore_background": True} if n_labels > 1 else {}
    if learning_rate is None:
        total = max(1, config.epochs * steps_per_epoch)
        warmup = steps_per_epoch if config.epochs > 2 else 0
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.learning_rate * (0.1 if warmup else 1.0),
            decay_steps=max(1, total - warmup), alpha=0.01,
            warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)
    with strategy.scope(), precision_scope(config.precision):
        model = build_model(config.model, **kwargs)
        if resolved["bn_momentum"] is not None:
            for layer in _all_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = resolved["bn_momentum"]
        if resolved["output_prior"] is not None:
            recipe.set_output_prior(model, resolved["output_prior"])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                      loss=get_loss(config.loss, **resolved["loss_kwargs"]),
                      metrics=[DiceCoefficient(name="dice", **metric_kwargs),
                               JaccardIndex(name="jaccard", **metric_kwargs)])
    return model


def _training_data(config: TrainConfig, train, global_batch: int, seed: int):
    """The tf.data training set of the configured mode (native patches or resized scans)."""
    augment = Augment(noise=config.augment_noise) if config.augment else False
    if config.native:
        return make_patch_dataset(train.images, train.masks, config.patch_size, global_batch,
                                  augment=augment, foreground=config.foreground,
                                  seed=seed, n_labels=train.n_labels)
    return make_dataset(train.images, train.masks, image_size=config.image_size,
                        batch_size=global_batch, training=True, augment=augment,
                        seed=seed, shuffle=True, n_labels=train.n_labels)


def fit_fold(config: TrainConfig, train, val, fold: FoldDir, *, index: int = 0,
             read_from: FoldDir | None = None, strategy=None, verbose=2,
             learning_rate=None, callbacks=()) -> None:
    """Fit (or resume) one fold on ScanSets ``train`` / ``val``; leaves fold.model and
    fold.trained (and fold.history, one row per epoch).

    index: the fold number (seeds: config.seed + 1000 x index). read_from: the folder to
    resume from (the chief's, for the other workers of a multi-worker run; default ``fold``).
    val: None (or no scans) for no validation; else scored on whole B-scans after every epoch
    (ScanValidation). config.checkpoint "best" keeps the epoch of the best validation Dice and
    stops early; "last" keeps the end of the schedule. learning_rate: see build_and_compile.
    callbacks: extra Keras callbacks, after the fold's own.
    """
    read_from = read_from or fold
    strategy = strategy if strategy is not None else distribute.get_strategy()
    val = val if val is not None and len(val) else None
    if config.checkpoint == "best" and val is None:
        raise ValueError("checkpoint='best' needs validation scans to choose the epoch")
    monitor = MONITOR if config.checkpoint == "best" else None
    resume = resume_state(read_from, config.patience)
    if resume.epoch == 0 and fold.path.exists():  # stale partial files of a killed first epoch
        shutil.rmtree(fold.backup, ignore_errors=True)
        fold.history.unlink(missing_ok=True)
        fold.model.unlink(missing_ok=True)
    fold.path.mkdir(parents=True, exist_ok=True)
    replicas = distribute.num_replicas(strategy)
    global_batch = config.batch_size * replicas
    steps = math.ceil(len(train.names) / global_batch)
    seed = config.seed + 1000 * index
    distribute.seed_everything(seed, config.deterministic)
    train_ds = _training_data(config, train, global_batch, seed)
    resolved = resolve_recipe(config, steps, train.masks, train.classes)
    model = build_and_compile(config, steps, strategy, learning_rate, resolved)
    done = resume.epoch >= config.epochs or resume.stopped
    fit_callbacks = [keras.callbacks.TerminateOnNaN()]
    if val is not None:
        fit_callbacks.append(ScanValidation(val, lambda m, images: predict_probabilities(
            m, images, image_size=config.image_size, batch_size=max(2, config.batch_size)),
            threshold=config.threshold))
    fit_callbacks += [
        AtomicCSVLogger(fold.history, rows=resume.rows),
        FloorWarning(fold.name, rows=resume.rows),
        AtomicBackupAndRestore(fold.backup, restore_dir=read_from.backup),
        BestCheckpoint(fold.model, monitor=monitor, best=resume.best,
                       save_on_begin=resume.save_on_begin and monitor is not None,
                       verbose=verbose),
    ]
    if monitor is not None:
        fit_callbacks.append(ResumableEarlyStopping(
            monitor=monitor, mode="max", patience=config.patience,
            initial_best=resume.best if resume.rows else None,
            initial_best_epoch=resume.best_epoch, initial_wait=resume.wait, verbose=verbose))
    if importlib.util.find_spec("tensorboard") is not None:  # tf.summary needs the package
        fit_callbacks.append(keras.callbacks.TensorBoard(log_dir=str(fold.tensorboard),
                                                         write_graph=False))
    if resume.epoch:
        print(f"[oct_seg] {fold.name}: resuming after epoch {resume.epoch}", flush=True)
    prepare_distributed_fit(model, train_ds, strategy)
    # done: killed after the last backup but before trained.json -> a zero-epoch fit only
    # restores the backup and repairs model.keras (BestCheckpoint save_on_begin / on_train_end)
    model.fit(train_ds, epochs=resume.epoch if done else config.epochs,
              initial_epoch=resume.epoch, steps_per_epoch=steps,
              callbacks=fit_callbacks + list(callbacks), verbose=verbose, shuffle=False)
    hist = fold.read_history()
    nan_stop = hist is not None and not np.isfinite(hist["loss"].iloc[-1])
    best_val = float(hist[MONITOR].max()) if hist is not None and MONITOR in hist else float("nan")
    write_json(fold.trained, {
        "epochs_run": 0 if hist is None else int(len(hist)),
        "best_epoch": None if hist is None or not np.isfinite(best_val)
        else int(hist.loc[hist[MONITOR].idxmax(), "epoch"]),
        "best_val_dice": best_val,
        "last_val_dice": float(hist[MONITOR].iloc[-1]) if hist is not None and MONITOR in hist
        else float("nan"),
        "checkpoint": config.checkpoint,
        "stopped": "nan" if nan_stop else ("early" if hist is not None and len(hist)
                                           < config.epochs else "completed"),
        "replicas": replicas, "global_batch": global_batch, "steps_per_epoch": steps,
        "recipe": resolved})
    shutil.rmtree(fold.backup, ignore_errors=True)
    keras.backend.clear_session(free_memory=True)


def score_parts(model, parts: dict, config: TrainConfig, fold: FoldDir) -> dict:
    """Score ``model`` on each ScanSet of ``parts`` ({part name: scans}) under the clean and
    (config.noise_std > 0) noisy condition at the scans' original size; writes
    fold.scores(part, condition) and returns {(part, condition): score table}."""
    tables = {}
    for part, scans in parts.items():
        by_condition = evaluate_conditions(
            model, scans, config.noise_std, image_size=config.image_size, seed=config.seed,
            threshold=config.threshold, batch_size=max(2, config.batch_size))
        for condition, df in by_condition.items():
            write_csv(fold.scores(part, condition), df)
            tables[(part, condition)] = df
    return tables


def evaluate_fold(split: dict, scans, config: TrainConfig, model_path, fold: FoldDir) -> dict:
    """Score the saved model of a fold on its train and val scans; returns
    {"{part}_{condition}_{metric}": mean over the scans}."""
    model = load_model(model_path)
    parts = {part: scans.subset(split[part]) for part in ("train", "val") if split[part]}
    result = {}
    for (part, condition), df in score_parts(model, parts, config, fold).items():
        summary = summarize_scores(df)
        for metric in summary.index:  # SCORE_NAMES, then any per-class scores
            result[f"{part}_{condition}_{metric}"] = float(summary.loc[metric, "mean"])
        pooled = pooled_from_table(df, scans.classes)
        result[f"{part}_{condition}_pooled_dice"] = pooled["dice"]
        for name in scans.classes:
            result[f"{part}_{condition}_pooled_dice_{name}"] = pooled[f"dice_{name}"]
    return result


def run_fold(k: int, split: dict, scans, config: TrainConfig, read_from: FoldDir,
             fold: FoldDir, strategy, verbose) -> None:
    """Fold k from wherever it stopped: skipped when finished (fold.json), re-scored when
    trained (trained.json), else fitted or resumed; fold.json is written last."""
    if read_from.finished:
        print(f"[oct_seg] {read_from.name}: already complete, skipped", flush=True)
        return
    started = time.time()
    if fold.path.exists():
        remove_stale_temps(fold.path)  # temp files of a killed session
    if not read_from.trained.is_file():
        fit_fold(config, scans.subset(split["train"]), scans.subset(split["val"]), fold,
                 index=k, read_from=read_from, strategy=strategy, verbose=verbose)
    model_path = fold.model if fold.model.exists() else read_from.model
    result = evaluate_fold(split, scans, config, model_path, fold)
    trained = (fold if fold.trained.exists() else read_from).read_trained()
    write_json(fold.done, {"fold": k, "n_train": len(split["train"]),
                           "n_val": len(split["val"]), **trained, **result,
                           "seconds_last_session": round(time.time() - started, 1)})
    keras.backend.clear_session(free_memory=True)
