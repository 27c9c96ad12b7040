"""Atomic files and folders: a reader never sees half a file, a failed command leaves nothing.

Files are written to ``.tmp-<pid>-NAME`` beside the target and renamed onto it (``os.replace``
is atomic within one file system), so a kill at any instant leaves either the old file or the
new one; the ``.tmp-`` prefix lets the next session remove what a killed one left
(:func:`remove_stale_temps`). Folders: :func:`atomic_dir` yields a temporary folder
``.NAME.tmp-<pid>-*`` beside the target and renames it onto the target when the block ends
without an error; the pid lets the next run for the same target remove the folders of a
process that no longer runs (a ``kill -9`` skips every cleanup) without touching those of a
run still in progress.

Errors name the path in one line: NotADirectoryError (the target, or a folder above it, is a
file), FileExistsError (a non-empty folder without ``overwrite``), PermissionError (the folder
cannot be written), IsADirectoryError / FileNotFoundError (a file target that is a folder /
has no parent folder).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

TMP_PREFIX = ".tmp-"


def temp_path(path) -> Path:
    """The temporary name a file is written under before its rename: ``.tmp-<pid>-NAME``
    (the pid keeps two processes writing one folder apart; the suffix is kept, which Keras
    needs for ``model.keras`` / ``*.weights.h5``)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` then rename tmp onto ``path`` (parent folders are created); on any error
    the temporary file is removed and ``path`` is untouched. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path, text: str) -> Path:
    """Atomic text file, flushed to disk (fsync) before the rename."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path, obj) -> Path:
    """Atomic JSON file (indent 2; NumPy scalars and Paths allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv(path, df, index: bool = False, **to_csv_kwargs) -> Path:
    """Atomic CSV of a DataFrame (``DataFrame.to_csv`` options pass through)."""
    return write_text(path, df.to_csv(index=index, **to_csv_kwargs))


def remove_stale_temps(folder) -> None:
    """Delete the temporary files a killed session left anywhere below ``folder``."""
    for stale in Path(folder).rglob(f"{TMP_PREFIX}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def _check_no_file_above(path: Path) -> None:
    """NotADirectoryError when a folder on the way to ``path`` exists as a file (the OS would
    only say "File exists" or "Not a directory", which points at the wrong thing)."""
    for above in Path(path).absolute().parents:
        if above.exists():
            if not above.is_dir():
                raise NotADirectoryError(f"{path}: {above} is a file, not a folder")
            return


def check_file_target(path) -> None:
    """Raise before any work when ``path`` cannot become a file: it is a folder, a folder
    above it is a file, its folder does not exist or is not writable."""
    path = Path(path)
    parent = path.absolute().parent
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name")
    _check_no_file_above(path)
    if not parent.is_dir():
        raise FileNotFoundError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{path}: output folder {parent} is not writable")


@contextlib.contextmanager
def atomic_dir(out, overwrite: bool = False):
    """Yield a temporary folder next to ``out``; on success it replaces ``out`` in one rename.

    A non-empty ``out`` raises FileExistsError unless ``overwrite`` (then the old folder is
    removed only after the new one is in place). On any exception the temporary folder is
    removed and ``out`` is untouched.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: output path exists and is not a folder")
    _check_no_file_above(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: output folder exists and is not empty; pass "
                              "overwrite=True (--overwrite) or choose another folder")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_siblings(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the result is a normal folder
    except OSError as err:
        raise PermissionError(f"{out}: cannot write the output folder "
                              f"({err.strerror or err})") from err
    try:
        yield tmp
        if out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_dead_siblings(out: Path) -> None:
    """Remove the ``.NAME.tmp-<pid>-*`` / ``.NAME.old-<pid>-*`` folders beside ``out`` whose
    process is gone (killed before its cleanup ran); a live pid's folder is left alone."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(?:tmp|old)-(\d+)-")
    for entry in out.parent.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_dir() and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True
