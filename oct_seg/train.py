"""Training: k-fold cross-validation and the final (deployment) model, resumable.

``train(data_dir, run_dir, **fields)`` builds a :class:`TrainConfig` and dispatches on
``n_folds``: 1 -> :func:`train_final` (one model on all scans; a held-out share of subjects,
``val_fraction``, only drives early stopping and the best checkpoint), k >= 2 ->
:func:`cross_validate` (folds by subject from ``oct_seg.data.splits.make_folds``).

Optimiser: Adam on a cosine-decay schedule (1 warm-up epoch from 0.1 x learning_rate, then
cosine down to 1 % of it at the last epoch). Chosen over ReduceLROnPlateau because the
learning rate is then a pure function of the optimiser step: BackupAndRestore restores it
exactly after a kill, every worker agrees on it, and it does not react to the noise of a
validation Dice measured on one or two subjects (which already drives early stopping).

Run directory (every file written atomically: temp file + rename)::

    RUN_DIR/config.json          TrainConfig + data folder + versions (rerun = same call)
    RUN_DIR/splits.json          [{"train": names, "val": names}, ...] (one per fold)
    RUN_DIR/summary.csv          set x condition x metric: mean, std over folds, per-fold values
    RUN_DIR/curves.png           Dice, Jaccard, loss per epoch (train solid, val dashed)
    RUN_DIR/fold_K/ (or final/)  model.keras       best epoch by validation Dice
                                 history.csv       one row per finished epoch
                                 {train,val}_scores_{clean,noisy}.csv  per-image, original size
                                 trained.json      fit finished (best epoch, stop reason)
                                 fold.json         fold finished (written last)
                                 tensorboard/      TensorBoard logs (if it is installed)
                                 backup/           BackupAndRestore state while training

Resume: the same call on an existing RUN_DIR skips folds with fold.json, re-evaluates folds
with trained.json, and continues an interrupted fit from the last backup (granularity: one
epoch -- Keras restores epochs, not batches, so batch-level backups would only replay part of
an epoch from mid-epoch weights; at most one epoch is lost). history.csv is truncated to the
restored epoch, the best-Dice and early-stopping state are rebuilt from it, so nothing is
written twice or lost. A different config raises ValueError; ``overwrite=True`` starts anew.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from oct_seg import distribute
from oct_seg.data.pipeline import make_dataset
from oct_seg.data.readers import read_dataset
from oct_seg.data.splits import make_folds, read_splits, write_splits
from oct_seg.evaluate import evaluate_model
from oct_seg.losses import get_loss
from oct_seg.metrics import DiceCoefficient, JaccardIndex, summarize_scores
from oct_seg.models.registry import MODELS, PRESETS, build_model
from oct_seg.plots import plot_curves
from oct_seg.precision import check_precision, precision_scope

__all__ = ["TrainConfig", "train", "cross_validate", "train_final", "fold_dir", "summarize_run"]

MONITOR = "val_dice"
_NOT_IDENTITY = ("folds",)  # which folds to run may change between calls on one run dir


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run (JSON round trip: to_dict / from_dict).

    batch_size is per replica (global = batch_size x replicas). image_size (h, w) is the
    training size: scans are resized to it; scores are computed back at original size.
    folds: which fold indices to run (None = all); val_fraction: held-out share of subjects
    when n_folds == 1. noise_std: std of the additive Gaussian noise of the noisy test
    condition (images in [0, 1]; 0 = no noisy condition). deterministic: TF op determinism.
    bn_momentum: if set, the momentum of every BatchNormalization layer (None = the builder's
    0.99). Short runs need it lower (e.g. 0.9): after ~200 steps a 0.99 moving variance still
    carries ~15 % of its initial 1.0, so inference-mode outputs differ from training mode.
    precision: "float32", "mixed_bfloat16" or "mixed_float16" (oct_seg.precision); the saved
    model keeps it.
    """

    model: str = "unet"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    loss: str = "combined"
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    image_size: tuple = (256, 256)
    epochs: int = 50
    batch_size: int = 4
    learning_rate: float = 1e-3
    seed: int = 0
    n_folds: int = 5
    folds: list | None = None
    val_fraction: float = 0.2
    patience: int = 10
    noise_std: float = 0.1
    augment: bool = True
    deterministic: bool = False
    threshold: float = 0.5
    bn_momentum: float | None = None
    precision: str = "float32"

    def __post_init__(self):
        size = tuple(int(s) for s in np.atleast_1d(self.image_size))
        if len(size) == 1:
            size = size * 2
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"image_size must be (height, width) >= 8, got {self.image_size!r}")
        self.image_size = size
        for name in ("epochs", "batch_size", "n_folds"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
            setattr(self, name, int(getattr(self, name)))
        if self.model not in MODELS and self.model not in PRESETS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)} "
                             f"or a preset {sorted(PRESETS)}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if float(self.noise_std) < 0 or float(self.learning_rate) <= 0:
            raise ValueError("noise_std must be >= 0 and learning_rate > 0")
        if self.folds is not None:
            folds = sorted({int(k) for k in np.atleast_1d(self.folds)})
            if not folds or folds[0] < 0 or folds[-1] >= self.n_folds:
                raise ValueError(f"folds must be indices in 0..{self.n_folds - 1}, "
                                 f"got {self.folds!r}")
            self.folds = folds
        self.model_kwargs = dict(self.model_kwargs or {})
        self.loss_kwargs = dict(self.loss_kwargs or {})
        self.seed, self.patience = int(self.seed), int(self.patience)
        self.learning_rate, self.val_fraction = float(self.learning_rate), float(self.val_fraction)
        self.noise_std, self.threshold = float(self.noise_std), float(self.threshold)
        if self.bn_momentum is not None:
            self.bn_momentum = float(self.bn_momentum)
            if not 0.0 < self.bn_momentum < 1.0:
                raise ValueError(f"bn_momentum must be in (0, 1) or None, got {self.bn_momentum}")
        check_precision(self.precision)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of to_dict; also accepts a whole config.json ({"config": {...}, ...})."""
        d = d.get("config", d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------- files
def _tmp_path(path: Path) -> Path:
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def _write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    _write_text(path, df.to_csv(index=False))


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fold_dir(run_dir, fold: int, n_folds: int) -> Path:
    """RUN_DIR/fold_K, or RUN_DIR/final for n_folds == 1."""
    return Path(run_dir) / ("final" if n_folds == 1 else f"fold_{fold}")


def _versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("oct_seg", "keras", "tensorflow", "tensorflow-cpu", "numpy", "scikit-learn",
                "scikit-image", "pandas"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- callbacks
class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore (save_freq="epoch") whose backup survives a kill at any instant.

    Weights go to ``epoch_E.weights.h5`` (temp + rename), then ``state.json`` (temp + rename)
    names them; older weight files are removed afterwards. Restores from ``restore_dir``
    (the chief's folder, for every worker) and writes to ``backup_dir``. The optimiser state
    (incl. its step, hence the learning-rate schedule) is part of the weights file.
    """

    def __init__(self, backup_dir, restore_dir=None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.restore_dir = Path(restore_dir or backup_dir)

    @staticmethod
    def read_state(directory) -> dict | None:
        path = Path(directory) / "state.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _load_model(self):
        state = self.read_state(self.restore_dir)
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(self.restore_dir / state["weights"]))
        self._current_epoch = int(state["epoch"])
        self.model._initial_epoch = self._current_epoch

    def _save_model(self):
        directory = Path(self.backup_dir)
        directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{self._current_epoch}.weights.h5"
        tmp = _tmp_path(directory / name)
        self.model.save_weights(str(tmp), overwrite=True)
        os.replace(tmp, directory / name)
        _write_json(directory / "state.json", {"epoch": self._current_epoch, "weights": name})
        for old in directory.glob("epoch_*.weights.h5"):
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
        _write_csv(self.path, pd.DataFrame(self.rows))


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model (temp + rename) whenever ``monitor`` improves (mode max).

    best: value to beat (from history.csv on resume). save_on_begin: save right after the
    backup was restored -- used when the last finished epoch is the best one, so a kill
    between the backup and this save loses nothing. Saves the final model if no epoch gave
    a finite value (e.g. validation without any fluid).
    """

    def __init__(self, path, monitor=MONITOR, best=-np.inf, save_on_begin=False, verbose=0):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best, self.save_on_begin, self.verbose = float(best), save_on_begin, verbose

    def _save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(self.path)
        self.model.save(str(tmp))
        os.replace(tmp, self.path)

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
        if not self.path.exists():
            self._save()


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose best value / wait counter can be restored after a resume."""

    def __init__(self, *, initial_best=None, initial_best_epoch=0, initial_wait=0, **kwargs):
        super().__init__(**kwargs)
        self._init = (initial_best, int(initial_best_epoch), int(initial_wait))

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best, self.best_epoch, self.wait = self._init


