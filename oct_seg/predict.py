"""Predict fluid masks for B-scan images and vendor OCT volumes; write masks, overlays, CSVs.

Output folder (written into a temporary folder next to it and renamed at the end, so a failed
run leaves nothing behind):

    masks/NAME.png        binary fluid mask, 0 / 255 (multi-class models: label index 0..C-1)
    overlays/NAME.png     the grey B-scan with fluid in translucent cyan
    fluid_areas.csv       one row per B-scan: fluid_pixels, fluid_area_mm2 (when the lateral
                          and axial pixel spacing are known), spacing used and its source
    fluid_volumes.csv     one row per input volume: total pixels / mm^2 and fluid_volume_mm3

NAME is the input file's stem for images, STEM_bNNN for B-scan NNN of a volume (vendor files
and multi-page TIFF stacks).
B-scans of one volume that share a size are segmented `batch_size` at a time (one model call
per batch); the results do not depend on batch_size beyond float round-off.
Fluid volume rule (Cavalieri): volume_mm3 = sum over B-scans of area_mm2 x B-scan spacing (mm),
i.e. every B-scan stands for a slab as thick as the distance between B-scans; it is left empty
for single B-scans and when any of lateral, axial or B-scan spacing is unknown.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from oct_seg.precision import check_precision, with_precision
from oct_seg.volumes import VOLUME_EXTENSIONS, Spacing, Volume, is_supported, read_input

OVERLAY_COLOURS = np.array([[0, 200, 255], [255, 80, 0], [80, 255, 0], [255, 0, 200]],
                           dtype=np.float32)
OVERLAY_ALPHA = 0.45
EXPORT_INFO = "oct_seg.json"  # sidecar written by oct_seg.export next to exported models


# ----------------------------------------------------------------------------------- output dirs
@contextlib.contextmanager
def atomic_dir(out, overwrite=False):
    """Yield a temporary folder next to `out`; on success it replaces `out` in one rename.

    Raises FileExistsError when `out` is a non-empty folder and overwrite is False, and
    PermissionError / NotADirectoryError (naming the folder) when it cannot be written.
    On any exception the temporary folder is removed and `out` is untouched.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: output folder exists and is not empty; "
                              "pass --overwrite or choose another --out")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the result is a normal folder
    except OSError as err:
        raise PermissionError(f"{out}: cannot write the output folder "
                              f"({err.strerror or err})") from err
    try:
        yield tmp
        if out.exists():
            old = parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------- models
def load_model(path):
    """Load a .keras / .h5 model file or an exported SavedModel folder -> keras.Model.

    SavedModels (from `oct-seg export`) are wrapped in a Keras model around their `serve`
    endpoint, with the SizeCheck layer restored from the exported `oct_seg.json`, so that
    oct_seg.inference.predict_image pads / resizes them like the original model.
    Raises FileNotFoundError / ValueError naming the path and the problem.
    """
    import keras

    # register every oct_seg layer, loss and metric a saved model may name
    import oct_seg.losses  # noqa: F401
    import oct_seg.metrics  # noqa: F401
    import oct_seg.models.registry  # noqa: F401

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model not found")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ValueError(f"{path}: folder is not a SavedModel (no saved_model.pb); give a "
                             ".keras file or a folder written by `oct-seg export`")
        return _wrap_saved_model(path)
    if path.suffix.lower() not in (".keras", ".h5"):
        raise ValueError(f"{path}: not a model file; give a .keras file or a SavedModel folder")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a loadable Keras model ({reason[:200]})") from err


def _saved_model_info(path: Path) -> dict:
    info_file = path / EXPORT_INFO
    if not info_file.is_file():
        return {"multiple": 1, "fixed_size": None, "endpoint": "serve"}
    return json.loads(info_file.read_text())


def _wrap_saved_model(path: Path):
    import keras

    from oct_seg.models.blocks import SizeCheck

    info = _saved_model_info(path)
    h, w = (info.get("input_shape") or [None, None])[:2]
    # a signature with static H, W only takes that size: predict_image resizes to it
    fixed = tuple(info["fixed_size"]) if info.get("fixed_size") else ((h, w) if h and w else None)
    try:
        core = keras.layers.TFSMLayer(str(path), call_endpoint=info.get("endpoint", "serve"))
    except Exception as err:
        raise ValueError(f"{path}: cannot load the SavedModel ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''})") from err
    shape = (fixed[0], fixed[1], 1) if fixed else (None, None, 1)
    inputs = keras.Input(shape)
    checked = SizeCheck(multiple=int(info.get("multiple", 1)), fixed_size=fixed,
                        context=f"exported model {path.name}")(inputs)
    outputs = core(checked)
    if isinstance(outputs, dict):  # {"output_0": ..., "output_K": ...}: the last is final
        outputs = outputs[max(outputs, key=lambda k: int(k.rsplit("_", 1)[-1]))]
    return keras.Model(inputs, outputs, name=f"savedmodel_{path.name}")


