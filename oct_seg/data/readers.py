"""Read B-scan images, masks and dataset folders into numpy.

Dataset folder layout::

    DATASET/images/NAME.png     grey B-scan (PNG, TIFF 8/16 bit, JPEG, BMP)
    DATASET/masks/NAME.png      fluid mask, same file stem as its image
    DATASET/index.csv           optional: columns name, subject (+ any others, kept)

Rules (all documented choices):

* Grey conversion: RGB -> ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (an RGB file whose
  three channels are equal is taken as grey exactly); RGBA / LA drop the alpha channel. Any
  other channel count raises :class:`DataError`.
* Intensity: integer images are divided by their dtype's maximum (255 for 8 bit, 65535 for
  16 bit) to float32 in [0, 1]; float TIFFs must already lie in [0, 1].
* Masks: binary mode (``binary=True``) returns {0, 1}: any non-zero pixel is fluid. Masks
  holding only {0, 1} or {0, 255} are read silently; any other set of values (instance ids,
  several classes) is binarised with a :class:`UserWarning` naming the file. A JPEG mask
  whose values are not exactly {0, 255}/{0, 1} raises (lossy compression invents labels).
  Multi-class mode (``binary=False``) keeps the label values; with ``n_classes`` given, a value
  >= n_classes raises.
* Folder scan: hidden files (``.DS_Store`` ...), ``Thumbs.db``, sub-folders and files that
  are not images (``README.txt`` ...) in images/ or masks/ are skipped with one warning.
  A mask with no image is skipped with a warning; an image with no mask raises.
* Without index.csv every scan is its own subject (subject = name): patient-level splits
  are then impossible, so provide index.csv for real data.
* read_dataset adds a ``fluid_fraction`` column (mean of the binary mask) when index.csv has none.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
_LUMA_601 = np.array([0.299, 0.587, 0.114])


class DataError(ValueError):
    """A data file or folder that cannot be read correctly; the message names the file."""


@dataclasses.dataclass
class ScanSet:
    """B-scans with masks. images: float32 (H, W) in [0, 1]; masks: uint8 (H, W);
    index: DataFrame with at least ``name`` and ``subject``, one row per scan, same order."""

    names: list
    images: list
    masks: list
    index: pd.DataFrame

    def __len__(self):
        return len(self.names)

    def subset(self, names) -> "ScanSet":
        """The scans called ``names``, in that order; unknown names raise KeyError."""
        where = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in where]
        if missing:
            raise KeyError(f"names not in this ScanSet: {missing[:5]} ({len(missing)} missing)")
        rows = [where[n] for n in names]
        return ScanSet(
            names=[self.names[i] for i in rows],
            images=[self.images[i] for i in rows],
            masks=[self.masks[i] for i in rows],
            index=self.index.iloc[rows].reset_index(drop=True),
        )


def _load_raw(path: Path) -> np.ndarray:
    """Decode a file to its stored array (no scaling); DataError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {IMAGE_SUFFIXES}")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as img:
                img.load()
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                arr = np.asarray(img)
    except Exception as err:  # decoder errors come in many types
        raise DataError(f"{path}: corrupt or truncated image file ({type(err).__name__}: {err})") from err
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # 16-bit grey PNG opened in Pillow's 32-bit 'I' mode
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) TIFF
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]  # drop alpha
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 3 and np.array_equal(arr[..., 0], arr[..., 1]) \
            and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise DataError(
            f"{path}: unexpected array shape {arr.shape}; expected one grey B-scan (H, W) "
            "or (H, W, C) with C in 1 (grey), 2 (grey+alpha), 3 (RGB), 4 (RGBA)"
        )
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise DataError(f"{path}: image of shape {arr.shape} is too small")
    return arr


def read_image(path) -> np.ndarray:
    """Read one B-scan as float32 (H, W) in [0, 1] (rules in the module docstring)."""
    arr = _load_raw(path)
    if arr.dtype == np.bool_:
        scale = 1.0
    elif np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
            raise DataError(f"{path}: negative pixel values in a {arr.dtype} image")
        scale = float(np.iinfo(arr.dtype).max)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise DataError(f"{path}: float image must hold finite values in [0, 1], "
                            f"got range [{np.nanmin(arr)}, {np.nanmax(arr)}]")
        scale = 1.0
    else:
        raise DataError(f"{path}: unsupported pixel type {arr.dtype}")
    arr = rgb_to_grey(arr) if arr.ndim == 3 else arr.astype(np.float64)
    return np.clip(arr / scale, 0.0, 1.0).astype(np.float32)


def rgb_to_grey(rgb) -> np.ndarray:
    """RGB (..., 3) -> float64 grey (...): BT.601 luma; equal channels are kept exactly."""
    rgb = np.asarray(rgb)
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0].astype(np.float64)
    return rgb.astype(np.float64) @ _LUMA_601


