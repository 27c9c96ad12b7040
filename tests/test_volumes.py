"""Vendor volume reading (oct_seg.volumes).

No vendor sample files ship with oct-converter, so the tests write small files byte by byte
from the published layouts: Heidelberg .vol (read by oct_seg's own reader), Topcon .fds and
Zeiss .img (read through oct-converter). Heidelberg .e2e is too intricate to synthesise: its
geometry handling is tested with a fake oct-converter reader (monkeypatched), and a corrupt
file is checked to give a clear error.
"""
import struct

import numpy as np
import pytest
from PIL import Image

from oct_seg.volumes import Spacing, read_input, to_unit_range

FLT_MAX = np.finfo(np.float32).max


def write_vol(path, bscans, scale_x, distance, scale_z, slo=(6, 5), bscan_hdr=456, eye=b"",
              start_y=None):
    """Heidelberg .vol: 2048-byte header, SLO (uint8), per B-scan header + float32 (Z, X).

    eye: ScanPosition (b"OD" / b"OS"); start_y: per B-scan StartY in mm (default all 0)."""
    n = len(bscans)
    size_z, size_x = bscans[0].shape
    header = bytearray(2048)
    header[0:12] = b"HSF-OCT-103\0"
    struct.pack_into("<iii", header, 12, size_x, n, size_z)
    struct.pack_into("<ddd", header, 24, scale_x, distance, scale_z)
    struct.pack_into("<ii", header, 48, slo[0], slo[1])
    header[84:84 + len(eye)] = eye
    struct.pack_into("<i", header, 100, bscan_hdr)
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.full(slo[0] * slo[1], 7, np.uint8).tobytes())
        for k, b in enumerate(bscans):
            hdr = bytearray(bscan_hdr)
            hdr[0:12] = b"HSF-BS-103\0\0"
            struct.pack_into("<d", hdr, 24, 0.0 if start_y is None else start_y[k])
            f.write(hdr)
            f.write(np.asarray(b, "<f4").tobytes())


def write_fds(path, bscans_u16, x_mm, y_mm, z_um, eye=0):
    """Topcon .fds: 'FOCT' header, named chunks (@CAPTURE_INFO_02, @PARAM_SCAN_04,
    @IMG_SCAN_03), a zero-length name ends the chunk list. eye: 0 right, 1 left."""
    n = len(bscans_u16)
    height, width = bscans_u16[0].shape

    def chunk(name, payload):
        return bytes([len(name)]) + name + struct.pack("<I", len(payload)) + payload

    capture = struct.pack("<BBI", eye, 2, 1) + b"demo".ljust(100, b"\0") + struct.pack(
        "<6H", 2024, 5, 6, 7, 8, 9)
    params = struct.pack("<3I5d2B", 0, 0, 0, x_mm, y_mm, z_um, 0.0, 0.0, 0, 0)
    data = np.stack(bscans_u16).astype("<u2").tobytes()  # (n, H, W) C order = file order
    scan = struct.pack("<B4IBI", 2, width, height, 16, n, 0, len(data)) + data
    with open(path, "wb") as f:
        f.write(b"FOCT" + b"FDA" + struct.pack("<II", 1, 3))
        f.write(chunk(b"@CAPTURE_INFO_02", capture))
        f.write(chunk(b"@PARAM_SCAN_04", params))
        f.write(chunk(b"@IMG_SCAN_03", scan))
        f.write(b"\0")


def test_vol_reader_values_and_geometry(tmp_path):
    rng = np.random.default_rng(0)
    raw = [rng.random((16, 20), dtype=np.float32) for _ in range(3)]
    raw[1][2, 3] = FLT_MAX  # invalid sample
    path = tmp_path / "eye.vol"
    write_vol(path, raw, scale_x=0.0115, distance=0.12, scale_z=0.0039)
    (vol,) = read_input(path)
    assert vol.name == "eye" and len(vol.bscans) == 3
    assert vol.spacing == Spacing(0.0115, 0.0039, 0.12, "vol header")
    want = raw[1] ** 0.25
    want[2, 3] = 0.0
    np.testing.assert_allclose(vol.bscans[1], want, rtol=1e-6)
    np.testing.assert_allclose(vol.bscans[2], raw[2] ** 0.25, rtol=1e-6)
    assert vol.bscans[0].dtype == np.float32 and vol.bscans[0].shape == (16, 20)