# ------------------------------------------------------------------------------- predictions
def fluid_mask(prob: np.ndarray, threshold=0.5) -> np.ndarray:
    """Probability map (H, W[, C]) -> uint8 label map (H, W): 1 = fluid for binary maps
    (prob > threshold, as oct_seg.metrics), argmax class index for C > 1 (0 = background)."""
    prob = np.asarray(prob)
    if prob.ndim == 3 and prob.shape[-1] == 1:
        prob = prob[..., 0]
    if prob.ndim == 2:
        return (prob > threshold).astype(np.uint8)
    if prob.ndim == 3:
        return np.argmax(prob, axis=-1).astype(np.uint8)
    raise ValueError(f"expected a probability map (H, W) or (H, W, C), got shape {prob.shape}")


def overlay(image: np.ndarray, labels: np.ndarray, alpha=OVERLAY_ALPHA) -> np.ndarray:
    """Grey image (H, W) in [0, 1] + label map (H, W) -> uint8 RGB (H, W, 3) with every
    label > 0 blended in its colour: out = (1 - alpha) * grey + alpha * colour."""
    grey = np.repeat(np.clip(image, 0, 1)[..., None] * 255.0, 3, axis=-1)
    out = grey.copy()
    for label in np.unique(labels[labels > 0]):
        colour = OVERLAY_COLOURS[(int(label) - 1) % len(OVERLAY_COLOURS)]
        where = labels == label
        out[where] = (1 - alpha) * grey[where] + alpha * colour
    return np.round(out).clip(0, 255).astype(np.uint8)


def resolve_spacing(volume: Volume, override: Spacing | None) -> Spacing:
    """The file's spacing, with every value given in `override` taking precedence."""
    if override is None:
        return volume.spacing
    file = volume.spacing
    pick = {k: getattr(override, k) if getattr(override, k) is not None else getattr(file, k)
            for k in ("lateral_mm", "axial_mm", "bscan_mm")}
    return Spacing(**pick, source="--spacing" + (f" + {file.source}" if file.source else ""))


def area_rows(volume: Volume, labels: list, spacing: Spacing, names: list) -> list[dict]:
    """One CSV row per B-scan: fluid pixel count and area in mm^2 (NaN when not known)."""
    pixel_area = spacing.pixel_area_mm2
    rows = []
    for k, (lab, name) in enumerate(zip(labels, names)):
        pixels = int(np.count_nonzero(lab))
        rows.append(dict(
            input=str(volume.path), volume=volume.name, bscan=k, name=name,
            height=lab.shape[0], width=lab.shape[1], fluid_pixels=pixels,
            fluid_area_mm2=pixels * pixel_area if pixel_area else np.nan,
            lateral_mm=spacing.lateral_mm, axial_mm=spacing.axial_mm,
            bscan_mm=spacing.bscan_mm, spacing_source=spacing.source))
    return rows


def volume_table(areas: pd.DataFrame) -> pd.DataFrame:
    """Per-volume totals from the per-B-scan table: fluid_pixels, fluid_area_mm2 (sum) and
    fluid_volume_mm3 = sum(area_mm2) x bscan_mm (NaN for single B-scans / unknown spacing)."""
    rows = []
    for (inp, vol), group in areas.groupby(["input", "volume"], sort=False):
        bscan_mm = group["bscan_mm"].iloc[0]
        total_area = group["fluid_area_mm2"].sum(min_count=len(group))
        known = len(group) > 1 and pd.notna(bscan_mm) and bscan_mm > 0
        rows.append(dict(input=inp, volume=vol, n_bscans=len(group),
                         fluid_pixels=int(group["fluid_pixels"].sum()),
                         fluid_area_mm2=total_area, bscan_mm=bscan_mm,
                         fluid_volume_mm3=total_area * bscan_mm if known else np.nan))
    return pd.DataFrame(rows, columns=["input", "volume", "n_bscans", "fluid_pixels",
                                       "fluid_area_mm2", "bscan_mm", "fluid_volume_mm3"])


