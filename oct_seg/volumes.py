"""Read B-scan images and vendor OCT volumes into one form: a list of grey B-scans + geometry.

Supported inputs (by file extension, case-insensitive):

======================  ==========================  ==========================================
extension               reader                      geometry taken from the file
======================  ==========================  ==========================================
.png .jpg .jpeg .bmp    oct_seg.data.readers        none (pixels only, unless --spacing)
.tif .tiff (one page)
.tif .tiff (several     this module (tifffile):     ImageJ metadata (unit + X/Y resolution,
pages: a B-scan stack)  one B-scan per page         Z spacing) or OME-XML PhysicalSizeX/Y/Z;
                                                    else none
.vol (Heidelberg)       this module (HE .vol spec)  lateral ScaleX, axial ScaleZ, B-scan
                                                    spacing Distance (all mm)
.e2e (Heidelberg)       oct-converter E2E           axial only (oct-converter fills lateral and
                                                    B-scan spacing with fixed guesses, which are
                                                    ignored): pixels only, unless --spacing
.fds / .fda (Topcon)    oct-converter FDS / FDA     lateral, B-scan spacing and axial from the
                                                    PARAM_SCAN chunk (when present)
.img (Zeiss Cirrus)     oct-converter IMG           none; B-scan size must be given
                                                    (default 1024 x 512)
.mhd (MetaImage, e.g.   SimpleITK (oct_seg.data.    ElementSpacing x, y, z = lateral, axial,
RETOUCH oct.mhd + .raw) retouch.read_metaimage)     B-scan spacing
======================  ==========================  ==========================================

oct-converter 0.7.0 has no .vol reader, so Heidelberg .vol files are read here following the
published layout (2048-byte file header, SLO image, then per B-scan a header + float32 data).
Its Topcon readers call the binary `np.fromstring` removed in NumPy 2.3; they are run with a
module-local shim (`_numpy_shim`) until oct-converter fixes it.

Every B-scan is returned as float32 (H, W) in [0, 1] (H = depth/axial, W = A-scans/lateral):
.vol reflectivities are shown with the usual fourth-root display transform, integer data is
divided by the volume's maximum, float data outside [0, 1] is min-max scaled per volume.
Single images (and one-page TIFFs) follow oct_seg.data.readers.read_image instead (integers
divided by their type's maximum, e.g. 255); so do MetaImage volumes, so that a B-scan reads as
its PNG written by `oct-seg data retouch` does (what a model trained on that folder saw).

Multi-page TIFF stacks (ImageJ / vendor exports): the page count decides, never the array
shape; every page must have the same size and pixel type (else ValueError naming the page).
Pages are scaled as images are (integers divided by their type's maximum), so a page reads
exactly as the same B-scan saved alone; colour pages (RGB samples within a page, alpha
dropped) become grey with read_image's rule (BT.601 luma, equal channels kept exactly).
X resolution gives the lateral, Y the axial spacing; the B-scan spacing is ImageJ's Z
`spacing` (when the pages are its slices) or OME PhysicalSizeZ (when SizeZ = page count).

Fundus orientation, where the file states it (used by en-face maps and the ETDRS grid):
laterality "OD" / "OS" from .vol (ScanPosition), .e2e and .fds / .fda (oct-converter's
laterality) and .img (the OD / OS in Zeiss export file names); whether B-scan 0 is the
most superior one from .vol only (B-scan StartY on the fundus image, which grows downwards).
"""
from __future__ import annotations

import contextlib
import io
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VENDOR_FORMATS = {".vol": "Heidelberg .vol", ".e2e": "Heidelberg .e2e", ".fds": "Topcon .fds",
                  ".fda": "Topcon .fda", ".img": "Zeiss Cirrus .img", ".mhd": "MetaImage .mhd"}
VOLUME_EXTENSIONS = tuple(VENDOR_FORMATS)

_VOL_HEADER_SIZE = 2048
_VOL_INVALID = 1e30  # .vol marks missing samples with FLT_MAX (3.4e38)