@pytest.mark.parametrize("eye, start_y, laterality, superior_first", [
    (b"OD", [1.5, 3.0, 4.5], "OD", True),    # StartY grows: B-scan 0 is the top one
    (b"OS\0\0", [4.5, 3.0, 1.5], "OS", False),
    (b"", None, None, None)])                # fields left empty: unknown
def test_vol_laterality_and_bscan_order(tmp_path, eye, start_y, laterality, superior_first):
    path = tmp_path / "eye.vol"
    write_vol(path, [np.zeros((16, 16), np.float32)] * 3, 0.01, 1.5, 0.004, eye=eye,
              start_y=start_y)
    (vol,) = read_input(path)
    assert (vol.laterality, vol.superior_first) == (laterality, superior_first)


def test_vol_single_bscan_has_no_bscan_spacing(tmp_path):
    path = tmp_path / "line.vol"
    write_vol(path, [np.full((16, 16), 0.5, np.float32)], 0.01, 0.0, 0.004)
    (vol,) = read_input(path)
    assert vol.spacing.bscan_mm is None and vol.spacing.pixel_area_mm2 == pytest.approx(4e-5)


def test_vol_bad_files(tmp_path):
    path = tmp_path / "trunc.vol"
    write_vol(path, [np.zeros((4, 4), np.float32)] * 2, 0.01, 0.1, 0.004)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"trunc\.vol: truncated"):
        read_input(path)
    fake = tmp_path / "fake.vol"
    fake.write_text("hello")
    with pytest.raises(ValueError, match=r"fake\.vol: not a Heidelberg \.vol"):
        read_input(fake)


def test_fds_through_oct_converter(tmp_path):
    rng = np.random.default_rng(1)
    bscans = [rng.integers(0, 4000, (16, 24), dtype=np.uint16) for _ in range(4)]
    path = tmp_path / "topcon.fds"
    write_fds(path, bscans, x_mm=6.0, y_mm=6.0, z_um=2.6)
    (vol,) = read_input(path)
    top = max(int(b.max()) for b in bscans)
    assert len(vol.bscans) == 4
    for got, want in zip(vol.bscans, bscans):
        np.testing.assert_allclose(got, want / top, rtol=1e-6)
    # oct-converter: [x_mm / width, y_mm / n_slices, z_um / 1000] = lateral, B-scan, axial
    assert vol.spacing.lateral_mm == pytest.approx(6.0 / 24)
    assert vol.spacing.bscan_mm == pytest.approx(6.0 / 4)
    assert vol.spacing.axial_mm == pytest.approx(0.0026)
    assert vol.laterality == "OD" and vol.superior_first is None
    write_fds(path, bscans, x_mm=6.0, y_mm=6.0, z_um=2.6, eye=1)
    assert read_input(path)[0].laterality == "OS"


def test_zeiss_img_layout_and_size_check(tmp_path):
    rows, cols = 16, 20
    bscans = [(np.arange(rows * cols) % 40).astype(np.uint8).reshape(rows, cols) + 10 * k
              for k in range(3)]
    path = tmp_path / "cube.img"
    # Zeiss .img: uint8, each B-scan stored column by column (Fortran order)
    path.write_bytes(b"".join(b.T.tobytes() for b in bscans))
    (vol,) = read_input(path, img_shape=(rows, cols))
    assert vol.spacing.pixel_area_mm2 is None
    for got, want in zip(vol.bscans, bscans):
        np.testing.assert_allclose(got, want / 59.0, rtol=1e-6)  # max over the volume = 59
    assert vol.laterality is None
    with pytest.raises(ValueError, match=r"cube\.img: .*--img-shape"):
        read_input(path, img_shape=(17, 20))
    named = tmp_path / "P1_Macular Cube 512x128_1-2-2020_3-4-5_OS_sn9_cube_z.img"
    named.write_bytes(path.read_bytes())  # Zeiss export names state the eye
    assert read_input(named, img_shape=(rows, cols))[0].laterality == "OS"


