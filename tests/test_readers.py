"""Readers: formats, grey/intensity rules, mask rules, dataset folders and every bad input."""
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from oct_seg.data.readers import DataError, ScanSet, read_dataset, read_image, read_mask


def _png(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, **kw).save(path)
    return path


RNG = np.random.default_rng(0)
GREY8 = RNG.integers(0, 256, (12, 10), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_8bit_lossless_formats_scale_by_255(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, GREY8)
    else:
        _png(path, GREY8)
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == (12, 10)
    np.testing.assert_allclose(out, GREY8 / 255.0, atol=1e-7)


def test_16bit_png_and_tiff_scale_by_65535(tmp_path):
    arr = RNG.integers(0, 65536, (9, 7)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), arr / 65535.0, atol=1e-7)
    Image.fromarray(arr).save(tmp_path / "b.png")
    np.testing.assert_allclose(read_image(tmp_path / "b.png"), arr / 65535.0, atol=1e-7)


def test_jpeg_reads_close_to_source(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (16, 1))
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert np.abs(out - smooth / 255.0).max() < 0.03


def test_rgb_uses_bt601_luma_and_rgba_drops_alpha(tmp_path):
    rgb = RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    want = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    np.testing.assert_allclose(read_image(_png(tmp_path / "rgb.png", rgb)), want, atol=1e-6)
    rgba = np.concatenate([rgb, np.zeros((8, 6, 1), np.uint8)], axis=-1)   # alpha 0 is ignored
    np.testing.assert_allclose(read_image(_png(tmp_path / "rgba.png", rgba)), want, atol=1e-6)
    grey_rgb = np.repeat(GREY8[..., None], 3, axis=-1)
    np.testing.assert_array_equal(read_image(_png(tmp_path / "g.png", grey_rgb)), GREY8 / np.float32(255))


def test_wrong_channel_count_and_stack_raise(tmp_path):
    tifffile.imwrite(tmp_path / "five.tif", RNG.integers(0, 255, (8, 8, 5), dtype=np.uint8))
    with pytest.raises(DataError, match="five.tif"):
        read_image(tmp_path / "five.tif")
    tifffile.imwrite(tmp_path / "stack.tif", RNG.integers(0, 255, (6, 8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="stack.tif"):
        read_image(tmp_path / "stack.tif")


def test_float_tiff_outside_unit_range_raises(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4), 3.0, np.float32))
    with pytest.raises(DataError, match=r"f.tif.*\[0, 1\]"):
        read_image(tmp_path / "f.tif")