@dataclass(frozen=True)
class Spacing:
    """Physical pixel geometry in mm; None where the file does not say.

    lateral_mm: A-scan spacing along a B-scan (width axis); axial_mm: depth per pixel
    (height axis); bscan_mm: distance between neighbouring B-scans of a volume.
    """

    lateral_mm: float | None = None
    axial_mm: float | None = None
    bscan_mm: float | None = None
    source: str = ""

    def known(self, axis: str) -> float | None:
        """The spacing along `axis` ("lateral", "axial" or "bscan") in mm; None unless the
        value is known (finite and > 0)."""
        value = getattr(self, f"{axis}_mm")
        return value if _known(value) else None

    @property
    def pixel_area_mm2(self) -> float | None:
        """Area of one B-scan pixel in mm^2 (lateral x axial), None when either is unknown."""
        if _known(self.lateral_mm) and _known(self.axial_mm):
            return self.lateral_mm * self.axial_mm
        return None


@dataclass
class Volume:
    """One input's B-scans: float32 (H, W) arrays in [0, 1], in acquisition order.

    laterality: "OD" (right eye) / "OS" (left eye), None when the file does not say.
    superior_first: True when B-scan 0 is the most superior B-scan of a raster volume, False
    when it is the most inferior, None when the file does not say.
    """

    name: str
    path: Path
    bscans: list = field(default_factory=list)
    spacing: Spacing = field(default_factory=Spacing)
    laterality: str | None = None
    superior_first: bool | None = None


_LATERALITY = {"OD": "OD", "OS": "OS", "R": "OD", "L": "OS"}  # oct-converter says R / L


def _laterality(text) -> str | None:
    """A file's eye field ("OD", "OS", "R", "L", any padding) -> "OD" / "OS" / None."""
    return _LATERALITY.get(str(text or "").strip("\0 ").upper())


def _known(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def check_input(path) -> Path:
    """``path`` as a Path when it is an existing file of a supported type, else
    FileNotFoundError / IsADirectoryError / ValueError naming it and the problem."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give the image or volume files in it "
                                f"(e.g. {path / '*.png'})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input file not found")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS + VOLUME_EXTENSIONS:
        raise ValueError(
            f"{path}: unsupported input type '{ext or '(none)'}'; use a B-scan image "
            f"({', '.join(IMAGE_EXTENSIONS)}) or a volume ({', '.join(VOLUME_EXTENSIONS)})")
    return path


def read_input(path, img_shape=(1024, 512)) -> list[Volume]:
    """Read an image, TIFF stack or vendor volume file -> list of Volume (E2E files may hold
    several).

    img_shape: (rows, cols) of one Zeiss .img B-scan (the file does not store it).
    Every B-scan must meet oct_seg.data.readers.check_bscan_size (at least 16 x 16 pixels).
    Raises FileNotFoundError / ValueError with a message naming the file and the problem.
    """
    from oct_seg.data.readers import check_bscan_size

    path = check_input(path)
    ext = path.suffix.lower()
    if ext in (".tif", ".tiff"):
        volumes = [_read_tiff(path)]
    elif ext in IMAGE_EXTENSIONS:
        volumes = [Volume(path.stem, path, [_read_image(path)], Spacing(source="none in file"))]
    else:
        volumes = _read_vendor(path, ext, img_shape)
    for volume in volumes:
        for k, bscan in enumerate(volume.bscans):
            check_bscan_size(np.shape(bscan), path if len(volume.bscans) == 1
                             else f"{path} (B-scan {k} of {volume.name})")
    return volumes


def _read_vendor(path: Path, ext: str, img_shape) -> list[Volume]:
    """The non-empty volumes of a vendor file; every parser failure becomes one ValueError
    naming the file."""
    readers = {".vol": _read_vol, ".e2e": _read_e2e, ".fds": _read_topcon,
               ".fda": _read_topcon, ".img": lambda p: _read_img(p, img_shape),
               ".mhd": _read_mhd}
    try:
        volumes = readers[ext](path)
    except Exception as err:  # vendor parsers fail in many ways on foreign/corrupt files
        if str(err).startswith(str(path)):  # already a message of this module
            raise
        raise ValueError(f"{path}: not a readable {VENDOR_FORMATS[ext]} file, or a damaged "
                         f"one ({type(err).__name__}: {_printable(err)})") from err
    volumes = [v for v in volumes if v.bscans]
    if not volumes:
        raise ValueError(f"{path}: the file holds no OCT B-scans")
    return volumes


def _read_mhd(path: Path) -> list[Volume]:
    """A 3-D MetaImage volume (B-scans along z) with its ElementSpacing, integers divided by
    their type's maximum (module docstring)."""
    from oct_seg.data.retouch import read_metaimage

    voxels, (lateral, axial, bscan) = read_metaimage(path)
    return [Volume(path.stem, path, to_unit_range(list(voxels), integer_scale="dtype"),
                   Spacing(lateral, axial, bscan, "MetaImage ElementSpacing"))]


def _printable(err: BaseException, limit: int = 160) -> str:
    """A parser's message on one short line, with byte strings (a parser quoting the file's
    raw bytes) replaced by <bytes>."""
    text = re.sub(r"""b(['"]).*?(?<!\\)\1""", "<bytes>", str(err))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _read_image(path: Path) -> np.ndarray:
    from oct_seg.data.readers import DataError, read_image

    try:
        image = read_image(path)
    except DataError:  # names the file and the problem
        raise
    except Exception as err:
        raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"{path}: expected a grey 2-D B-scan, got an array of shape {image.shape}")
    return image


