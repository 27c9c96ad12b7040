"""Resume after a kill: the resume-state rules, a real SIGKILL of a training process, and
new run folders made by two calls at once."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oct_seg.data.phantom import write_phantom_dataset
from oct_seg.rundir import FoldDir, RunDir
from oct_seg.training import TrainConfig, resume_state
from oct_seg.training.run import _prepare_run_dir

SCRIPT = Path(__file__).with_name("train_script.py")
EPOCHS = 3


def _fold_dir(tmp_path, epoch_state, val_dice):
    fd = tmp_path / "fold_0"
    (fd / "backup").mkdir(parents=True)
    if epoch_state is not None:
        (fd / "backup" / "state.json").write_text(
            json.dumps({"epoch": epoch_state, "weights": f"epoch_{epoch_state}.weights.h5"}))
    pd.DataFrame({"epoch": range(len(val_dice)), "loss": 1.0,
                  "val_dice": val_dice}).to_csv(fd / "history.csv", index=False)
    return fd


@pytest.mark.parametrize("state, val_dice, expect", [
    # killed after history row 3 but before its backup: row 3 is dropped, epoch 3 redone
    (3, [0.1, 0.3, 0.2, 0.9], dict(epoch=3, rows=3, best=0.3, best_epoch=1, wait=1,
                                   stopped=False, save_on_begin=False)),
    # last finished epoch is the best: re-save model.keras from the restored backup
    (2, [0.1, 0.4], dict(epoch=2, rows=2, best=0.4, best_epoch=1, wait=0, stopped=False,
                         save_on_begin=True)),
    # patience 2 already exhausted before the kill: nothing left to fit
    (4, [0.5, 0.2, 0.3, 0.1], dict(epoch=4, rows=4, best=0.5, best_epoch=0, wait=3,
                                   stopped=True, save_on_begin=False)),
    # no backup: start the fold from scratch
    (None, [0.1, 0.2], dict(epoch=0, rows=0, stopped=False, save_on_begin=False)),
    # history shorter than the backup (lost): start from scratch rather than guess
    (3, [0.1], dict(epoch=0, rows=0, stopped=False)),
])
def test_resume_state_rules(tmp_path, state, val_dice, expect):
    got = resume_state(FoldDir(_fold_dir(tmp_path, state, val_dice)), patience=2)
    for key, value in expect.items():
        if key == "rows":
            assert len(got.rows) == value
            assert [r["epoch"] for r in got.rows] == list(range(value))
        elif key == "best":
            assert got.best == pytest.approx(value)
        else:
            assert getattr(got, key) == value, key


def _start(data, run, log):
    return subprocess.Popen([sys.executable, str(SCRIPT), str(data), str(run), str(EPOCHS), "32"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_sigkill_mid_training_then_same_command_completes(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_subjects=4, per_subject=2, height=48,
                                 width=64, seed=0)
    run = tmp_path / "run"
    state = run / "fold_0" / "backup" / "state.json"
    with open(tmp_path / "first.log", "w+") as log:
        proc = _start(data, run, log)
        deadline = time.time() + 150
        try:
            while not state.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert state.exists(), "no backup appeared before the deadline"
            time.sleep(0.3)  # into the next epoch
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        log.seek(0)
        first = log.read()
    splits_before = (run / "splits.json").read_text()
    config_before = (run / "config.json").read_text()
    trained_before = (run / "fold_0" / "trained.json").exists()
    with open(tmp_path / "second.log", "w+") as log:
        proc = _start(data, run, log)
        try:
            proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        second = log.read()
    assert proc.returncode == 0, second[-3000:]
    assert "[train_script] finished" not in first
    if not trained_before:  # the kill hit fold 0's fit: it must resume, not restart
        assert "fold_0: resuming after epoch" in second, second[-3000:]
    assert (run / "splits.json").read_text() == splits_before
    assert (run / "config.json").read_text() == config_before
    for k in (0, 1):
        fd = run / f"fold_{k}"
        assert (fd / "fold.json").is_file() and (fd / "model.keras").is_file()
        hist = pd.read_csv(fd / "history.csv")
        assert list(hist["epoch"]) == list(range(EPOCHS))  # each epoch once, none lost
        assert np.isfinite(hist["loss"]).all()
        assert not (fd / "backup").exists()
        assert not list(fd.rglob(".tmp-*"))
    # the optimiser step (hence the LR schedule) was restored, not restarted: the resumed
    # fold 0 follows the same per-epoch learning rates as the uninterrupted fold 1
    lr = [pd.read_csv(run / f"fold_{k}" / "history.csv")["learning_rate"] for k in (0, 1)]
    np.testing.assert_allclose(lr[0], lr[1], rtol=1e-6)
    assert lr[0].nunique() == EPOCHS
    summary = pd.read_csv(run / "summary.csv")
    assert {"fold_0", "fold_1"} <= set(summary.columns)
    assert summary.loc[summary.metric == "dice", ["fold_0", "fold_1"]].notna().all().all()


def test_fold_calls_started_together_on_a_new_run_folder_both_proceed(tmp_path):
    """Two ``--fold`` calls started at once on a new run folder (two trainings on two cores):
    the second used to find the folder non-empty without config.json ("not a run directory")
    and fail. Threads released together, 25 times: each call must pass, one config.json."""
    config, data = TrainConfig(model="unet", n_folds=2), tmp_path / "data"
    splits = [{"train": ["a"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}]
    for i in range(25):
        run, gate, errors = RunDir(tmp_path / f"run{i}"), threading.Barrier(2), []

        def call():
            gate.wait()
            try:
                _prepare_run_dir(run, data, config, splits, overwrite=False)
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(err)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, f"attempt {i}: {errors}"
        assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "splits.json"]
        assert run.read_config()["n_folds"] == 2 and run.read_splits() == splits
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch


def test_new_run_folder_refuses_another_configuration_made_first(tmp_path):
    """The loser of the race checks the winner's run like a resumed one: same config passes,
    another config is refused naming the difference; an empty folder is taken over."""
    splits = [{"train": ["a"], "val": ["b"]}]
    run = RunDir(tmp_path / "run")
    run.path.mkdir()                     # an empty folder is a new run
    assert run.create(TrainConfig(model="unet").to_dict(), tmp_path, splits)
    assert not run.create(TrainConfig(model="att_unet").to_dict(), tmp_path, splits)
    assert run.read_config()["model"] == "unet"   # the first stays, nothing of the second
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    _prepare_run_dir(run, tmp_path, TrainConfig(model="unet"), splits, overwrite=False)
    with pytest.raises(ValueError, match="different configuration.*model: run has 'unet'"):
        _prepare_run_dir(run, tmp_path, TrainConfig(model="att_unet"), splits, overwrite=False)