class _FakeE2E:
    """Stands in for oct_converter.readers.E2E: two volumes, as E2E.read_oct_volume returns."""

    def __init__(self, path):
        self.path = path

    def read_oct_volume(self):
        from oct_converter.image_types import OCTVolumeWithMetaData

        print("noise that oct-converter prints")
        vols = [[np.full((16, 24), 0.25, np.float32)] * 3, [np.full((16, 24), 0.5, np.float32)]]
        # oct-converter fills lateral and slice spacing with fixed defaults (0.01, 0.05)
        return [OCTVolumeWithMetaData(v, pixel_spacing=[0.01, 0.0039, 0.05], laterality=eye)
                for v, eye in zip(vols, ("L", None))]


def test_e2e_geometry_keeps_only_axial(tmp_path, monkeypatch, capsys):
    import oct_converter.readers

    monkeypatch.setattr(oct_converter.readers, "E2E", _FakeE2E)
    path = tmp_path / "scan.e2e"
    path.write_bytes(b"x")
    vols = read_input(path)
    assert [v.name for v in vols] == ["scan_vol0", "scan_vol1"]
    assert vols[0].spacing.axial_mm == pytest.approx(0.0039)
    assert vols[0].spacing.lateral_mm is None and vols[0].spacing.bscan_mm is None
    assert [v.laterality for v in vols] == ["OS", None]
    assert vols[0].spacing.pixel_area_mm2 is None
    np.testing.assert_allclose(vols[1].bscans[0], 0.5)
    assert "noise" not in capsys.readouterr().out


def test_corrupt_vendor_file_names_file(tmp_path):
    path = tmp_path / "broken.e2e"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"broken\.e2e: not a readable Heidelberg \.e2e file, "
                                         r"or a damaged one \(StreamError: [^\n]*\)$"):
        read_input(path)
    garbage = tmp_path / "x.fds"  # oct-converter quoted the file's raw bytes
    garbage.write_bytes(b"\x00\xff\x10garbage\x01\x02" * 50)
    with pytest.raises(ValueError, match=r"x\.fds: not a readable Topcon \.fds file") as info:
        read_input(garbage)
    assert "<bytes>" in str(info.value) and "\\x" not in str(info.value)
    assert len(str(info.value)) < len(str(garbage)) + 250


def test_damaged_vol_header_names_only_the_bad_fields(tmp_path):
    path = tmp_path / "eye.vol"
    write_vol(path, [np.zeros((16, 16), np.float32)], 0.01, 0.1, 0.004)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<i", raw, 16, -3)  # n_bscans
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"eye\.vol: damaged \.vol header: n_bscans = -3 "
                                         r"\(must be > 0\)$"):
        read_input(path)


