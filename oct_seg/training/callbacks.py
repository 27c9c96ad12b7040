"""Training callbacks that survive a kill at any instant and resume exactly.

Keras' own BackupAndRestore, CSVLogger, ModelCheckpoint and EarlyStopping write files in place
or keep their state in memory, so a killed fit leaves a partial file or forgets where it was.
These write every file atomically (oct_seg.io) and take their state back from the fold folder
(oct_seg.training.resume). The epoch granularity is one epoch: Keras restores epochs, not
batches.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from oct_seg._keras_compat import set_fit_start_epoch
from oct_seg.io import atomic_write, write_csv, write_json

MONITOR = "val_dice"  # selects the best epoch and drives early stopping (mode max)


class AtomicBackupAndRestore(keras.callbacks.Callback):
    """A backup after every epoch that survives a kill at any instant; restored at fit start.

    Weights (with the optimiser state, hence its step and the learning-rate schedule) go to
    ``epoch_E.weights.h5`` (temp + rename), then ``state.json`` (temp + rename) names them;
    older weight files are removed afterwards. Restores from ``restore_dir`` (the chief's
    folder, for every worker) and writes to ``backup_dir``.
    """

    def __init__(self, backup_dir, restore_dir=None):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.restore_dir = Path(restore_dir or backup_dir)

    @staticmethod
    def read_state(directory) -> dict | None:
        """{"epoch": finished epochs, "weights": file name} of a backup folder, or None."""
        path = Path(directory) / "state.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def on_train_begin(self, logs=None):
        state = self.read_state(self.restore_dir)
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(self.restore_dir / state["weights"]))
        set_fit_start_epoch(self.model, state["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        finished = epoch + 1
        name = f"epoch_{finished}.weights.h5"
        atomic_write(self.backup_dir / name,
                     lambda tmp: self.model.save_weights(str(tmp), overwrite=True))
        write_json(self.backup_dir / "state.json", {"epoch": finished, "weights": name})
        for old in self.backup_dir.glob("epoch_*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


class AtomicCSVLogger(keras.callbacks.Callback):
    """CSVLogger replacement: rewrites history.csv atomically after every epoch.

    Keras' CSVLogger appends to an open file, so a kill leaves a partial row and a resumed
    fit either repeats or loses rows. Here the rows of epochs before the resume point are
    passed in (``rows``), the file always holds exactly the finished epochs, and the epoch
    number is a column.
    """

    def __init__(self, path, rows=()):
        super().__init__()
        self.path = Path(path)
        self.rows = [dict(r) for r in rows]

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        lr = self.model.optimizer.learning_rate
        row["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        write_csv(self.path, pd.DataFrame(self.rows))


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model (temp + rename) whenever ``monitor`` improves (mode max).

    best: value to beat (from history.csv on resume). save_on_begin: save right after the
    backup was restored -- used when the last finished epoch is the best one, so a kill
    between the backup and this save loses nothing. Saves the final model if no epoch gave
    a finite value (e.g. validation without any fluid), and only the final model with
    ``monitor=None``.
    """

    def __init__(self, path, monitor=MONITOR, best=-np.inf, save_on_begin=False, verbose=0):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best, self.save_on_begin, self.verbose = float(best), save_on_begin, verbose

    def _save(self):
        atomic_write(self.path, lambda tmp: self.model.save(str(tmp)))

    def on_train_begin(self, logs=None):
        if self.save_on_begin:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value) and value > self.best:
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.4f} "
                      f"to {value:.4f}, saving {self.path}", flush=True)
            self.best = float(value)
            self._save()

    def on_train_end(self, logs=None):
        if self.monitor is None or not self.path.exists():
            self._save()


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose best value / wait counter can be restored after a resume."""

    def __init__(self, *, initial_best=None, initial_best_epoch=0, initial_wait=0, **kwargs):
        super().__init__(**kwargs)
        self._init = (initial_best, int(initial_best_epoch), int(initial_wait))

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best, self.best_epoch, self.wait = self._init


class ScanValidation(keras.callbacks.Callback):
    """Validation on whole B-scans, scored the way the fold is scored afterwards.

    After every epoch, ``predict(model, images)`` gives a probability map per validation scan
    at its original size (oct_seg.evaluate.predict_probabilities: native size with padding,
    or the training size resized back); the pooled Dice and Jaccard over the scans
    (oct_seg.metrics.pooled_scores; for a multi-class ScanSet the means over its fluid
    classes, and each class's Dice as ``val_dice_NAME``) go into the epoch logs as
    ``val_dice`` / ``val_jaccard``, where the history logger, the checkpoint and early
    stopping read them. Must come before
    them in the callback list (Keras passes one logs dict along the list). Patches would not
    do here: they are cut at random and miss the lateral ends that the graders left
    unlabelled.
    """

    def __init__(self, scans, predict, threshold=0.5):
        super().__init__()
        self.scans, self.predict, self.threshold = scans, predict, float(threshold)

    def on_epoch_end(self, epoch, logs=None):
        from oct_seg.metrics import pooled_scores

        probs = self.predict(self.model, self.scans.images)
        classes = self.scans.classes
        truths = self.scans.masks if classes else [m > 0 for m in self.scans.masks]
        scores = pooled_scores(truths, probs, self.threshold, classes)
        if logs is not None:
            logs["val_dice"], logs["val_jaccard"] = scores["dice"], scores["jaccard"]
            logs.update({f"val_dice_{name}": scores[f"dice_{name}"] for name in classes})


class FloorWarning(keras.callbacks.Callback):
    """Warn once when the training Dice has been 0 for ``epochs`` epochs in a row.

    A network at the all-background output (every pixel below the threshold) scores training
    Dice 0.000 and, in the runs measured so far, did not recover later in the schedule (the
    ReLU head trap in oct_seg.training.recipe: 60 epochs at 0.000). Under the default recipe
    the networks leave 0 within ~60 optimiser steps (the weighted BCE alone is the slowest),
    so ``epochs`` = 10 (170 steps on the Duke folds) leaves room for slow starters while
    saving most of a doomed run. It only warns: the run goes on. ``rows``: the history of
    epochs before a resume (their Dice continues the count); ``label`` names the fold.
    """

    def __init__(self, label: str, rows=(), epochs: int = 10):
        super().__init__()
        self.label, self.epochs = label, int(epochs)
        self.dice = [float(r["dice"]) for r in rows if "dice" in r]
        self.warned = self._at_floor()

    def _at_floor(self) -> bool:
        recent = self.dice[-self.epochs:]
        return len(recent) == self.epochs and max(recent) == 0.0

    def on_epoch_end(self, epoch, logs=None):
        self.dice = self.dice[:epoch] + [float((logs or {}).get("dice", np.nan))]
        if not self.warned and self._at_floor():
            self.warned = True
            print(f"[oct_seg] WARNING {self.label}: training Dice 0.000 for {self.epochs} epochs "
                  "in a row: the network marks no fluid (the all-background output) and is "
                  "unlikely to recover; see oct_seg/training/recipe.py for the known causes",
                  flush=True)
