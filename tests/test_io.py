"""oct_seg.io: atomic folders (stale temp folders of killed runs, a file where a folder should
be), file targets, and file modes that follow the umask."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from oct_seg.io import atomic_dir, check_file_target, write_csv


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_csv_mode_follows_the_umask(tmp_path):
    """evaluate --out once wrote its CSV with mkstemp's 0600; every output follows the umask."""
    previous = os.umask(0o027)
    try:
        path = write_csv(tmp_path / "scores.csv", pd.DataFrame({"a": [1]}))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_file_above_the_target_is_named(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a folder")
    with pytest.raises(NotADirectoryError, match=f"{blocker} is a file, not a folder"):
        check_file_target(blocker / "x.csv")
    with pytest.raises(NotADirectoryError, match=f"{blocker} is a file, not a folder"):
        with atomic_dir(blocker / "deeper" / "out"):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_file_target(tmp_path / "missing" / "x.csv")
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def _killed_run(parent, name):
    """The temp folder a `kill -9`ed atomic_dir leaves: a child process makes it and dies."""
    code = ("import os, sys; from oct_seg.io import atomic_dir\n"
            f"with atomic_dir({str(parent / name)!r}) as tmp:\n"
            "    (tmp / 'half.png').write_bytes(b'x')\n"
            "    os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    left = [p for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-")]
    assert len(left) == 1  # what the issue reported: a hidden folder beside --out
    return left[0]


def test_next_run_removes_temp_folders_of_dead_processes(tmp_path):
    stale = _killed_run(tmp_path, "out")
    live = tmp_path / f".out.tmp-{os.getppid()}-abcd"  # a running process's folder stays
    live.mkdir()
    other = _killed_run(tmp_path, "other")  # another target's folder is not ours to judge
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "done.txt").write_text("ok")
    assert not stale.exists() and live.is_dir() and other.is_dir()
    assert (tmp_path / "out" / "done.txt").read_text() == "ok"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~_umask()
