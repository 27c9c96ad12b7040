"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train one tiny fold together."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oct_seg.data.phantom import write_phantom_dataset

SCRIPT = Path(__file__).with_name("train_script.py")
TIMEOUT = 240  # s, both workers together; they are killed after it


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_chief_writes(tmp_path):
    data = write_phantom_dataset(tmp_path / "data", n_subjects=4, per_subject=2, height=48,
                                 width=64, seed=0)
    run = tmp_path / "run"
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs, logs, tmps = [], [], []
    for i in range(2):
        tmp = tmp_path / f"tmp{i}"
        tmp.mkdir()
        env = dict(os.environ, TMPDIR=str(tmp), CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": i}}))
        log = open(tmp_path / f"worker{i}.log", "w+")
        procs.append(subprocess.Popen(
            [sys.executable, str(SCRIPT), str(data), str(run), "1", "32", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        logs.append(log)
        tmps.append(tmp)
    deadline = time.time() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    out = []
    for log in logs:
        log.seek(0)
        out.append(log.read())
        log.close()
    for p, text in zip(procs, out):
        assert p.returncode == 0, text[-3000:]
    assert "chief=True replicas=2" in out[0] and "chief=False replicas=2" in out[1]
    trained = json.loads((run / "fold_0" / "trained.json").read_text())
    assert trained["replicas"] == 2 and trained["global_batch"] == 4
    assert (run / "fold_0" / "fold.json").is_file() and (run / "summary.csv").is_file()
    assert not (run / "fold_1").exists()  # only fold 0 was asked for
    assert not list(tmps[1].glob("oct_seg_worker_*"))  # the non-chief's scratch is gone
    assert not list(tmps[0].glob("oct_seg_worker_*"))