# ----------------------------------------------------------------------------- resume state
def _resume_state(read_dir: Path, patience: int) -> dict:
    """Restored epoch, history rows before it, best val Dice, early-stopping counters."""
    state = AtomicBackupAndRestore.read_state(read_dir / "backup")
    epoch = int(state["epoch"]) if state else 0
    rows = []
    hist = read_dir / "history.csv"
    if epoch and hist.is_file():
        df = pd.read_csv(hist)
        rows = df[df["epoch"] < epoch].to_dict("records")
    if len(rows) != epoch:  # history lost / inconsistent: restart this fold cleanly
        return {"epoch": 0, "rows": [], "best": -np.inf, "best_epoch": 0, "wait": 0,
                "stopped": False, "save_on_begin": False}
    vals = np.array([r.get(MONITOR, np.nan) for r in rows], dtype=float)
    finite = np.where(np.isfinite(vals), vals, -np.inf)
    if rows and np.isfinite(finite).any():
        best_epoch = int(np.argmax(finite))  # first maximum, as EarlyStopping counts
        best = float(finite[best_epoch])
    else:
        best_epoch, best = 0, -np.inf
    wait = (epoch - 1 - best_epoch) if rows else 0
    return {"epoch": epoch, "rows": rows, "best": best, "best_epoch": best_epoch, "wait": wait,
            "stopped": bool(rows) and epoch > 1 and wait >= patience,
            "save_on_begin": bool(rows) and best_epoch == epoch - 1 and np.isfinite(best)}