def to_unit_range(bscans, integer_scale="volume") -> list[np.ndarray]:
    """Scale a volume's B-scans to float32 [0, 1] with one scale for the whole volume.

    Integer data is divided by the volume's maximum (integer_scale="volume": vendor volumes,
    whose dtype maximum is not the display white) or by the dtype's maximum ("dtype": image
    stacks, so that a TIFF page reads as the same image saved alone would, see
    oct_seg.data.readers.read_image). Float data in [0, 1] is kept, else min-max scaled.
    """
    if integer_scale not in ("volume", "dtype"):
        raise ValueError(f"integer_scale must be 'volume' or 'dtype', got {integer_scale!r}")
    arrays = [np.asarray(b) for b in bscans]
    if not arrays:
        return []
    stack_max = max(float(np.nanmax(a)) for a in arrays)
    stack_min = min(float(np.nanmin(a)) for a in arrays)
    if np.issubdtype(arrays[0].dtype, np.integer):
        if integer_scale == "dtype":
            stack_max = float(np.iinfo(arrays[0].dtype).max)
        scale = stack_max if stack_max > 0 else 1.0
        return [(a.astype(np.float32) / scale).clip(0, 1) for a in arrays]
    if stack_min >= 0.0 and stack_max <= 1.0:
        return [np.nan_to_num(a.astype(np.float32)) for a in arrays]
    span = stack_max - stack_min if stack_max > stack_min else 1.0
    return [np.nan_to_num(((a - stack_min) / span).astype(np.float32)).clip(0, 1)
            for a in arrays]


# ------------------------------------------------------------------------- TIFF (one or a stack)
_LENGTH_UNITS_MM = {"mm": 1.0, "millimeter": 1.0, "cm": 10.0, "nm": 1e-6, "m": 1000.0,
                    "um": 1e-3, "micron": 1e-3, "microns": 1e-3, "micrometer": 1e-3,
                    "\u00b5m": 1e-3, "\u03bcm": 1e-3, "\\u00b5m": 1e-3}


def _read_tiff(path: Path) -> Volume:
    """One-page TIFF: the single-image reader. Several pages: one B-scan per page."""
    import tifffile

    from oct_seg.data.readers import rgb_to_grey

    try:
        tif = tifffile.TiffFile(path)
    except Exception:  # not a TIFF: the image reader names the problem as for any image
        return Volume(path.stem, path, [_read_image(path)], Spacing(source="none in file"))
    with tif:
        if len(tif.pages) < 2:
            return Volume(path.stem, path, [_read_image(path)], Spacing(source="none in file"))
        raw = [_read_page(path, tif.pages, k) for k in range(len(tif.pages))]
        spacing = _tiff_spacing(tif)
    bscans = [rgb_to_grey(a).astype(np.float32) if a.ndim == 3 else a
              for a in to_unit_range(raw, integer_scale="dtype")]
    return Volume(path.stem, path, bscans, spacing)


def _read_page(path: Path, pages, k: int) -> np.ndarray:
    """Page k of a stack -> its stored values, (H, W) grey or (H, W, 3) RGB."""
    page, first = pages[k], pages[0]
    if (page.shape, page.dtype) != (first.shape, first.dtype):
        raise ValueError(f"{path}: page {k} (counting from 0) is {page.shape} {page.dtype} but "
                         f"page 0 is {first.shape} {first.dtype}; all pages of a B-scan stack "
                         "must have one size and pixel type")
    try:
        arr = page.asarray()
    except Exception as err:
        raise ValueError(f"{path}: cannot decode page {k} ({type(err).__name__}: {err})") from err
    if "S" not in page.axes:
        return arr
    arr = np.moveaxis(arr, page.axes.index("S"), -1)
    colours = page.samplesperpixel - len(page.extrasamples)  # extra samples (alpha) come last
    if colours not in (1, 3):
        raise ValueError(f"{path}: page {k} has {colours} colour samples per pixel "
                         f"({page.photometric.name}); expected grey (1) or RGB (3)")
    return arr[..., 0] if colours == 1 else arr[..., :3]