def test_inputs_checked_by_kind_and_size(tmp_path):
    (tmp_path / "scans").mkdir()
    with pytest.raises(IsADirectoryError, match=r"scans: is a folder; give the image or volume "
                                                r"files in it"):  # was "input file not found"
        read_input(tmp_path / "scans")
    Image.fromarray(np.zeros((15, 40), np.uint8)).save(tmp_path / "thin.png")
    with pytest.raises(ValueError, match=r"thin\.png: 15 x 40 B-scan is smaller than 16 x 16"):
        read_input(tmp_path / "thin.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "ok.png")
    assert read_input(tmp_path / "ok.png")[0].bscans[0].shape == (16, 16)
    path = tmp_path / "thin.vol"
    write_vol(path, [np.zeros((4, 64), np.float32)] * 2, 0.01, 0.1, 0.004)
    with pytest.raises(ValueError, match=r"thin\.vol \(B-scan 0 of thin\): 4 x 64 B-scan is "
                                         r"smaller than 16 x 16"):
        read_input(path)


def test_images_and_unsupported(tmp_path):
    img = (np.arange(16 * 24) % 25 * 10).astype(np.uint8).reshape(16, 24)
    Image.fromarray(img).save(tmp_path / "b.png")
    (vol,) = read_input(tmp_path / "b.png")
    np.testing.assert_allclose(vol.bscans[0], img / 255.0, rtol=1e-6)
    assert vol.spacing.pixel_area_mm2 is None
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"notes\.txt: unsupported input type"):
        read_input(tmp_path / "notes.txt")
    (tmp_path / "bad.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"bad\.png"):
        read_input(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_input(tmp_path / "missing.png")


def test_to_unit_range():
    ints = [np.array([[0, 100]], np.uint16), np.array([[400, 50]], np.uint16)]
    np.testing.assert_allclose(to_unit_range(ints)[0], [[0, 0.25]])
    unit = [np.array([[0.2, 0.9]], np.float32)]
    np.testing.assert_array_equal(to_unit_range(unit)[0], unit[0])
    wide = [np.array([[-2.0, 2.0]]), np.array([[0.0, 1.0]])]
    np.testing.assert_allclose(to_unit_range(wide)[1], [[0.5, 0.75]])


# ------------------------------------------------------------------------- TIFF B-scan stacks
def _tiff_stack(path, pages, style):
    """Write pages (N, H, W) as an N-page TIFF in one of the layouts found in the wild."""
    import tifffile

    if style == "shaped":  # tifffile's own metadata; minisblack, else (3, H, W) is planar RGB
        tifffile.imwrite(path, pages, photometric="minisblack")
    elif style == "imagej":
        tifffile.imwrite(path, pages, imagej=True, metadata={"axes": "ZYX"})
    else:  # one plain page after the other, no stack metadata
        for k, page in enumerate(pages):
            tifffile.imwrite(path, page, photometric="minisblack", append=k > 0,
                             metadata=None)
    return path


@pytest.mark.parametrize("style", ["shaped", "imagej", "appended"])
def test_tiff_stack_one_bscan_per_page(tmp_path, style):
    rng = np.random.default_rng(2)
    pages = rng.integers(0, 200, (4, 16, 20), dtype=np.uint8)
    (vol,) = read_input(_tiff_stack(tmp_path / "stack.tif", pages, style))
    assert vol.name == "stack" and len(vol.bscans) == 4
    assert vol.spacing == Spacing(source="none in file")
    want = pages.astype(np.float64) / 255.0  # as each page saved alone (read_image)
    for got, page in zip(vol.bscans, want):
        assert got.dtype == np.float32 and got.shape == (16, 20)
        np.testing.assert_allclose(got, page, rtol=1e-6)


def test_tiff_uint16_stack_scaled_as_single_images(tmp_path):
    """A page reads as the same B-scan saved alone: divided by 65535, not the stack max."""
    pages = np.zeros((3, 16, 20), np.uint16)
    pages[0, 0, 0], pages[1, 1, 1], pages[2, 2, 2] = 1000, 4000, 250
    pages[1, 0, :5] = np.arange(5) * 800
    (vol,) = read_input(_tiff_stack(tmp_path / "u16.tiff", pages, "shaped"))
    for got, page in zip(vol.bscans, pages):
        np.testing.assert_allclose(got, page / 65535.0, rtol=1e-6)
    assert [round(float(b.max()) * 65535) for b in vol.bscans] == [1000, 4000, 250]


def test_single_page_tiff_unchanged(tmp_path):
    import tifffile

    from oct_seg.data.readers import read_image

    page = np.arange(320, dtype=np.uint16).reshape(16, 20) * 200
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, page, imagej=True, resolution=(100.0, 250.0),
                     metadata={"unit": "mm"})
    (vol,) = read_input(path)
    assert len(vol.bscans) == 1 and vol.spacing == Spacing(source="none in file")
    np.testing.assert_array_equal(vol.bscans[0], read_image(path))
    np.testing.assert_allclose(vol.bscans[0], page / 65535.0, rtol=1e-6)  # type max, as images
    (tmp_path / "fake.tif").write_text("not a tiff")
    with pytest.raises(ValueError, match=r"fake\.tif: not a readable image"):
        read_input(tmp_path / "fake.tif")


def test_tiff_pages_of_different_shapes(tmp_path):
    import tifffile

    path = tmp_path / "odd.tif"
    for k, shape in enumerate([(16, 20), (16, 20), (17, 20)]):
        tifffile.imwrite(path, np.ones(shape, np.uint8), photometric="minisblack",
                         append=k > 0, metadata=None)
    with pytest.raises(ValueError, match=r"odd\.tif: page 2 .*\(17, 20\).*page 0 is \(16, 20\)"):
        read_input(path)


def _luma(rgb):
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def test_rgb_tiff_single_image_and_stack(tmp_path):
    import tifffile

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    (vol,) = read_input(tmp_path / "rgb.tif")
    assert len(vol.bscans) == 1
    np.testing.assert_allclose(vol.bscans[0], _luma(rgb.astype(np.float64)) / 255, rtol=1e-6)
    # a (3, H, W) array saved with tifffile's defaults is ONE planar RGB page, not 3 B-scans
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0))
    (vol,) = read_input(tmp_path / "planar.tif")
    assert len(vol.bscans) == 1 and vol.bscans[0].shape == (16, 20)
    np.testing.assert_allclose(vol.bscans[0], _luma(rgb.astype(np.float64)) / 255, rtol=1e-6)
    # an RGB stack: one grey B-scan per page, each as the page saved alone
    stack = rng.integers(0, 180, (2, 16, 20, 3), dtype=np.uint8)
    stack[1] = stack[1][..., :1]  # grey content stored as RGB: kept exactly
    tifffile.imwrite(tmp_path / "rgbs.tif", stack, photometric="rgb")
    (vol,) = read_input(tmp_path / "rgbs.tif")
    np.testing.assert_allclose(vol.bscans[0], _luma(stack[0] / 255.0), rtol=1e-6)
    np.testing.assert_array_equal(vol.bscans[1], (stack[1, ..., 0] / 255.0).astype(np.float32))


