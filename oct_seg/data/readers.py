"""Read B-scan images, masks and dataset folders into numpy.

Dataset folder layout::

    DATASET/images/NAME.png     grey B-scan (PNG, TIFF 8/16 bit, JPEG, BMP)
    DATASET/masks/NAME.png      fluid mask, same file stem as its image
    DATASET/index.csv           optional: columns name, subject (+ any others, kept);
                                a ``classes`` column declares a multi-class set (below)

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
* Size: a B-scan must be at least ``MIN_SIDE`` (16) pixels high and wide -- the one size
  rule of every command, checked where B-scans enter (``check_bscan_size``: read_dataset
  for train / evaluate, oct_seg.volumes.read_input for predict, oct_seg.data.duke for
  data duke; read_image / read_mask themselves decode any size). A real B-scan has hundreds
  of pixels each way; a smaller array is a wrong file or a wrong axis (a 2 x 100000 "image"
  is a line profile), and 16 is the size step of the default 5-level networks, so a smaller
  scan would be mostly padding. Above it any size goes: native mode pads to the network's
  multiple, resize mode stretches to --image-size and back.
* Pixel limit: Pillow refuses images of more than 2 x ``PIL.Image.MAX_IMAGE_PIXELS``
  (~179 M) pixels as possible decompression bombs; set the environment variable
  ``OCT_SEG_MAX_PIXELS`` to a larger pixel count to read a larger file you trust.
* Folder scan: hidden files (``.DS_Store`` ...), ``Thumbs.db``, sub-folders and files that
  are not images (``README.txt`` ...) in images/ or masks/ are skipped with one warning.
  A mask with no image is skipped with a warning; an image with no mask raises.
* Without index.csv every scan is its own subject (subject = name), with a warning:
  folds split by subject are then not patient-wise, so provide index.csv for real data.
* read_dataset adds a ``fluid_fraction`` column (mean of the binary mask) when index.csv has none.
* Classes: a ``classes`` column in index.csv (the same text in every row, e.g.
  ``IRF;SRF;PED``) names the fluid classes 1, 2, ... in id order (0 is background). With it,
  read_dataset keeps the masks' integer class ids (``binary=False``, a PNG pixel value = the
  class id) and refuses a mask holding an id outside 0..len(classes); ``ScanSet.classes``
  is then the tuple of names. Without it the set is binary (``classes == ()``), as before.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
INDEX_FILE = "index.csv"
MIN_SIDE = 16
CLASSES_COLUMN = "classes"
CLASS_SEPARATOR = ";"
MAX_PIXELS_ENV = "OCT_SEG_MAX_PIXELS"
_LUMA_601 = np.array([0.299, 0.587, 0.114])


class DataError(ValueError):
    """A data file or folder that cannot be read correctly; the message names the file."""


@dataclasses.dataclass
class ScanSet:
    """B-scans with masks. images: float32 (H, W) in [0, 1]; masks: uint8 (H, W);
    index: DataFrame with at least ``name`` and ``subject``, one row per scan, same order.
    classes: names of the fluid classes 1..C-1 of a multi-class set (masks hold class ids
    0..C-1, 0 = background); () for a binary set (masks {0, 1})."""

    names: list
    images: list
    masks: list
    index: pd.DataFrame
    classes: tuple = ()

    @property
    def n_labels(self) -> int:
        """Output channels of a network for this set: 1 (binary, sigmoid) or C (softmax)."""
        return len(self.classes) + 1

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
            classes=self.classes,
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

            with _pixel_limit(), Image.open(path) as img:
                img.load()
                if img.mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                arr = np.asarray(img)
    except DataError:
        raise
    except Exception as err:  # decoder errors come in many types
        from PIL import Image

        if isinstance(err, Image.DecompressionBombError):
            raise DataError(_too_many_pixels(path)) from None
        raise DataError(f"{path}: not a readable image (corrupt, truncated or not an image; "
                        f"{type(err).__name__}: {err})") from err
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
    return arr


def check_bscan_size(shape, where) -> None:
    """DataError naming ``where`` when a B-scan of ``shape`` (H, W, ...) is smaller than
    MIN_SIDE in height or width (the rule in the module docstring)."""
    h, w = (int(n) for n in tuple(shape)[:2])
    if min(h, w) < MIN_SIDE:
        raise DataError(f"{where}: {h} x {w} B-scan is smaller than {MIN_SIDE} x {MIN_SIDE} "
                        "pixels, the smallest size oct_seg accepts (wrong file or axis?)")


@contextlib.contextmanager
def _pixel_limit():
    """Pillow's decompression-bomb limit, raised to OCT_SEG_MAX_PIXELS when that is set."""
    from PIL import Image

    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        yield
        return
    if not value.isdigit() or int(value) < 1:
        raise DataError(f"{MAX_PIXELS_ENV}={value!r}: give a positive pixel count")
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(saved or 0, int(value))
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _too_many_pixels(path) -> str:
    """The message for an image Pillow refuses as a possible decompression bomb."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as img:  # reads the header only
            w, h = img.size
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    limit = 2 * int(saved) if saved else 0
    return (f"{path}: {h} x {w} image ({h * w:,} pixels) exceeds the pixel limit of "
            f"{limit:,} that guards against decompression bombs; if you trust the file, set "
            f"the environment variable {MAX_PIXELS_ENV}={h * w} and rerun")


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
        raise DataError(f"{path}: class ids {values[values >= n_classes][:5].tolist()} outside "
                        f"the declared classes 0..{n_classes - 1} (n_classes={n_classes})")
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


def check_data_folder(folder) -> Path:
    """The folder as a Path when it has the layout of a data folder (images/ and masks/),
    else DataError saying exactly what is missing; reads no image."""
    folder = Path(folder)
    layout = (f"a data folder holds images/ and masks/ with the same file names (and "
              f"optionally {INDEX_FILE})")
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found" if not folder.exists()
                        else f"{folder}: is a file, not a data folder")
    if not any(folder.iterdir()):
        raise DataError(f"{folder}: empty folder; {layout}")
    for sub in ("images", "masks"):
        if not (folder / sub).is_dir():
            raise DataError(f"{folder}: no {sub}/ sub-folder; {layout}")
    return folder


def read_dataset(folder, binary: bool = True, n_classes: int | None = None) -> ScanSet:
    """Read DATASET/images, DATASET/masks and optional index.csv into a ScanSet (sorted by name).

    An index.csv with a ``classes`` column makes the set multi-class (module docstring):
    masks keep their class ids, checked against the declared classes, whatever ``binary``
    and ``n_classes`` say."""
    folder = check_data_folder(folder)
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
    index = _read_index(folder / INDEX_FILE, names)
    classes = declared_classes(index, folder / INDEX_FILE)
    if classes:
        binary, n_classes = False, len(classes) + 1
    imgs, msks = [], []
    for name in names:
        img = read_image(images[name])
        check_bscan_size(img.shape, images[name])
        msk = read_mask(masks[name], binary=binary, n_classes=n_classes)
        if img.shape != msk.shape:
            raise DataError(f"{masks[name]}: mask shape {msk.shape} differs from image "
                            f"{images[name].name} shape {img.shape}")
        imgs.append(img)
        msks.append(msk)
    if "fluid_fraction" not in index.columns:
        index["fluid_fraction"] = [float(np.mean(m > 0)) for m in msks]
    return ScanSet(names=names, images=imgs, masks=msks, index=index, classes=classes)


def class_columns(mask, classes) -> dict:
    """index.csv columns of one multi-class mask: ``NAME_fraction`` (share of its pixels with
    class id k, rounded to 1e-6) for the names of ``classes`` (ids 1, 2, ...), and
    ``classes`` itself ("IRF;SRF;PED")."""
    mask = np.asarray(mask)
    row = {f"{name}_fraction": round(float(np.mean(mask == cid)), 6)
           for cid, name in enumerate(classes, start=1)}
    return {**row, CLASSES_COLUMN: CLASS_SEPARATOR.join(classes)}


def declared_classes(index: pd.DataFrame, path) -> tuple:
    """The fluid class names of index.csv's ``classes`` column ("IRF;SRF;PED" -> ("IRF",
    "SRF", "PED"), ids 1, 2, 3), () without the column; DataError naming ``path`` when rows
    disagree, a name is empty or repeated, or a name is "background" (id 0 is implicit)."""
    if CLASSES_COLUMN not in index.columns:
        return ()
    values = index[CLASSES_COLUMN].dropna().astype(str).unique()
    if len(values) != 1 or index[CLASSES_COLUMN].isna().any():
        raise DataError(f"{path}: column {CLASSES_COLUMN!r} must hold the same class list in "
                        f"every row (e.g. IRF;SRF;PED); found {sorted(values)[:4]}")
    names = tuple(name.strip() for name in values[0].split(CLASS_SEPARATOR))
    if any(not n for n in names) or len(set(names)) != len(names) \
            or any(n.lower() == "background" for n in names):
        raise DataError(f"{path}: classes {values[0]!r} must be distinct non-empty names of the "
                        f"fluid classes 1, 2, ... separated by {CLASS_SEPARATOR!r} (background, "
                        "id 0, is implicit)")
    return names


def _read_index(path: Path, names: list) -> pd.DataFrame:
    if not path.is_file():
        warnings.warn(f"{path.parent}: no {INDEX_FILE}, so every scan is its own subject and "
                      "folds are not split by patient; add index.csv (columns name, subject) "
                      "for patient-wise folds", stacklevel=3)
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
