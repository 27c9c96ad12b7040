"""Convert RETOUCH-style MetaImage volumes (Bogunovic et al., IEEE TMI 2019) to a data folder.

RETOUCH (registration needed to download) ships 112 volumes from Spectralis, Cirrus and
Topcon scanners, each case a folder holding an OCT volume and the graders' reference::

    SOURCE/RETOUCH-TrainingSet-Cirrus/TRAIN001/oct.mhd        MetaImage header (ElementSpacing)
    SOURCE/RETOUCH-TrainingSet-Cirrus/TRAIN001/oct.raw        voxels: n_bscans x H x W (8/16 bit)
    SOURCE/RETOUCH-TrainingSet-Cirrus/TRAIN001/reference.mhd  labels, same size:
    SOURCE/RETOUCH-TrainingSet-Cirrus/TRAIN001/reference.raw  0 background, 1 IRF, 2 SRF, 3 PED

Any folder below SOURCE that holds ``oct.mhd`` is a case (so one vendor folder, or a copy
of the whole release, both work); its subject is ``VENDOR_CASE`` where VENDOR is Cirrus,
Spectralis or Topcon when the parent folder's name contains it (else the parent's name).
MetaImage axes: x = A-scans along a B-scan (width, lateral), y = depth (height, axial), z =
B-scans; ElementSpacing gives (lateral, axial, B-scan) in mm. SimpleITK reads the files.
Every B-scan is written, in the data folder form of ``oct-seg data duke``::

    OUT/images/VENDOR_CASE_bNNN.png   the B-scan, pixels unchanged (8 or 16 bit grey PNG)
    OUT/masks/VENDOR_CASE_bNNN.png    class ids 0..3 (8-bit PNG; the pixel value is the id)
    OUT/index.csv                     name, subject, vendor, bscan_index, height, width,
                                      lateral_mm, axial_mm, bscan_mm, fluid_fraction (any
                                      class), IRF_fraction, SRF_fraction, PED_fraction and
                                      classes = "IRF;SRF;PED" (oct_seg.data.readers)

Every header is checked (readable, its .raw present, 3-D, image and reference of one size
and spacing, B-scans of at least 16 x 16 pixels) before anything is written; class ids
outside 0..3 are found while converting, and the temporary output is then removed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from oct_seg.data.readers import DataError, check_bscan_size, class_columns
from oct_seg.io import atomic_dir

RETOUCH_CLASSES = ("IRF", "SRF", "PED")
IMAGE_FILE, REFERENCE_FILE = "oct.mhd", "reference.mhd"
VENDORS = ("Cirrus", "Spectralis", "Topcon")
_DATA_FILE = re.compile(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE)


def read_metaimage_header(path) -> tuple:
    """(size (n_bscans, H, W), spacing (lateral, axial, bscan) mm) of a 3-D MetaImage .mhd.

    DataError naming the file when it is missing, unreadable, not 3-D, or its data file
    (ElementDataFile, e.g. oct.raw) is not next to it."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from err
    match = _DATA_FILE.search(text)
    if match is None:
        raise DataError(f"{path}: not a MetaImage header (no ElementDataFile line)")
    data_file = match.group(1)
    if data_file != "LOCAL" and not (path.parent / data_file).is_file():
        raise DataError(f"{path}: its data file {data_file} is missing (expected "
                        f"{path.parent / data_file})")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DataError(f"{path}: not a readable MetaImage ({str(err).strip().splitlines()[-1]})"
                        ) from err
    if reader.GetDimension() != 3:
        raise DataError(f"{path}: {reader.GetDimension()}-D image; expected a 3-D OCT volume")
    w, h, n = reader.GetSize()
    lateral, axial, bscan = reader.GetSpacing()
    return (n, h, w), (lateral, axial, bscan)


def read_metaimage(path) -> tuple:
    """(voxels (n_bscans, H, W) in the file's pixel type, spacing (lateral, axial, bscan) mm)."""
    import SimpleITK as sitk

    _, spacing = read_metaimage_header(path)
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as err:
        raise DataError(f"{path}: cannot read its voxels ({str(err).strip().splitlines()[-1]})"
                        ) from err
    return array, spacing