def test_corrupt_truncated_and_unknown_files_raise(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    full = _png(tmp_path / "full.png", RNG.integers(0, 256, (64, 64), dtype=np.uint8)).read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported"):
        read_image(tmp_path / "notes.txt")


def test_masks_binary_and_multiclass(tmp_path):
    m = np.zeros((6, 6), np.uint8)
    m[1:3, 1:3] = 255
    np.testing.assert_array_equal(read_mask(_png(tmp_path / "m.png", m)), m // 255)
    labels = np.zeros((6, 6), np.uint8)
    labels[0, 0], labels[5, 5] = 1, 2
    path = _png(tmp_path / "l.png", labels)
    with pytest.warns(UserWarning, match="binarising"):
        np.testing.assert_array_equal(read_mask(path), (labels > 0).astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_mask(path, binary=False, n_classes=3), labels)
    with pytest.raises(DataError, match=r"l.png.*outside"):
        read_mask(path, binary=False, n_classes=2)


def test_lossy_jpeg_mask_and_colour_mask_raise(tmp_path):
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 5:27] = 255
    Image.fromarray(m).save(tmp_path / "m.jpg", quality=50)
    with pytest.raises(DataError, match="m.jpg"):
        read_mask(tmp_path / "m.jpg")
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[0, 0] = (255, 0, 0)
    with pytest.raises(DataError, match="colour"):
        read_mask(_png(tmp_path / "c.png", colour))


def _dataset(root, n=3, shape=(16, 20), index=True):
    for i in range(n):
        img = RNG.integers(0, 256, shape, dtype=np.uint8)
        m = np.zeros(shape, np.uint8)
        m[i, :] = 255
        _png(root / "images" / f"s{i}.png", img)
        _png(root / "masks" / f"s{i}.png", m)
    if index:
        names = [f"s{i}" for i in range(n)]
        pd.DataFrame({"name": names, "subject": names}).to_csv(root / "index.csv", index=False)
    return root


def test_read_dataset_without_index_and_skips_junk(tmp_path):
    root = _dataset(tmp_path / "d", index=False)
    (root / "images" / ".DS_Store").write_bytes(b"\0\1")
    (root / "images" / "Thumbs.db").write_bytes(b"\0\1")
    (root / "images" / "README.txt").write_text("hello")
    with pytest.warns(UserWarning) as caught:
        scans = read_dataset(root)
    messages = [str(w.message) for w in caught]
    assert any("skipped 3 non-image" in m for m in messages)
    assert any(f"{root}: no index.csv, so every scan is its own subject and folds are not "
               "split by patient" in m for m in messages)
    assert scans.names == ["s0", "s1", "s2"]
    assert list(scans.index["subject"]) == scans.names   # documented: subject = name
    np.testing.assert_allclose(scans.index["fluid_fraction"], [20 / 320] * 3)
    assert scans.masks[1][1].tolist() == [1] * 20 and scans.masks[1].sum() == 20
    sub = scans.subset(["s2", "s0"])
    assert isinstance(sub, ScanSet) and sub.names == ["s2", "s0"] and sub.masks[0][2, 0] == 1
    assert list(sub.index["name"]) == ["s2", "s0"]
    with pytest.raises(KeyError, match="nope"):
        scans.subset(["nope"])


def test_read_dataset_index_keeps_columns_and_checks_names(tmp_path):
    root = _dataset(tmp_path / "d")
    pd.DataFrame({"name": ["s2", "s0", "s1"], "subject": [7, 5, 5], "eye": ["OD", "OS", "OS"]}).to_csv(
        root / "index.csv", index=False)
    scans = read_dataset(root)
    assert list(scans.index["subject"]) == [5, 5, 7] and list(scans.index["eye"]) == ["OS", "OS", "OD"]
    pd.DataFrame({"name": ["s0", "s1"], "subject": [1, 1]}).to_csv(root / "index.csv", index=False)
    with pytest.raises(DataError, match="without an index row.*s2"):
        read_dataset(root)
    pd.DataFrame({"name": ["s0", "s1", "s2"]}).to_csv(root / "index.csv", index=False)
    with pytest.raises(DataError, match="subject"):
        read_dataset(root)


def test_read_dataset_bad_folders(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: empty folder; a data folder holds "
                                        "images/ and masks/"):
        read_dataset(tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        read_dataset(tmp_path / "nothere")
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path}: no images/ sub-folder"):
        read_dataset(tmp_path)
    (tmp_path / "masks").rmdir()
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image files"):
        read_dataset(tmp_path)
    root = _dataset(tmp_path / "a")
    (root / "masks" / "s1.png").unlink()
    with pytest.raises(DataError, match=r"no mask.*s1.png"):
        read_dataset(root)
    root = _dataset(tmp_path / "b")
    _png(root / "masks" / "s1.png", np.zeros((16, 19), np.uint8))
    with pytest.raises(DataError, match=r"s1.png.*\(16, 19\).*\(16, 20\)"):
        read_dataset(root)
    root = _dataset(tmp_path / "c")
    (root / "images" / "s0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="s0.png"):
        read_dataset(root)
    root = _dataset(tmp_path / "e")
    _png(root / "masks" / "extra.png", np.zeros((16, 20), np.uint8))
    with pytest.warns(UserWarning, match="without an image"):
        assert len(read_dataset(root)) == 3


@pytest.mark.parametrize("shape", [(2, 100000), (15, 40), (40, 1)])
def test_bscans_below_the_size_rule_are_refused(tmp_path, shape):
    root = _dataset(tmp_path / "d")
    _png(root / "images" / "s1.png", np.full(shape, 80, np.uint8))
    _png(root / "masks" / "s1.png", np.zeros(shape, np.uint8))
    h, w = shape
    with pytest.raises(DataError, match=f"s1.png: {h} x {w} B-scan is smaller than 16 x 16"):
        read_dataset(root)
    assert read_image(root / "images" / "s1.png").shape == shape  # the decoder reads any size


def test_pixel_limit_is_named_with_the_way_past_it(tmp_path, monkeypatch):
    """A valid PNG above Pillow's decompression-bomb limit was called corrupt."""
    from PIL import Image as PILImage

    path = _png(tmp_path / "big.png", RNG.integers(0, 256, (60, 50), dtype=np.uint8))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # refuses > 2000 pixels
    with pytest.raises(DataError, match=r"big.png: 60 x 50 image \(3,000 pixels\) exceeds the "
                                        r"pixel limit of 2,000.*OCT_SEG_MAX_PIXELS=3000") as info:
        read_image(path)
    assert "corrupt" not in str(info.value)
    monkeypatch.setenv("OCT_SEG_MAX_PIXELS", "3000")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a decompression-bomb warning
        assert read_image(path).shape == (60, 50)
    assert PILImage.MAX_IMAGE_PIXELS == 1000  # the limit is raised for this read only
    monkeypatch.setenv("OCT_SEG_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="OCT_SEG_MAX_PIXELS='lots': give a positive pixel count"):
        read_image(path)
