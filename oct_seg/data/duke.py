"""Convert the public Duke DME release (Chiu et al. 2015, ``2015_BOE_Chiu.zip``) to a dataset folder.

The release holds ``Subject_NN.mat`` files (NN = 01..10), each with ``images`` uint8
(H, W, S) and ``manualFluid1`` / ``manualFluid2`` float (H, W, S): a slice that was not
annotated is all NaN, an annotated slice holds 0 for background and a positive id per fluid
pocket. Only annotated slices of the chosen grader are written::

    OUT/images/subjectNN_annotKK.png     the B-scan (8-bit grey, unchanged pixels)
    OUT/masks/subjectNN_annotKK.png      fluid mask, 0 / 255
    OUT/instances/subjectNN_annotKK.png  the grader's pocket ids (0 = background; 16 bit if > 255)
    OUT/index.csv                        name, subject, bscan_index, height, width,
                                         fluid_fraction, n_fluid_components (4-connected)

KK counts the annotated slices of a subject in slice order; bscan_index is the slice in the
volume. The output is written to a temporary folder and renamed when complete.
"""
from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from oct_seg.data.readers import DataError, check_bscan_size
from oct_seg.io import atomic_dir

_SUBJECT_FILE = re.compile(r"(?:^|/)Subject_(\d+)\.mat$", re.IGNORECASE)


def _zip_member(source: Path, member: str) -> io.BytesIO:
    with zipfile.ZipFile(source) as zf:
        return io.BytesIO(zf.read(member))


def _find_subjects(source: Path) -> list:
    """[(subject, label, opener)] for every Subject_NN.mat in a zip or folder, by subject."""
    found = []
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for member in zf.namelist():
                match = _SUBJECT_FILE.search(member)
                if match and not member.startswith("__MACOSX"):
                    found.append((int(match.group(1)), f"{source}:{member}",
                                  lambda m=member: _zip_member(source, m)))
    elif source.is_dir():
        for path in source.rglob("*.mat"):
            match = _SUBJECT_FILE.search(path.name)
            if match:
                found.append((int(match.group(1)), str(path), lambda p=path: open(p, "rb")))
    else:
        raise DataError(f"{source}: not a zip file or folder (expected 2015_BOE_Chiu.zip or its contents)")
    subjects = [s for s, _, _ in found]
    if len(set(subjects)) != len(subjects):
        raise DataError(f"{source}: several files for the same subject: {sorted(subjects)}")
    if not found:
        raise DataError(f"{source}: no Subject_NN.mat files found")
    return sorted(found, key=lambda item: item[0])


def _load_subject(label: str, opener, grader: int):
    """(images uint8 (H, W, S), fluid float (H, W, S)) from one .mat, with shape checks."""
    from scipy.io import loadmat

    key = f"manualFluid{grader}"
    try:
        with opener() as handle:
            mat = loadmat(handle, variable_names=["images", key])
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5)
        raise DataError(f"{label}: MATLAB v7.3 file, not readable by scipy.io.loadmat ({err})") from err
    except Exception as err:
        raise DataError(f"{label}: cannot read .mat file ({type(err).__name__}: {err})") from err
    for name in ("images", key):
        if name not in mat:
            raise DataError(f"{label}: missing variable {name!r} (a Duke DME Subject_NN.mat holds "
                            f"images, manualFluid1, manualFluid2)")
    images, fluid = mat["images"], mat[key]
    if images.ndim != 3:
        raise DataError(f"{label}: 'images' has shape {images.shape}; expected (H, W, slices)")
    if fluid.shape != images.shape:
        raise DataError(f"{label}: {key!r} shape {fluid.shape} differs from 'images' shape {images.shape}")
    check_bscan_size(images.shape, f"{label}: 'images'")
    if images.dtype != np.uint8:
        images = _whole_8bit(images, label)
    fluid = fluid.astype(np.float64)
    _check_ids(fluid, label, key)
    return images, fluid


def _whole_8bit(images: np.ndarray, label: str) -> np.ndarray:
    """Non-uint8 'images' as uint8 when they hold whole numbers 0..255; else DataError.

    The release stores uint8. Float B-scans scaled to [0, 1] would round to a black PNG, so
    they are refused rather than guessed at (rescaling is the user's choice to make)."""
    values = images.astype(np.float64)
    if not np.isfinite(values).all():
        problem = "it holds NaN or inf"
    else:
        low, high = float(values.min()), float(values.max())
        problem = None
        if images.dtype.kind == "f" and high <= 1:
            problem = (f"{images.dtype} values in [{low:g}, {high:g}] look scaled to [0, 1] "
                       "and would give a black B-scan (multiply them by 255)")
        elif low < 0 or high > 255 or np.any(values != np.round(values)):
            problem = f"it holds {images.dtype} values in [{low:g}, {high:g}]"
    if problem:
        raise DataError(f"{label}: 'images' must hold 8-bit grey values (whole numbers "
                        f"0..255); {problem}")
    return images.astype(np.uint8)


def _check_ids(fluid: np.ndarray, label: str, key: str) -> None:
    """DataError for fluid ids that cannot be stored: +-inf (NaN marks an unannotated slice)
    and ids above 65535, the largest a 16-bit instances/ PNG holds."""
    if np.isinf(fluid).any():
        raise DataError(f"{label}: {key!r} holds infinite values; expected NaN (slice not "
                        "annotated), 0 (background) or a pocket id")
    top = np.nanmax(fluid) if not np.isnan(fluid).all() else 0.0
    if np.round(top) > np.iinfo(np.uint16).max:
        raise DataError(f"{label}: {key!r} holds pocket id {top:g}; instances/ PNGs hold ids up "
                        "to 65535")


def convert_duke(source, out, grader: int = 1, overwrite: bool = False) -> Path:
    """Write the annotated B-scans of ``source`` (zip or folder of Subject_NN.mat) to ``out``.

    grader: 1 or 2 (manualFluid1 / manualFluid2). An existing non-empty ``out`` raises
    FileExistsError unless overwrite=True. Returns ``out`` as a Path.
    """
    if grader not in (1, 2):
        raise ValueError(f"grader must be 1 or 2, got {grader!r}")
    source, out = Path(source), Path(out)
    subjects = _find_subjects(source)
    rows = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for sub in ("images", "masks", "instances"):
            (tmp / sub).mkdir()
        for subject, label, opener in subjects:
            images, fluid = _load_subject(label, opener, grader)
            annotated = [k for k in range(fluid.shape[2]) if not np.all(np.isnan(fluid[:, :, k]))]
            for number, k in enumerate(annotated):
                name = f"subject{subject:02d}_annot{number:02d}"
                ids = np.nan_to_num(fluid[:, :, k], nan=0.0)
                ids = np.where(ids > 0, np.round(ids), 0)
                mask = ids > 0
                n_components = ndimage.label(mask)[1]
                Image.fromarray(images[:, :, k]).save(tmp / "images" / f"{name}.png")
                Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "masks" / f"{name}.png")
                inst_dtype = np.uint8 if ids.max() <= 255 else np.uint16
                Image.fromarray(ids.astype(inst_dtype)).save(tmp / "instances" / f"{name}.png")
                rows.append(dict(name=name, subject=subject, bscan_index=k, height=mask.shape[0],
                                 width=mask.shape[1], fluid_fraction=round(float(mask.mean()), 6),
                                 n_fluid_components=int(n_components)))
        if not rows:
            raise DataError(f"{source}: no annotated slices for grader {grader}")
        pd.DataFrame(rows).to_csv(tmp / "index.csv", index=False)
    return out