@pytest.mark.parametrize("kind", ["imagej_mm", "imagej_micron_escaped", "ome", "uncalibrated"])
def test_tiff_stack_spacing(tmp_path, kind):
    import tifffile

    pages = np.ones((3, 16, 20), np.uint8)
    path = tmp_path / "cal.tif"
    want = Spacing(0.0125, 0.004, 0.125, "imagej metadata")
    if kind == "imagej_mm":
        tifffile.imwrite(path, pages, imagej=True, resolution=(80.0, 250.0),
                         metadata={"axes": "ZYX", "unit": "mm", "spacing": 0.125})
    elif kind == "imagej_micron_escaped":  # ImageJ writes the micro sign as a \u escape
        tifffile.imwrite(path, pages, imagej=True, resolution=(0.08, 0.25),
                         metadata={"axes": "ZYX", "unit": "\\u00B5m", "spacing": 125.0})
    elif kind == "ome":
        tifffile.imwrite(path, pages, ome=True, photometric="minisblack",
                         metadata={"axes": "ZYX", "PhysicalSizeX": 12.5, "PhysicalSizeY": 4.0,
                                   "PhysicalSizeZ": 125.0})  # OME's default unit is um
        want = Spacing(0.0125, 0.004, 0.125, "ome metadata")
    else:  # resolution in dots per cm, as image software writes: no OCT geometry
        tifffile.imwrite(path, pages, photometric="minisblack", resolution=(80.0, 250.0),
                         resolutionunit="CENTIMETER")
        want = Spacing(source="none in file")
    (vol,) = read_input(path)
    assert len(vol.bscans) == 3
    for field_name in ("lateral_mm", "axial_mm", "bscan_mm"):
        assert getattr(vol.spacing, field_name) == pytest.approx(getattr(want, field_name))
    assert vol.spacing.source == want.source
