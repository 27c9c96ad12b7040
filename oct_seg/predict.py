"""Predict fluid masks for B-scan images and vendor OCT volumes; write masks, overlays, CSVs.

Output folder (written into a temporary folder next to it and renamed at the end, so a failed
run leaves nothing behind):

    masks/NAME.png        binary fluid mask, 0 / 255 (multi-class models: class id 0..C-1)
    overlays/NAME.png     the grey B-scan with fluid in translucent cyan (multi-class: one
                          colour per class, ``OVERLAY_COLOURS``, and a legend band below)
    fluid_areas.csv       one row per B-scan: fluid_pixels, fluid_area_mm2 (when the lateral
                          and axial pixel spacing are known), spacing used and its source;
                          multi-class: also NAME_pixels, NAME_area_mm2 per class
    fluid_volumes.csv     one row per input volume: total pixels / mm^2 and fluid_volume_mm3
                          (multi-class: also NAME_pixels, NAME_area_mm2, NAME_volume_mm3)
    reports/VOLUME_*      for every volume of more than one B-scan, all of one size: the
                          one-page report, en-face fluid map (PNG and 16-bit TIFF) and
                          ETDRS table (oct_seg.report.write_volume_report)

NAME is the input file's stem for images, STEM_bNNN for B-scan NNN of a volume (vendor files
and multi-page TIFF stacks).
B-scans of one volume that share a size are segmented `batch_size` at a time (one model call
per batch); the results do not depend on batch_size beyond float round-off.
Fluid volume rule (Cavalieri): volume_mm3 = sum over B-scans of area_mm2 x B-scan spacing (mm),
i.e. every B-scan stands for a slab as thick as the distance between B-scans; it is left empty
for single B-scans and when any of lateral, axial or B-scan spacing is unknown.
fluid_* columns count fluid of any class; the volume reports (en-face map, ETDRS table) too.
Class names of a multi-class model: ``classes=`` (--classes), else its training record or
export sidecar (oct_seg.loading.model_classes), else class1, class2, ...
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from oct_seg.fovea import Fovea
from oct_seg.io import atomic_dir
from oct_seg.loading import load_models, model_classes
from oct_seg.metrics import fluid_mask
from oct_seg.precision import check_precision, with_precision
from oct_seg.report import check_report_options, write_volume_report
from oct_seg.volumes import VOLUME_EXTENSIONS, Spacing, Volume, check_input, read_input

OVERLAY_COLOURS = np.array([[0, 200, 255], [255, 80, 0], [80, 255, 0], [255, 0, 200]],
                           dtype=np.float32)
OVERLAY_ALPHA = 0.45


def overlay(image: np.ndarray, labels: np.ndarray, alpha=OVERLAY_ALPHA, classes=()
            ) -> np.ndarray:
    """Grey image (H, W) in [0, 1] + label map (H, W) -> uint8 RGB (H, W, 3) with every
    label > 0 blended in its colour: out = (1 - alpha) * grey + alpha * colour.

    classes: names of labels 1, 2, ... of a multi-class map: a legend band (a swatch of each
    class's colour and its name, rows of ``LEGEND_ROW`` px) is added below the B-scan, so the
    image is (H + band, W, 3) and no pixel of the scan is covered."""
    grey = np.repeat(np.clip(image, 0, 1)[..., None] * 255.0, 3, axis=-1)
    out = grey.copy()
    for label in np.unique(labels[labels > 0]):
        colour = OVERLAY_COLOURS[(int(label) - 1) % len(OVERLAY_COLOURS)]
        where = labels == label
        out[where] = (1 - alpha) * grey[where] + alpha * colour
    rgb = np.round(out).clip(0, 255).astype(np.uint8)
    return np.concatenate([rgb, legend(classes, rgb.shape[1])]) if classes else rgb


LEGEND_ROW = 14  # px per legend row: Pillow's default 10 px bitmap font and a 10 px swatch


def legend(classes, width: int) -> np.ndarray:
    """uint8 RGB legend band (rows x LEGEND_ROW, width, 3): for class k (label k) a swatch
    of OVERLAY_COLOURS[k - 1] and its name, on black, wrapped into rows to fit ``width``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=10)
    items, x, row = [], 2, 0
    for k, name in enumerate(classes, start=1):
        step = 14 + int(np.ceil(font.getlength(name))) + 8
        if x > 2 and x + step > width:
            x, row = 2, row + 1
        items.append((k, name, x, row))
        x += step
    band = Image.new("RGB", (width, LEGEND_ROW * (row + 1)))
    draw = ImageDraw.Draw(band)
    for k, name, x, row in items:
        top = row * LEGEND_ROW + 2
        colour = tuple(int(c) for c in OVERLAY_COLOURS[(k - 1) % len(OVERLAY_COLOURS)])
        draw.rectangle([x, top, x + 9, top + 9], fill=colour)
        draw.text((x + 14, top - 1), name, fill=(255, 255, 255), font=font)
    return np.asarray(band)