# ----------------------------------------------------------------------------- one fold
def _verbose(verbose):
    if verbose is None:
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _build_and_compile(config: TrainConfig, steps_per_epoch: int, strategy):
    kwargs = {"input_size": tuple(config.image_size) + (1,), "n_labels": 1}
    kwargs.update(config.model_kwargs)
    total = max(1, config.epochs * steps_per_epoch)
    warmup = steps_per_epoch if config.epochs > 2 else 0
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate * (0.1 if warmup else 1.0),
        decay_steps=max(1, total - warmup), alpha=0.01,
        warmup_target=config.learning_rate if warmup else None, warmup_steps=warmup)
    with strategy.scope(), precision_scope(config.precision):
        model = build_model(config.model, **kwargs)
        if config.bn_momentum is not None:
            for layer in _all_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = config.bn_momentum
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule),
                      loss=get_loss(config.loss, **config.loss_kwargs),
                      metrics=[DiceCoefficient(name="dice"), JaccardIndex(name="jaccard")])
    return model


def _patch_for_multi_worker(model, dataset, strategy) -> None:
    """Work around two Keras 3.15 bugs with MultiWorkerMirroredStrategy (tensorflow#72388):
    fit()'s ``_maybe_symbolic_build`` and the per-step log reduction call
    ``strategy.reduce("MEAN", v, axis=0)``, which fails on a tuple of PerReplica batches and
    on scalar logs. So: build the compiled state (optimizer, metrics) from one local batch
    (only shapes matter) and skip that build; give each step's logs shape (1,) so the
    reduction over axis 0 is valid (epoch logs are re-read from the synced metric variables).
    """
    batch = next(iter(dataset))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def wrapped(data, _step=step):
            return {k: keras.ops.reshape(v, (1,)) for k, v in _step(data).items()}

        setattr(model, name, wrapped)