def _vendor(case: Path) -> str:
    for vendor in VENDORS:
        if vendor.lower() in case.parent.name.lower():
            return vendor
    return case.parent.name


def find_cases(source) -> list:
    """[(subject, vendor, case folder)] of every folder below ``source`` with an oct.mhd,
    each header pair checked (module docstring); DataError naming the file otherwise."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: not a folder (expected RETOUCH case folders holding "
                        f"{IMAGE_FILE} and {REFERENCE_FILE})")
    cases = []
    for image in sorted(source.rglob(IMAGE_FILE)):
        case = image.parent
        size, spacing = read_metaimage_header(image)
        reference = case / REFERENCE_FILE
        if not reference.is_file():
            raise DataError(f"{reference}: missing; every case needs the reference labels "
                            f"next to {IMAGE_FILE}")
        ref_size, ref_spacing = read_metaimage_header(reference)
        if ref_size != size:
            raise DataError(f"{reference}: size {ref_size} (B-scans, H, W) differs from "
                            f"{image.name}'s {size}")
        if not np.allclose(ref_spacing, spacing, rtol=1e-6):
            raise DataError(f"{reference}: spacing {ref_spacing} mm differs from "
                            f"{image.name}'s {spacing} mm")
        check_bscan_size(size[1:], image)
        vendor = _vendor(case)
        cases.append((f"{vendor}_{case.name}", vendor, case))
    if not cases:
        raise DataError(f"{source}: no {IMAGE_FILE} found in it or its sub-folders")
    subjects = [s for s, _, _ in cases]
    repeated = sorted({s for s in subjects if subjects.count(s) > 1})
    if repeated:
        raise DataError(f"{source}: several cases named {repeated[:3]}; one folder per case")
    return cases


def _grey(voxels: np.ndarray, path: Path) -> np.ndarray:
    """The volume as uint8 / uint16 for PNG, pixels unchanged; DataError for other types."""
    if voxels.dtype in (np.uint8, np.uint16):
        return voxels
    if np.issubdtype(voxels.dtype, np.integer) and voxels.min() >= 0 and voxels.max() <= 65535:
        return voxels.astype(np.uint8 if voxels.max() <= 255 else np.uint16)
    raise DataError(f"{path}: {voxels.dtype} voxels; expected 8- or 16-bit grey values")


def convert_retouch(source, out, overwrite: bool = False) -> Path:
    """Write every B-scan of the RETOUCH-style cases below ``source`` to the data folder
    ``out`` (layout in the module docstring). An existing non-empty ``out`` raises
    FileExistsError unless overwrite=True. Returns ``out`` as a Path."""
    source, out = Path(source), Path(out)
    cases = find_cases(source)
    n_labels = len(RETOUCH_CLASSES) + 1
    rows = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for sub in ("images", "masks"):
            (tmp / sub).mkdir()
        for subject, vendor, case in cases:
            voxels, (lateral, axial, bscan) = read_metaimage(case / IMAGE_FILE)
            labels, _ = read_metaimage(case / REFERENCE_FILE)
            bad = np.unique(labels[(labels < 0) | (labels >= n_labels)])
            if bad.size:
                raise DataError(f"{case / REFERENCE_FILE}: class ids {bad[:5].tolist()} outside "
                                f"the RETOUCH classes 0..{n_labels - 1} (background, "
                                f"{', '.join(RETOUCH_CLASSES)})")
            voxels, labels = _grey(voxels, case / IMAGE_FILE), labels.astype(np.uint8)
            for k in range(voxels.shape[0]):
                name = f"{subject}_b{k:03d}"
                Image.fromarray(voxels[k]).save(tmp / "images" / f"{name}.png")
                Image.fromarray(labels[k]).save(tmp / "masks" / f"{name}.png")
                row = dict(name=name, subject=subject, vendor=vendor, bscan_index=k,
                           height=labels.shape[1], width=labels.shape[2], lateral_mm=lateral,
                           axial_mm=axial, bscan_mm=bscan,
                           fluid_fraction=round(float(np.mean(labels[k] > 0)), 6))
                rows.append({**row, **class_columns(labels[k], RETOUCH_CLASSES)})
        pd.DataFrame(rows).to_csv(tmp / "index.csv", index=False)
    return out