def resolve_spacing(volume: Volume, override: Spacing | None) -> Spacing:
    """The file's spacing, with every value given in `override` taking precedence."""
    if override is None:
        return volume.spacing
    file = volume.spacing
    pick = {k: getattr(override, k) if getattr(override, k) is not None else getattr(file, k)
            for k in ("lateral_mm", "axial_mm", "bscan_mm")}
    return Spacing(**pick, source="--spacing" + (f" + {file.source}" if file.source else ""))


def area_rows(volume: Volume, labels: list, spacing: Spacing, names: list, classes=()
              ) -> list[dict]:
    """One CSV row per B-scan: fluid pixel count and area in mm^2 (NaN when not known), of
    any class, then per class (``classes``: names of labels 1, 2, ...) NAME_pixels and
    NAME_area_mm2."""
    pixel_area = spacing.pixel_area_mm2
    rows = []
    for k, (lab, name) in enumerate(zip(labels, names)):
        counts = {"fluid": int(np.count_nonzero(lab))}
        counts.update({cname: int(np.count_nonzero(lab == cid))
                       for cid, cname in enumerate(classes, start=1)})
        row = dict(input=str(volume.path), volume=volume.name, bscan=k, name=name,
                   height=lab.shape[0], width=lab.shape[1])
        for what, pixels in counts.items():
            row[f"{what}_pixels"] = pixels
            row[f"{what}_area_mm2"] = pixels * pixel_area if pixel_area else np.nan
        rows.append(dict(row, lateral_mm=spacing.lateral_mm, axial_mm=spacing.axial_mm,
                         bscan_mm=spacing.bscan_mm, spacing_source=spacing.source))
    return rows


def volume_table(areas: pd.DataFrame, classes=()) -> pd.DataFrame:
    """Per-volume totals from the per-B-scan table: fluid_pixels, fluid_area_mm2 (sum) and
    fluid_volume_mm3 = sum(area_mm2) x bscan_mm (NaN for single B-scans / unknown spacing);
    the same three per class (NAME_pixels, NAME_area_mm2, NAME_volume_mm3) for ``classes``."""
    kinds = ["fluid", *classes]
    rows = []
    for (inp, vol), group in areas.groupby(["input", "volume"], sort=False):
        bscan_mm = group["bscan_mm"].iloc[0]
        known = len(group) > 1 and pd.notna(bscan_mm) and bscan_mm > 0
        row = dict(input=inp, volume=vol, n_bscans=len(group), bscan_mm=bscan_mm)
        for what in kinds:
            total_area = group[f"{what}_area_mm2"].sum(min_count=len(group))
            row.update({f"{what}_pixels": int(group[f"{what}_pixels"].sum()),
                        f"{what}_area_mm2": total_area,
                        f"{what}_volume_mm3": total_area * bscan_mm if known else np.nan})
        rows.append(row)
    columns = ["input", "volume", "n_bscans", "fluid_pixels", "fluid_area_mm2", "bscan_mm",
               "fluid_volume_mm3"]
    columns += [f"{c}_{m}" for c in classes for m in ("pixels", "area_mm2", "volume_mm3")]
    return pd.DataFrame(rows, columns=columns)


def _bscan_names(volume: Volume, taken: set) -> tuple[str, list[str]]:
    """(volume name unique in the output, one name per B-scan)."""
    base, n = volume.name, 2
    while base in taken:  # same stem from two folders: name_2, name_3, ...
        base, n = f"{volume.name}_{n}", n + 1
    taken.add(base)
    if volume.path.suffix.lower() not in VOLUME_EXTENSIONS and len(volume.bscans) == 1:
        return base, [base]
    digits = max(3, len(str(len(volume.bscans) - 1)))
    return base, [f"{base}_b{k:0{digits}d}" for k in range(len(volume.bscans))]


def _save_png(array: np.ndarray, path: Path):
    """PNG at zlib level 3: a 496 x 768 overlay encodes in ~36 ms instead of ~98 ms at PIL's
    default 6, and is no larger (~300 KB); masks compress to ~1 KB either way."""
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=3)