def _fit_fold(k, split, scans, config, read_dir: Path, out_dir: Path, strategy, verbose):
    """Fit (or resume) one fold; leaves out_dir/model.keras and out_dir/trained.json."""
    resume = _resume_state(read_dir, config.patience)
    if resume["epoch"] == 0 and out_dir.exists():  # stale partial files of a killed first epoch
        for name in ("history.csv", "model.keras", "backup"):
            p = out_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    replicas = distribute.num_replicas(strategy)
    global_batch = config.batch_size * replicas
    train, val = scans.subset(split["train"]), scans.subset(split["val"])
    steps = math.ceil(len(train.names) / global_batch)
    distribute.seed_everything(config.seed + 1000 * k, config.deterministic)
    train_ds = make_dataset(train.images, train.masks, image_size=config.image_size,
                            batch_size=global_batch, training=True, augment=config.augment,
                            seed=config.seed + 1000 * k, shuffle=True)
    val_ds = make_dataset(val.images, val.masks, image_size=config.image_size,
                          batch_size=global_batch, training=False, augment=False)
    model = _build_and_compile(config, steps, strategy)
    done = resume["epoch"] >= config.epochs or resume["stopped"]
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        AtomicCSVLogger(out_dir / "history.csv", rows=resume["rows"]),
        AtomicBackupAndRestore(out_dir / "backup", restore_dir=read_dir / "backup"),
        BestCheckpoint(out_dir / "model.keras", best=resume["best"],
                       save_on_begin=resume["save_on_begin"], verbose=verbose),
        ResumableEarlyStopping(monitor=MONITOR, mode="max", patience=config.patience,
                               initial_best=resume["best"] if resume["rows"] else None,
                               initial_best_epoch=resume["best_epoch"],
                               initial_wait=resume["wait"], verbose=verbose),
    ]
    if importlib.util.find_spec("tensorboard") is not None:  # tf.summary needs the package
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard"),
                                                     write_graph=False))
    if resume["epoch"]:
        print(f"[oct_seg] {out_dir.name}: resuming after epoch {resume['epoch']}", flush=True)
    if distribute.is_multi_worker(strategy):
        _patch_for_multi_worker(model, train_ds, strategy)
    # done: killed after the last backup but before trained.json -> a zero-epoch fit only
    # restores the backup and repairs model.keras (BestCheckpoint save_on_begin / on_train_end)
    model.fit(train_ds, validation_data=val_ds,
              epochs=resume["epoch"] if done else config.epochs,
              initial_epoch=resume["epoch"], callbacks=callbacks, verbose=verbose, shuffle=False)
    hist = pd.read_csv(out_dir / "history.csv") if (out_dir / "history.csv").exists() else None
    nan_stop = hist is not None and not np.isfinite(hist["loss"].iloc[-1])
    best_val = float(hist[MONITOR].max()) if hist is not None and MONITOR in hist else float("nan")
    _write_json(out_dir / "trained.json", {
        "epochs_run": 0 if hist is None else int(len(hist)),
        "best_epoch": None if hist is None or not np.isfinite(best_val)
        else int(hist.loc[hist[MONITOR].idxmax(), "epoch"]),
        "best_val_dice": best_val,
        "stopped": "nan" if nan_stop else ("early" if hist is not None and len(hist)
                                           < config.epochs else "completed"),
        "replicas": replicas, "global_batch": global_batch, "steps_per_epoch": steps})
    shutil.rmtree(out_dir / "backup", ignore_errors=True)
    keras.backend.clear_session(free_memory=True)


def _evaluate_fold(split, scans, config, model_path: Path, out_dir: Path) -> dict:
    model = keras.saving.load_model(str(model_path), compile=False)
    result = {}
    conditions = [("clean", 0.0)] + ([("noisy", config.noise_std)] if config.noise_std else [])
    for part in ("train", "val"):
        subset = scans.subset(split[part])
        for cond, std in conditions:
            df = evaluate_model(model, subset, image_size=config.image_size, noise_std=std,
                                seed=config.seed, threshold=config.threshold,
                                batch_size=max(2, config.batch_size))
            _write_csv(out_dir / f"{part}_scores_{cond}.csv", df)
            summ = summarize_scores(df)
            for metric in ("dice", "jaccard", "sensitivity", "precision"):
                result[f"{part}_{cond}_{metric}"] = float(summ.loc[metric, "mean"])
    return result


