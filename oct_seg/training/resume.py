"""Where an interrupted fit continues: the resume state of a fold folder.

The backup (backup/state.json, written after history.csv at every epoch end) says how many
epochs finished; history.csv is cut to them, and the best validation Dice and the early-stopping
counters are rebuilt from those rows, so a resumed fit writes nothing twice and loses nothing.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from oct_seg.rundir import FoldDir
from oct_seg.training.callbacks import MONITOR, AtomicBackupAndRestore


@dataclasses.dataclass(frozen=True)
class ResumeState:
    """epoch: finished epochs to continue after (0 = start afresh); rows: their history.csv
    rows; best / best_epoch: best MONITOR value so far and its epoch (first maximum, as
    EarlyStopping counts); wait: epochs since it; stopped: early stopping had already
    ended the fit; save_on_begin: the last finished epoch is the best, so model.keras is saved
    again from the restored backup (a kill may have fallen between backup and checkpoint)."""

    epoch: int = 0
    rows: tuple = ()
    best: float = -np.inf
    best_epoch: int = 0
    wait: int = 0
    stopped: bool = False
    save_on_begin: bool = False


def resume_state(fold: FoldDir, patience: int) -> ResumeState:
    """The ResumeState of a fold folder (a fresh one without a usable backup)."""
    state = AtomicBackupAndRestore.read_state(fold.backup)
    epoch = int(state["epoch"]) if state else 0
    rows = []
    hist = fold.read_history() if epoch else None
    if hist is not None:
        rows = hist[hist["epoch"] < epoch].to_dict("records")
    if len(rows) != epoch:  # history lost / inconsistent: restart this fold cleanly
        return ResumeState()
    vals = np.array([r.get(MONITOR, np.nan) for r in rows], dtype=float)
    finite = np.where(np.isfinite(vals), vals, -np.inf)
    if rows and np.isfinite(finite).any():
        best_epoch = int(np.argmax(finite))
        best = float(finite[best_epoch])
    else:
        best_epoch, best = 0, -np.inf
    wait = (epoch - 1 - best_epoch) if rows else 0
    return ResumeState(epoch=epoch, rows=tuple(rows), best=best, best_epoch=best_epoch,
                       wait=wait, stopped=bool(rows) and epoch > 1 and wait >= patience,
                       save_on_begin=bool(rows) and best_epoch == epoch - 1
                       and bool(np.isfinite(best)))
