"""The run folder: where every file of a training run lives, and how it is read back.

Layout (every file written atomically, see oct_seg.io)::

    RUN_DIR/config.json          {"config": TrainConfig fields, "data_dir", "versions",
                                  "created", "rerun", "argv"}: everything needed to rerun
    RUN_DIR/splits.json          [{"train": names, "val": names}, ...] (one per fold)
    RUN_DIR/summary.csv          set x condition x metric: mean, std over folds, per-fold values
    RUN_DIR/curves.png           Dice, Jaccard, loss per epoch (train solid, val dashed)
    RUN_DIR/fold_K/ (or final/)  one FoldDir per fold:
        model.keras                      best epoch by validation Dice
        history.csv                      one row per finished epoch
        {part}_scores_{condition}.csv    per-image scores at original size
        trained.json                     fit finished (best epoch, stop reason)
        fold.json                        fold finished (written last)
        tensorboard/                     TensorBoard logs (if it is installed)
        backup/                          per-epoch backup while training

The small results of a run (everything above but model.keras, tensorboard/ and backup/) can
be copied into another folder of the same layout, e.g. a repository's results/, with
:meth:`RunDir.export_fold`: that folder then reads back like a run folder without models.

Score files have one name everywhere, :func:`scores_name`: ``{part}_scores_{condition}.csv``
with condition ``clean`` or ``noisy`` and part ``train`` / ``val`` (a fold's subjects),
``test`` (the demo's held-out subjects) or ``all`` (evaluate_folder: a whole data folder).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import json
import os
import platform
import re
import sys
import time
import uuid
from pathlib import Path

import pandas as pd

from oct_seg.data.splits import read_splits, write_splits
from oct_seg.io import write_json

_SCORES = re.compile(r"^(?P<part>[a-z]+)_scores_(?P<condition>[a-z]+)\.csv$")


def scores_name(part: str, condition: str) -> str:
    """File name of the per-image scores of ``part`` under ``condition``."""
    name = f"{part}_scores_{condition}.csv"
    if not _SCORES.match(name):
        raise ValueError(f"part and condition must be lower-case words, got {part!r}, "
                         f"{condition!r}")
    return name


@dataclasses.dataclass(frozen=True)
class FoldDir:
    """The folder of one fold (RUN_DIR/fold_K or RUN_DIR/final; the demo's run folder)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> Path:
        return self.path / "model.keras"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def trained(self) -> Path:
        return self.path / "trained.json"

    @property
    def done(self) -> Path:
        return self.path / "fold.json"

    @property
    def backup(self) -> Path:
        return self.path / "backup"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def finished(self) -> bool:
        return self.done.is_file()

    def scores(self, part: str, condition: str) -> Path:
        return self.path / scores_name(part, condition)

    def score_files(self) -> dict:
        """{(part, condition): path} of the score files present, sorted by file name."""
        found = {}
        for path in sorted(self.path.glob("*_scores_*.csv")):
            match = _SCORES.match(path.name)
            if match:
                found[(match["part"], match["condition"])] = path
        return found

    def result_files(self) -> list[Path]:
        """The small files of the fold present (history, trained.json, score CSVs, then
        fold.json last): what outlives the machine; the model and logs do not."""
        files = [self.history, self.trained, *self.score_files().values(), self.done]
        return [f for f in files if f.is_file()]

    def read_history(self) -> pd.DataFrame | None:
        return pd.read_csv(self.history) if self.history.is_file() else None

    def read_trained(self) -> dict:
        return json.loads(self.trained.read_text())

    def read_done(self) -> dict:
        return json.loads(self.done.read_text())


class RunDir:
    """A training run's folder (layout in the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def splits(self) -> Path:
        return self.path / "splits.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @classmethod
    def of_model(cls, model_path) -> "RunDir | None":
        """The run holding ``model_path`` as RUN_DIR/<fold>/model.keras, or None."""
        run = cls(Path(model_path).resolve().parent.parent)
        return run if run.config.is_file() else None

    def fold(self, k: int, n_folds: int) -> FoldDir:
        """RUN_DIR/fold_K, or RUN_DIR/final for n_folds == 1."""
        return FoldDir(self.path / ("final" if n_folds == 1 else f"fold_{k}"))

    def finished_folds(self) -> list[FoldDir]:
        """Folds with fold.json, in fold order (fold_2 before fold_10)."""
        if not self.path.is_dir():
            return []
        folds = [FoldDir(p) for p in self.path.iterdir() if (p / "fold.json").is_file()]
        return sorted(folds, key=lambda f: (len(f.name), f.name))

    def is_empty(self) -> bool:
        return not self.path.is_dir() or not any(self.path.iterdir())

    def export_fold(self, k: int, n_folds: int, dest) -> FoldDir:
        """Copy fold k's result_files (fold.json last, so a copy cut short is not a finished
        fold) into the run folder ``dest``, and config.json and splits.json where dest has
        none yet (the caller checks that an existing one is the same run); returns dest's
        fold."""
        src, dest = self.fold(k, n_folds), RunDir(dest)
        if not src.finished:
            raise ValueError(f"{src.done} is missing: fold {k} of {self.path} has not finished")
        dest.path.mkdir(parents=True, exist_ok=True)
        for mine, theirs in ((self.config, dest.config), (self.splits, dest.splits)):
            if not theirs.is_file():
                shutil.copy2(mine, theirs)
        out = dest.fold(k, n_folds)
        out.path.mkdir(parents=True, exist_ok=True)
        for file in src.result_files():
            shutil.copy2(file, out.path / file.name)
        return out

    def read_record(self) -> dict:
        """The whole config.json."""
        return json.loads(self.config.read_text())

    def read_config(self) -> dict:
        """The TrainConfig fields stored in config.json."""
        return self.read_record()["config"]

    def write_config(self, config: dict, data_dir, folder=None) -> None:
        """config.json: the TrainConfig fields, the data folder, package versions, the time
        and the call that reruns (resumes) this run. folder: write it there instead (a
        scratch folder that :meth:`create` renames to this run's)."""
        write_json(Path(folder or self.path) / self.config.name, {
            "config": config, "data_dir": str(data_dir), "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "rerun": f"oct_seg.train(data_dir={str(data_dir)!r}, run_dir={str(self.path)!r}, "
                     "**config)",
            "argv": sys.argv})

    def create(self, config: dict, data_dir, splits: list) -> bool:
        """Make this run folder with its config.json and splits.json in one step; False (and
        nothing written) when another process made it first.

        The files are written to a scratch folder beside it, which is then renamed to the
        run's path (a rename fails when that is a non-empty folder), so no other process
        ever sees the folder without its config.json: two ``--fold`` calls started together
        on a new run folder both proceed (the loser checks the winner's config.json like a
        resumed run's)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.parent / f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        scratch.mkdir()   # not mkdtemp: the run folder keeps the umask's permissions
        try:
            write_splits(scratch / self.splits.name, splits)
            self.write_config(config, data_dir, folder=scratch)
            try:
                self.path.rmdir()  # an empty run folder: not every OS renames onto one
            except OSError:
                pass
            try:
                os.rename(scratch, self.path)
            except OSError:
                if self.is_empty():
                    raise
                return False
            return True
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def read_splits(self) -> list:
        return read_splits(self.splits)

    def write_splits(self, splits: list) -> None:
        write_splits(self.splits, splits)

    def val_fold(self, name: str) -> int:
        """Index of the fold whose validation part holds scan ``name``."""
        for k, split in enumerate(self.read_splits()):
            if name in split["val"]:
                return k
        raise ValueError(f"scan {name!r} is in no validation fold of {self.path}")


def _versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("oct_seg", "keras", "tensorflow", "tensorflow-cpu", "numpy", "scikit-learn",
                "scikit-image", "pandas"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