def _tiff_spacing(tif) -> Spacing:
    """Geometry of a TIFF stack from ImageJ or OME metadata that states a length unit."""
    n_pages = len(tif.pages)
    if tif.is_imagej:
        meta = tif.imagej_metadata or {}
        per_mm = _LENGTH_UNITS_MM.get(str(meta.get("unit", "")).strip().lower())
        tags = tif.pages[0].tags
        if per_mm and "XResolution" in tags and "YResolution" in tags:
            lateral, axial = (_per_pixel(tags[n].value) for n in ("XResolution", "YResolution"))
            z = meta.get("spacing") if meta.get("slices", 1) == n_pages else None
            return _checked_spacing(lateral, axial, z, per_mm, "imagej metadata")
    if tif.is_ome:
        return _ome_spacing(tif.ome_metadata, n_pages)
    return Spacing(source="none in file")


def _per_pixel(resolution) -> float | None:
    """A TIFF RATIONAL resolution (pixels per unit) -> units per pixel."""
    num, den = resolution
    return den / num if num and den else None


def _ome_spacing(xml: str, n_pages: int) -> Spacing:
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:  # malformed OME-XML: no reliable geometry
        return Spacing(source="none in file")
    images = [e for e in root.iter() if e.tag.endswith("}Image")]
    pixels = [e for e in images[0] if e.tag.endswith("}Pixels")] if len(images) == 1 else []
    if not pixels:
        return Spacing(source="none in file")
    attrib = pixels[0].attrib

    def size_mm(axis):  # OME default unit: micrometre
        per_mm = _LENGTH_UNITS_MM.get(attrib.get(f"PhysicalSize{axis}Unit", "um").lower())
        return _to_mm(attrib.get(f"PhysicalSize{axis}"), per_mm)

    z = size_mm("Z") if attrib.get("SizeZ") == str(n_pages) else None
    return _checked_spacing(size_mm("X"), size_mm("Y"), z, 1.0, "ome metadata")


def _to_mm(value, per_mm) -> float | None:
    """A metadata value in a unit of `per_mm` mm -> mm; None if absent, unparsable or <= 0."""
    try:
        mm = float(value) * per_mm
    except (TypeError, ValueError):
        return None
    return mm if _known(mm) else None


def _checked_spacing(lateral, axial, bscan, per_mm: float, source: str) -> Spacing:
    """Spacing in mm from values in a unit of `per_mm` mm; unknown / non-positive -> None."""
    values = [_to_mm(v, per_mm) for v in (lateral, axial, bscan)]
    if values[0] is None and values[1] is None:
        return Spacing(source="none in file")
    return Spacing(*values, source=source)


# ----------------------------------------------------------------- Heidelberg .vol (own reader)
def read_vol_header(path) -> dict:
    """The fields of a Heidelberg .vol file header needed to read B-scans and geometry."""
    with open(path, "rb") as f:
        raw = f.read(_VOL_HEADER_SIZE)
    if len(raw) < _VOL_HEADER_SIZE or not raw.startswith(b"HSF-OCT"):
        raise ValueError(f"{path}: not a Heidelberg .vol file (no 'HSF-OCT' header)")
    size_x, n_bscans, size_z = struct.unpack_from("<3i", raw, 12)
    scale_x, distance, scale_z = struct.unpack_from("<3d", raw, 24)
    size_x_slo, size_y_slo = struct.unpack_from("<2i", raw, 48)
    (bscan_hdr_size,) = struct.unpack_from("<i", raw, 100)
    return dict(version=raw[:12].rstrip(b"\0").decode("ascii", "replace"), size_x=size_x,
                n_bscans=n_bscans, size_z=size_z, scale_x=scale_x, distance=distance,
                scale_z=scale_z, size_x_slo=size_x_slo, size_y_slo=size_y_slo,
                scan_position=raw[84:88].decode("ascii", "replace"),
                bscan_hdr_size=bscan_hdr_size)