def _run_fold(k, split, scans, config, read_root, write_root, strategy, verbose):
    read_dir = fold_dir(read_root, k, config.n_folds)
    out_dir = fold_dir(write_root, k, config.n_folds)
    if (read_dir / "fold.json").is_file():
        print(f"[oct_seg] {read_dir.name}: already complete, skipped", flush=True)
        return
    started = time.time()
    for stale in out_dir.rglob(".tmp-*"):  # temp files of a killed session
        stale.unlink(missing_ok=True)
    if not (read_dir / "trained.json").is_file():
        _fit_fold(k, split, scans, config, read_dir, out_dir, strategy, verbose)
    model_path = out_dir / "model.keras"
    if not model_path.exists():
        model_path = read_dir / "model.keras"
    result = _evaluate_fold(split, scans, config, model_path, out_dir)
    trained = json.loads(((out_dir if (out_dir / "trained.json").exists() else read_dir)
                          / "trained.json").read_text())
    _write_json(out_dir / "fold.json", {"fold": k, "n_train": len(split["train"]),
                                        "n_val": len(split["val"]), **trained, **result,
                                        "seconds_last_session": round(time.time() - started, 1)})
    keras.backend.clear_session(free_memory=True)


# ----------------------------------------------------------------------------- run level
def _make_splits(index: pd.DataFrame, config: TrainConfig) -> list[dict]:
    if config.n_folds > 1:
        folds = make_folds(index, n_folds=config.n_folds, seed=config.seed)
    else:
        n_subjects = index["subject"].nunique()
        if n_subjects < 2:
            raise ValueError("n_folds=1 holds out whole subjects for early stopping; the data "
                             f"has {n_subjects} subject(s), at least 2 are needed")
        n = max(2, min(n_subjects, round(1.0 / config.val_fraction)))
        folds = make_folds(index, n_folds=n, seed=config.seed)[:1]
    return json.loads(json.dumps([{"train": list(map(str, f["train"])),
                                   "val": list(map(str, f["val"]))} for f in folds]))


def _identity(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}


def _prepare_run_dir(run_dir: Path, data_dir: Path, config, splits, overwrite) -> None:
    """Create, check (resume) or clear RUN_DIR and write config.json, splits.json (chief)."""
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and any(run_dir.iterdir()):
        if not cfg_path.is_file():
            raise ValueError(f"{run_dir} is not empty and holds no config.json: not a run "
                             "directory; choose a new or empty --out folder")
        if overwrite:
            shutil.rmtree(run_dir)
        else:
            old = json.loads(cfg_path.read_text())
            new_id = _identity(config.to_dict())
            old_id = _identity(TrainConfig.from_dict(old["config"]).to_dict())
            diff = {k: (old_id.get(k), new_id.get(k)) for k in new_id
                    if old_id.get(k) != new_id.get(k)}
            if str(Path(old["data_dir"])) != str(data_dir):
                diff["data_dir"] = (old["data_dir"], str(data_dir))
            if diff:
                lines = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise ValueError(f"{run_dir} holds a run with a different configuration ({lines})."
                                 " Rerun with the same settings to resume it, choose another "
                                 "run directory, or pass overwrite=True (--overwrite) to "
                                 "start it anew.")
            stored = json.loads(json.dumps(read_splits(run_dir / "splits.json")))
            if stored != splits:
                raise ValueError(f"the scans in {data_dir} no longer give the folds stored in "
                                 f"{run_dir}/splits.json (data changed); use a new run "
                                 "directory or overwrite=True")
            return
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(run_dir / "splits.json")
    write_splits(tmp, splits)
    os.replace(tmp, run_dir / "splits.json")
    _write_json(cfg_path, {
        "config": config.to_dict(), "data_dir": str(data_dir), "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rerun": f"oct_seg.train(data_dir={str(data_dir)!r}, run_dir={str(run_dir)!r}, "
                 "**config)",
        "argv": sys.argv})


