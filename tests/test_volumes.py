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

from oct_seg import volumes
from oct_seg.volumes import Spacing, read_input, to_unit_range

FLT_MAX = np.finfo(np.float32).max


def write_vol(path, bscans, scale_x, distance, scale_z, slo=(6, 5), bscan_hdr=456):
    """Heidelberg .vol: 2048-byte header, SLO (uint8), per B-scan header + float32 (Z, X)."""
    n = len(bscans)
    size_z, size_x = bscans[0].shape
    header = bytearray(2048)
    header[0:12] = b"HSF-OCT-103\0"
    struct.pack_into("<iii", header, 12, size_x, n, size_z)
    struct.pack_into("<ddd", header, 24, scale_x, distance, scale_z)
    struct.pack_into("<ii", header, 48, slo[0], slo[1])
    struct.pack_into("<i", header, 100, bscan_hdr)
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.full(slo[0] * slo[1], 7, np.uint8).tobytes())
        for b in bscans:
            hdr = bytearray(bscan_hdr)
            hdr[0:12] = b"HSF-BS-103\0\0"
            f.write(hdr)
            f.write(np.asarray(b, "<f4").tobytes())


def write_fds(path, bscans_u16, x_mm, y_mm, z_um):
    """Topcon .fds: 'FOCT' header, named chunks (@CAPTURE_INFO_02, @PARAM_SCAN_04,
    @IMG_SCAN_03), a zero-length name ends the chunk list."""
    n = len(bscans_u16)
    height, width = bscans_u16[0].shape

    def chunk(name, payload):
        return bytes([len(name)]) + name + struct.pack("<I", len(payload)) + payload

    capture = struct.pack("<BBI", 0, 2, 1) + b"demo".ljust(100, b"\0") + struct.pack(
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
    raw = [rng.random((6, 10), dtype=np.float32) for _ in range(3)]
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
    assert vol.bscans[0].dtype == np.float32 and vol.bscans[0].shape == (6, 10)


def test_vol_single_bscan_has_no_bscan_spacing(tmp_path):
    path = tmp_path / "line.vol"
    write_vol(path, [np.full((4, 4), 0.5, np.float32)], 0.01, 0.0, 0.004)
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
    bscans = [rng.integers(0, 4000, (8, 12), dtype=np.uint16) for _ in range(4)]
    path = tmp_path / "topcon.fds"
    write_fds(path, bscans, x_mm=6.0, y_mm=6.0, z_um=2.6)
    (vol,) = read_input(path)
    top = max(int(b.max()) for b in bscans)
    assert len(vol.bscans) == 4
    for got, want in zip(vol.bscans, bscans):
        np.testing.assert_allclose(got, want / top, rtol=1e-6)
    # oct-converter: [x_mm / width, y_mm / n_slices, z_um / 1000] = lateral, B-scan, axial
    assert vol.spacing.lateral_mm == pytest.approx(6.0 / 12)
    assert vol.spacing.bscan_mm == pytest.approx(6.0 / 4)
    assert vol.spacing.axial_mm == pytest.approx(0.0026)


def test_zeiss_img_layout_and_size_check(tmp_path):
    rows, cols = 6, 5
    bscans = [np.arange(rows * cols, dtype=np.uint8).reshape(rows, cols) + 10 * k
              for k in range(3)]
    path = tmp_path / "cube.img"
    # Zeiss .img: uint8, each B-scan stored column by column (Fortran order)
    path.write_bytes(b"".join(b.T.tobytes() for b in bscans))
    (vol,) = read_input(path, img_shape=(rows, cols))
    assert vol.spacing.pixel_area_mm2 is None
    for got, want in zip(vol.bscans, bscans):
        np.testing.assert_allclose(got, want / 49.0, rtol=1e-6)  # max over the volume = 49
    with pytest.raises(ValueError, match=r"cube\.img: .*--img-shape"):
        read_input(path, img_shape=(7, 5))


class _FakeE2E:
    """Stands in for oct_converter.readers.E2E: two volumes, as E2E.read_oct_volume returns."""

    def __init__(self, path):
        self.path = path

    def read_oct_volume(self):
        from oct_converter.image_types import OCTVolumeWithMetaData

        print("noise that oct-converter prints")
        vols = [[np.full((4, 6), 0.25, np.float32)] * 3, [np.full((4, 6), 0.5, np.float32)]]
        # oct-converter fills lateral and slice spacing with fixed defaults (0.01, 0.05)
        return [OCTVolumeWithMetaData(v, pixel_spacing=[0.01, 0.0039, 0.05]) for v in vols]


def test_e2e_geometry_keeps_only_axial(tmp_path, monkeypatch, capsys):
    import oct_converter.readers

    monkeypatch.setattr(oct_converter.readers, "E2E", _FakeE2E)
    path = tmp_path / "scan.e2e"
    path.write_bytes(b"x")
    vols = read_input(path)
    assert [v.name for v in vols] == ["scan_vol0", "scan_vol1"]
    assert vols[0].spacing.axial_mm == pytest.approx(0.0039)
    assert vols[0].spacing.lateral_mm is None and vols[0].spacing.bscan_mm is None
    assert vols[0].spacing.pixel_area_mm2 is None
    np.testing.assert_allclose(vols[1].bscans[0], 0.5)
    assert "noise" not in capsys.readouterr().out


def test_corrupt_vendor_file_names_file(tmp_path):
    path = tmp_path / "broken.e2e"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"broken\.e2e"):
        read_input(path)


def test_images_and_unsupported(tmp_path):
    img = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
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
    assert volumes.is_supported("a.E2E") and not volumes.is_supported("a.txt")