def predict_files(model_or_path, inputs, out_dir, threshold=0.5, spacing: Spacing | None = None,
                  overwrite=False, img_shape=(1024, 512), progress=True,
                  batch_size=4, precision=None, tta=False, fovea=None, eye=None,
                  report_format="png", classes=None) -> pd.DataFrame:
    """Segment every B-scan of `inputs` (image or volume files) and write the output folder.

    model_or_path: keras.Model, list of models (an ensemble: probabilities averaged), .keras
    file, SavedModel folder, or a training run folder (its fold models as an ensemble, see
    oct_seg.loading.load_models). tta: also predict each mirrored B-scan and average (2x the
    time; oct_seg.inference.predict_image). spacing: optional
    user-given geometry overriding / completing the file's. batch_size: B-scans per model
    call (same-size B-scans of one volume). precision: None (the model's own) or one of
    oct_seg.precision.PRECISIONS to run the model in (oct_seg.with_precision). Volume
    reports: fovea (bscan, column) instead of finding it (one input only), eye "OD" / "OS"
    instead of the file's laterality, report_format "png" / "pdf". classes: names of a
    multi-class model's fluid classes (labels 1, 2, ...; module docstring). Returns the
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
        check_input(path)
    if precision is not None:
        check_precision(precision)
    check_report_options(eye, report_format)
    if fovea is not None and len(inputs) != 1:
        raise ValueError(f"fovea (--fovea) is the position in one volume; got "
                         f"{len(inputs)} inputs")
    if isinstance(model_or_path, (str, Path)):
        models = load_models(model_or_path)
        classes = classes or model_classes(model_or_path)
    else:
        models = list(model_or_path) if isinstance(model_or_path, (list, tuple)) \
            else [model_or_path]
    classes = _class_names(models, classes)
    if precision is not None:
        models = [with_precision(m, precision) for m in models]

    rows, taken = [], set()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "masks").mkdir()
        (tmp / "overlays").mkdir()
        for path in inputs:
            for volume in read_input(path, img_shape=img_shape):
                given = None if fovea is None else Fovea.given(
                    *fovea, (len(volume.bscans), np.shape(volume.bscans[0])[1]), path)
                base, names = _bscan_names(volume, taken)
                labels = [None] * len(names)
                with tqdm(total=len(names), unit="B-scan", desc=volume.name,
                          disable=not progress, leave=False) as bar:
                    for batch in _batches(volume.bscans, int(batch_size)):
                        probs = _predict(models, [volume.bscans[k] for k in batch], path,
                                         tta)
                        for k, prob in zip(batch, probs):
                            lab = fluid_mask(prob, threshold)
                            binary = prob.shape[-1] == 1
                            _save_png(lab * 255 if binary else lab,
                                      tmp / "masks" / f"{names[k]}.png")
                            _save_png(overlay(volume.bscans[k], lab, classes=classes),
                                      tmp / "overlays" / f"{names[k]}.png")
                            labels[k] = lab
                        bar.update(len(batch))
                geometry = resolve_spacing(volume, spacing)
                rows += area_rows(volume, labels, geometry, names, classes)
                if len(labels) > 1 and len({lab.shape for lab in labels}) == 1:  # raster
                    write_volume_report(tmp / "reports", base, volume, labels, geometry,
                                        fovea=given, eye=eye, fmt=report_format)
        areas = pd.DataFrame(rows)
        areas.to_csv(tmp / "fluid_areas.csv", index=False)
        volume_table(areas, classes).to_csv(tmp / "fluid_volumes.csv", index=False)
    return areas


def _class_names(models, classes) -> tuple:
    """The fluid class names of the models' output: () for one (sigmoid) channel; for C > 1
    channels ``classes`` when given (C - 1 names, else ValueError), else class1..class{C-1}."""
    channels = int(models[0].outputs[-1].shape[-1])
    if channels == 1:
        if classes:
            raise ValueError(f"classes {list(classes)} given for a binary (one-channel) model")
        return ()
    if not classes:
        return tuple(f"class{k}" for k in range(1, channels))
    if len(classes) != channels - 1:
        raise ValueError(f"{len(classes)} class names {list(classes)} for a model of "
                         f"{channels} channels; give {channels - 1} (background is implicit)")
    return tuple(classes)


def _batches(bscans, batch_size: int) -> list[list[int]]:
    """Indices of the B-scans in model-call batches: same (H, W) only, at most batch_size
    each, shape groups in order of first appearance, acquisition order within a group."""
    groups = {}
    for k, image in enumerate(bscans):
        groups.setdefault(np.shape(image), []).append(k)
    return [group[start:start + batch_size] for group in groups.values()
            for start in range(0, len(group), batch_size)]


def _predict(models, images, path, tta=False) -> np.ndarray:
    """Same-size (H, W) B-scans of input `path` -> probabilities (N, H, W, n_labels)."""
    from oct_seg.inference import predict_image

    h, w = np.shape(images[0])
    try:
        return np.asarray(predict_image(models, np.stack(images)[..., None],
                                        batch_size=len(images), tta=tta))
    except ValueError as err:
        raise ValueError(f"{path}: cannot segment a {h} x {w} "
                         f"B-scan with this model ({err})") from err