def read_mask(path, binary: bool = True, n_classes: int | None = None) -> np.ndarray:
    """Read a mask as uint8 (H, W): {0, 1} when binary, else the stored labels."""
    path = Path(path)
    arr = _load_raw(path)
    if arr.ndim == 3:
        raise DataError(f"{path}: colour mask (channels differ); masks must be single-channel labels")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"{path}: float mask with non-integer values; masks hold integer labels")
    values = np.unique(arr)
    if values.size and values.min() < 0:
        raise DataError(f"{path}: negative mask values {values[values < 0][:5].tolist()}")
    plain = set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}
    if path.suffix.lower() in (".jpg", ".jpeg") and not plain:
        raise DataError(f"{path}: JPEG mask holds {values.size} distinct values; lossy compression "
                        "alters labels, save masks as PNG/TIFF/BMP")
    if binary:
        if not plain:
            warnings.warn(f"{path}: mask values {values[:8].tolist()}{'...' if values.size > 8 else ''} "
                          "are not {0,1} or {0,255}; binarising (any non-zero = fluid)", stacklevel=2)
        return (arr != 0).astype(np.uint8)
    if values.size and values.max() > 255:
        raise DataError(f"{path}: label {values.max()} does not fit uint8 (max 255)")
    if n_classes is not None and values.size and values.max() >= n_classes:
        raise DataError(f"{path}: label values {values[values >= n_classes][:5].tolist()} outside "
                        f"the expected range 0..{n_classes - 1} (n_classes={n_classes})")
    return arr.astype(np.uint8)


def _list_images(folder: Path) -> dict:
    """{stem: path} of image files in folder; other entries skipped with one warning."""
    found, skipped = {}, []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or entry.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(entry.name)
            continue
        if entry.stem in found:
            raise DataError(f"{folder}: two files share the name {entry.stem!r} "
                            f"({found[entry.stem].name}, {entry.name})")
        found[entry.stem] = entry
    if skipped:
        warnings.warn(f"{folder}: skipped {len(skipped)} non-image entries: {skipped[:10]}", stacklevel=3)
    return found


def read_dataset(folder, binary: bool = True, n_classes: int | None = None) -> ScanSet:
    """Read DATASET/images, DATASET/masks and optional index.csv into a ScanSet (sorted by name)."""
    folder = Path(folder)
    for sub in ("images", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"{folder}: no {sub}/ sub-folder; a dataset is a folder with images/ and masks/")
    images = _list_images(folder / "images")
    masks = _list_images(folder / "masks")
    if not images:
        raise DataError(f"{folder / 'images'}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    missing = [images[n].name for n in images if n not in masks]
    if missing:
        raise DataError(f"{folder / 'masks'}: no mask for image(s) {missing[:10]} (same file stem expected)")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        warnings.warn(f"{folder / 'masks'}: skipped {len(orphans)} masks without an image: {orphans[:10]}",
                      stacklevel=2)
    names = sorted(images)
    index = _read_index(folder / "index.csv", names)
    imgs, msks = [], []
    for name in names:
        img = read_image(images[name])
        msk = read_mask(masks[name], binary=binary, n_classes=n_classes)
        if img.shape != msk.shape:
            raise DataError(f"{masks[name]}: mask shape {msk.shape} differs from image "
                            f"{images[name].name} shape {img.shape}")
        imgs.append(img)
        msks.append(msk)
    if "fluid_fraction" not in index.columns:
        index["fluid_fraction"] = [float(np.mean(m > 0)) for m in msks]
    return ScanSet(names=names, images=imgs, masks=msks, index=index)


def _read_index(path: Path, names: list) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame({"name": names, "subject": names})
    try:
        index = pd.read_csv(path, dtype={"name": str})
    except Exception as err:
        raise DataError(f"{path}: unreadable CSV ({err})") from err
    for col in ("name", "subject"):
        if col not in index.columns:
            raise DataError(f"{path}: missing column {col!r}; columns are {list(index.columns)}")
    if index["name"].duplicated().any():
        raise DataError(f"{path}: duplicated names {index['name'][index['name'].duplicated()].tolist()[:5]}")
    if index["subject"].isna().any():
        raise DataError(f"{path}: empty subject for {index['name'][index['subject'].isna()].tolist()[:5]}")
    unknown = sorted(set(names) - set(index["name"]))
    if unknown:
        raise DataError(f"{path}: images without an index row: {unknown[:10]}")
    extra = sorted(set(index["name"]) - set(names))
    if extra:
        raise DataError(f"{path}: index rows without an image: {extra[:10]}")
    return index.set_index("name").loc[names].reset_index()