def summarize_run(run_dir) -> pd.DataFrame:
    """Rebuild RUN_DIR/summary.csv and curves.png from the finished folds; return the summary.

    Per fold and condition the score is the mean over its scans (summarize_scores); the table
    gives mean and sample std (ddof=1) of those over folds, plus each fold's value.
    """
    run_dir = Path(run_dir)
    fold_dirs = sorted((p for p in run_dir.iterdir() if (p / "fold.json").is_file()),
                       key=lambda p: (len(p.name), p.name))
    records = []
    for fd in fold_dirs:
        for path in sorted(fd.glob("*_scores_*.csv")):
            part, _, cond = path.stem.split("_")
            summ = summarize_scores(pd.read_csv(path))
            for metric in ("dice", "jaccard", "sensitivity", "precision"):
                records.append({"set": part, "condition": cond, "metric": metric,
                                "fold": fd.name, "value": float(summ.loc[metric, "mean"])})
    if not records:
        return pd.DataFrame()
    long = pd.DataFrame(records)
    wide = long.pivot_table(index=["set", "condition", "metric"], columns="fold",
                            values="value", aggfunc="first")
    wide = wide[[fd.name for fd in fold_dirs if fd.name in wide.columns]]
    summary = pd.DataFrame({"mean": wide.mean(axis=1), "std": wide.std(axis=1, ddof=1),
                            "n_folds": wide.notna().sum(axis=1)}).join(wide)
    order = {"val": 0, "train": 1, "clean": 0, "noisy": 1, "dice": 0, "jaccard": 1,
             "sensitivity": 2, "precision": 3}
    summary = summary.reset_index().sort_values(
        ["set", "condition", "metric"], key=lambda s: s.map(order)).reset_index(drop=True)
    _write_csv(run_dir / "summary.csv", summary)
    histories = {fd.name: pd.read_csv(fd / "history.csv") for fd in fold_dirs
                 if (fd / "history.csv").is_file()}
    plot_curves(histories, run_dir / "curves.png")
    return summary


def _run(data_dir, run_dir, config: TrainConfig, overwrite, strategy, verbose) -> pd.DataFrame:
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    data_dir, run_dir = Path(data_dir).resolve(), Path(run_dir).resolve()
    if not data_dir.is_dir():
        raise ValueError(f"data folder {data_dir} does not exist")
    strategy = strategy if strategy is not None else distribute.get_strategy()
    chief = distribute.is_chief()
    verbose = _verbose(verbose)
    scans = read_dataset(data_dir)
    splits = _make_splits(scans.index, config)
    if chief:  # other workers only read RUN_DIR (checking it too would race the chief)
        _prepare_run_dir(run_dir, data_dir, config, splits, overwrite)
    scratch = None if chief else Path(tempfile.mkdtemp(prefix="oct_seg_worker_"))
    read_root = scratch if (overwrite and not chief) else run_dir
    write_root = run_dir if chief else scratch
    try:
        folds = config.folds if config.folds is not None else range(len(splits))
        for k in folds:
            _run_fold(k, splits[k], scans, config, read_root, write_root, strategy, verbose)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return summarize_run(run_dir) if chief else pd.DataFrame()


def cross_validate(data_dir, run_dir, config: TrainConfig, overwrite=False, strategy=None,
                   verbose=None) -> pd.DataFrame:
    """k-fold cross-validation (config.n_folds >= 2) into run_dir; returns the summary table
    (also RUN_DIR/summary.csv). Resumes an existing run dir with the same config."""
    if config.n_folds < 2:
        raise ValueError("cross_validate needs n_folds >= 2; use train_final for n_folds=1")
    return _run(data_dir, run_dir, config, overwrite, strategy, verbose)


def train_final(data_dir, run_dir, config: TrainConfig, overwrite=False, strategy=None,
                verbose=None) -> pd.DataFrame:
    """One deployment model on all scans of data_dir (RUN_DIR/final/model.keras); a held-out
    ~val_fraction of the subjects only drives early stopping / best checkpoint."""
    if config.n_folds != 1:
        config = dataclasses.replace(config, n_folds=1, folds=None)
    return _run(data_dir, run_dir, config, overwrite, strategy, verbose)


def train(data_dir, run_dir, config: TrainConfig | None = None, *, overwrite=False,
          strategy=None, verbose=None, **fields) -> pd.DataFrame:
    """Public entry point: ``train(data, out, model="unet", loss="combined", n_folds=5, ...)``.

    fields are TrainConfig fields (override ``config`` when both are given). n_folds=1 ->
    train_final, else cross_validate. verbose: Keras progress (None: bar on a terminal, one
    line per epoch otherwise).
    """
    config = config if config is not None else TrainConfig()
    if fields:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = set(fields) - names
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; valid: {sorted(names)}")
        config = dataclasses.replace(config, **fields)
    fn = train_final if config.n_folds == 1 else cross_validate
    return fn(data_dir, run_dir, config, overwrite=overwrite, strategy=strategy, verbose=verbose)