def _bscan_names(volume: Volume, taken: set) -> list[str]:
    base, n = volume.name, 2
    while base in taken:  # same stem from two folders: name_2, name_3, ...
        base, n = f"{volume.name}_{n}", n + 1
    taken.add(base)
    if volume.path.suffix.lower() not in VOLUME_EXTENSIONS and len(volume.bscans) == 1:
        return [base]
    digits = max(3, len(str(len(volume.bscans) - 1)))
    return [f"{base}_b{k:0{digits}d}" for k in range(len(volume.bscans))]


def _save_png(array: np.ndarray, path: Path):
    from PIL import Image

    Image.fromarray(array).save(path)


def predict_files(model_or_path, inputs, out_dir, threshold=0.5, spacing: Spacing | None = None,
                  overwrite=False, img_shape=(1024, 512), progress=True,
                  batch_size=4, precision=None) -> pd.DataFrame:
    """Segment every B-scan of `inputs` (image or volume files) and write the output folder.

    model_or_path: keras.Model, .keras file or SavedModel folder. spacing: optional
    user-given geometry overriding / completing the file's. batch_size: B-scans per model
    call (same-size B-scans of one volume). precision: None (the model's own) or one of
    oct_seg.precision.PRECISIONS to run the model in (oct_seg.with_precision). Returns the
    per-B-scan fluid table (also written as fluid_areas.csv). Raises before writing anything
    when an input is missing or of an unsupported type.
    """
    from tqdm import tqdm

    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (B-scans per model call), "
                         f"got {batch_size!r}")
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("no input files given")
    for path in inputs:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: input file not found")
        if not is_supported(path):
            raise ValueError(f"{path}: unsupported input type '{path.suffix or '(none)'}'")
    if precision is not None:
        check_precision(precision)
    model = load_model(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path
    if precision is not None:
        model = with_precision(model, precision)

    rows, taken = [], set()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "masks").mkdir()
        (tmp / "overlays").mkdir()
        for path in inputs:
            for volume in read_input(path, img_shape=img_shape):
                names = _bscan_names(volume, taken)
                labels = [None] * len(names)
                with tqdm(total=len(names), unit="B-scan", desc=volume.name,
                          disable=not progress, leave=False) as bar:
                    for batch in _batches(volume.bscans, int(batch_size)):
                        probs = _predict(model, [volume.bscans[k] for k in batch], path)
                        for k, prob in zip(batch, probs):
                            lab = fluid_mask(prob, threshold)
                            binary = prob.shape[-1] == 1
                            _save_png(lab * 255 if binary else lab,
                                      tmp / "masks" / f"{names[k]}.png")
                            _save_png(overlay(volume.bscans[k], lab),
                                      tmp / "overlays" / f"{names[k]}.png")
                            labels[k] = lab
                        bar.update(len(batch))
                rows += area_rows(volume, labels, resolve_spacing(volume, spacing), names)
        areas = pd.DataFrame(rows)
        areas.to_csv(tmp / "fluid_areas.csv", index=False)
        volume_table(areas).to_csv(tmp / "fluid_volumes.csv", index=False)
    return areas


def _batches(bscans, batch_size: int) -> list[list[int]]:
    """Indices of the B-scans in model-call batches: same (H, W) only, at most batch_size
    each, shape groups in order of first appearance, acquisition order within a group."""
    groups = {}
    for k, image in enumerate(bscans):
        groups.setdefault(np.shape(image), []).append(k)
    return [group[start:start + batch_size] for group in groups.values()
            for start in range(0, len(group), batch_size)]


def _predict(model, images, path) -> np.ndarray:
    """Same-size (H, W) B-scans of input `path` -> probabilities (N, H, W, n_labels)."""
    from oct_seg.inference import input_requirements, predict_image

    h, w = np.shape(images[0])
    multiple, _ = input_requirements(model)
    if min(h, w) < multiple:
        raise ValueError(f"{path}: {h} x {w} B-scan is smaller than "
                         f"this network allows (height and width >= {multiple})")
    try:
        return np.asarray(predict_image(model, np.stack(images)[..., None],
                                        batch_size=len(images)))
    except ValueError as err:
        raise ValueError(f"{path}: cannot segment a {h} x {w} "
                         f"B-scan with this model ({err})") from err