def _read_vol(path: Path) -> list[Volume]:
    h = read_vol_header(path)
    bad = {k: h[k] for k in ("size_x", "n_bscans", "size_z", "bscan_hdr_size") if h[k] <= 0}
    if bad:
        raise ValueError(f"{path}: damaged .vol header: "
                         + ", ".join(f"{k} = {v}" for k, v in bad.items()) + " (must be > 0)")
    n_pixels = h["size_x"] * h["size_z"]
    start = _VOL_HEADER_SIZE + h["size_x_slo"] * h["size_y_slo"]
    stride = h["bscan_hdr_size"] + 4 * n_pixels
    expected = start + h["n_bscans"] * stride
    if path.stat().st_size < expected:
        raise ValueError(f"{path}: truncated .vol file ({path.stat().st_size} bytes, header "
                         f"promises {expected})")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    # B-scan header: StartY (mm on the fundus image, downwards = inferior) at byte 24
    first_y, last_y = (struct.unpack_from("<d", data, start + i * stride + 24)[0]
                       for i in (0, h["n_bscans"] - 1))
    bscans = []
    for i in range(h["n_bscans"]):
        offset = start + i * stride + h["bscan_hdr_size"]
        raw = np.frombuffer(data[offset:offset + 4 * n_pixels].tobytes(), dtype="<f4")
        values = raw.reshape(h["size_z"], h["size_x"]).astype(np.float32)
        values[~(np.abs(values) < _VOL_INVALID)] = 0.0
        bscans.append(np.power(values.clip(0, 1), 0.25, dtype=np.float32))
    distance = h["distance"] if h["n_bscans"] > 1 else None
    spacing = Spacing(h["scale_x"], h["scale_z"], distance, "vol header")
    superior_first = bool(first_y < last_y) if first_y != last_y else None
    return [Volume(path.stem, path, bscans, spacing, _laterality(h["scan_position"]),
                   superior_first)]


# ------------------------------------------------------------------ oct-converter based readers
@contextlib.contextmanager
def _quiet():
    """oct-converter prints progress/warnings to stdout; keep the CLI output clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _read_e2e(path: Path) -> list[Volume]:
    from oct_converter.readers import E2E

    with _quiet():
        raw_volumes = E2E(path).read_oct_volume()
    volumes = []
    for k, vol in enumerate(raw_volumes):
        axial = vol.pixel_spacing[1] if vol.pixel_spacing else None
        spacing = Spacing(None, float(axial) if _known(axial) else None, None,
                          "e2e (axial only)")
        name = path.stem if len(raw_volumes) == 1 else f"{path.stem}_vol{k}"
        volumes.append(Volume(name, path, to_unit_range(vol.volume), spacing,
                              _laterality(vol.laterality)))
    return volumes


class _NumpyFromstringShim:
    """numpy with the binary `fromstring` that oct-converter 0.7.0's Topcon readers still call
    (removed in NumPy 2.3): delegates everything else to numpy."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def fromstring(data, dtype=float, count=-1, sep=""):
        if sep:
            return np.fromstring(data, dtype=dtype, count=count, sep=sep)
        return np.frombuffer(data, dtype=dtype, count=count).copy()


@contextlib.contextmanager
def _numpy_shim(module):
    original = module.np
    module.np = _NumpyFromstringShim()
    try:
        yield
    finally:
        module.np = original


def _read_topcon(path: Path) -> list[Volume]:
    from oct_converter.readers import fda, fds

    module, reader = (fds, fds.FDS) if path.suffix.lower() == ".fds" else (fda, fda.FDA)
    with _quiet(), _numpy_shim(module):
        vol = reader(path).read_oct_volume()
    spacing = Spacing(source="none in file")
    if vol.pixel_spacing:
        lateral, bscan, axial = (float(v) for v in vol.pixel_spacing)
        spacing = Spacing(lateral, axial, bscan, f"{path.suffix.lower()[1:]} PARAM_SCAN")
    return [Volume(path.stem, path, to_unit_range(vol.volume), spacing,
                   _laterality(vol.laterality))]


def _read_img(path: Path, img_shape) -> list[Volume]:
    from oct_converter.readers import IMG

    rows, cols = (int(v) for v in img_shape)
    size = path.stat().st_size
    if size == 0 or size % (rows * cols):
        raise ValueError(f"{path}: {size} bytes is not a whole number of {rows} x {cols} "
                         "B-scans; give the Zeiss scan size with --img-shape ROWS COLS")
    with _quiet():
        vol = IMG(path).read_oct_volume(rows=rows, cols=cols)
    return [Volume(path.stem, path, to_unit_range(vol.volume), Spacing(source="none in file"),
                   _laterality(vol.laterality))]
