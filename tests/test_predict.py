"""predict_files: masks, overlays, fluid areas / volumes, atomic output, bad inputs.

The arithmetic tests use a "threshold network" whose output is sigmoid(100 x - 50): fluid is
exactly the set of pixels brighter than 0.5, so every count, area and volume can be computed
by hand from the input.
"""
import os

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oct_seg.models.blocks import SizeCheck
from oct_seg.loading import load_model
from oct_seg.predict import (OVERLAY_ALPHA, OVERLAY_COLOURS, fluid_mask, overlay, predict_files,
                             volume_table)
from oct_seg.volumes import Spacing
from test_volumes import write_vol


@pytest.fixture(scope="module")
def threshold_net():
    inp = keras.Input((None, None, 1))
    x = SizeCheck(4, name="size_check")(inp)
    x = keras.layers.Rescaling(100.0, -50.0)(x)
    return keras.Model(inp, keras.layers.Activation("sigmoid")(x), name="threshold_net")


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


def _read_png(path):
    return np.asarray(Image.open(path))


def test_volume_areas_and_volume_by_hand(tmp_path, threshold_net):
    raw = [np.zeros((16, 20), np.float32) for _ in range(3)]
    raw[0][0, :3] = 1.0         # 3 fluid pixels
    raw[2][2:4, :5] = 1.0       # 10 fluid pixels; B-scan 1 has none
    write_vol(tmp_path / "eye.vol", raw, scale_x=0.011, distance=0.125, scale_z=0.0039)
    out = tmp_path / "pred"
    areas = predict_files(threshold_net, [tmp_path / "eye.vol"], out, progress=False)
    assert list(areas["fluid_pixels"]) == [3, 0, 10]
    pixel_mm2 = 0.011 * 0.0039
    np.testing.assert_allclose(areas["fluid_area_mm2"], [3 * pixel_mm2, 0, 10 * pixel_mm2])
    vols = pd.read_csv(out / "fluid_volumes.csv")
    assert vols.loc[0, "n_bscans"] == 3 and vols.loc[0, "fluid_pixels"] == 13
    assert vols.loc[0, "fluid_volume_mm3"] == pytest.approx(13 * pixel_mm2 * 0.125)
    pd.testing.assert_frame_equal(pd.read_csv(out / "fluid_areas.csv"), areas,
                                  check_dtype=False)
    mask = _read_png(out / "masks" / "eye_b002.png")
    assert mask.shape == (16, 20) and set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(mask == 255, raw[2] > 0.5)
    assert sorted(os.listdir(out / "overlays")) == ["eye_b000.png", "eye_b001.png",
                                                    "eye_b002.png"]


def test_images_any_size_and_spacing_override(tmp_path, threshold_net):
    rng = np.random.default_rng(0)
    img = (rng.random((37, 53)) * 255).astype(np.uint8)
    img[img == 128] = 127  # 128/255 > 0.5 but keep clear of the boundary
    path = _png(tmp_path / "scan.png", img)
    areas = predict_files(threshold_net, [path], tmp_path / "a", progress=False)
    truth = img / 255.0 > 0.5
    assert areas.loc[0, "fluid_pixels"] == truth.sum()
    assert np.isnan(areas.loc[0, "fluid_area_mm2"])  # images carry no geometry
    np.testing.assert_array_equal(_read_png(tmp_path / "a" / "masks" / "scan.png") > 0, truth)
    areas = predict_files(threshold_net, [path], tmp_path / "b", progress=False,
                          spacing=Spacing(0.02, 0.005, None))
    assert areas.loc[0, "fluid_area_mm2"] == pytest.approx(truth.sum() * 0.02 * 0.005)
    assert np.isnan(pd.read_csv(tmp_path / "b" / "fluid_volumes.csv").loc[0, "fluid_volume_mm3"])


def test_threshold_option(tmp_path, threshold_net):
    img = np.full((16, 16), 0.49, np.float32)  # sigmoid(-1) = 0.269
    path = _png(tmp_path / "x.png", (img * 255).astype(np.uint8))
    assert predict_files(threshold_net, [path], tmp_path / "o1", progress=False,
                         threshold=0.5).loc[0, "fluid_pixels"] == 0
    assert predict_files(threshold_net, [path], tmp_path / "o2", progress=False,
                         threshold=0.2).loc[0, "fluid_pixels"] == 256


def test_overlay_colour_formula():
    image = np.array([[0.2, 0.8]], np.float32)
    labels = np.array([[1, 0]], np.uint8)
    rgb = overlay(image, labels)
    want = (1 - OVERLAY_ALPHA) * 0.2 * 255 + OVERLAY_ALPHA * OVERLAY_COLOURS[0]
    np.testing.assert_array_equal(rgb[0, 0], np.round(want).astype(np.uint8))
    np.testing.assert_array_equal(rgb[0, 1], [204, 204, 204])


def test_fluid_mask_binary_and_multiclass():
    np.testing.assert_array_equal(fluid_mask(np.array([[0.4, 0.6]])[..., None]), [[0, 1]])
    probs = np.array([[[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]])
    np.testing.assert_array_equal(fluid_mask(probs), [[0, 2]])


def test_volume_table_rule():
    areas = pd.DataFrame(dict(input=["v"] * 2 + ["i"], volume=["v"] * 2 + ["i"],
                              fluid_pixels=[4, 6, 5], fluid_area_mm2=[0.5, 0.25, np.nan],
                              bscan_mm=[0.2, 0.2, np.nan]))
    table = volume_table(areas).set_index("volume")
    assert table.loc["v", "fluid_volume_mm3"] == pytest.approx(0.75 * 0.2)
    assert np.isnan(table.loc["i", "fluid_volume_mm3"])


def test_real_bscan_native_size(tmp_path, duke_dir):
    from oct_seg.models.unet import build_unet

    net = build_unet(input_size=(64, 64, 1), filter_num=[4, 8], name="tiny")
    names = sorted(os.listdir(duke_dir / "images"))[:2]
    areas = predict_files(net, [duke_dir / "images" / n for n in names], tmp_path / "p",
                          progress=False)
    assert list(areas[["height", "width"]].iloc[0]) == [496, 768]
    mask = _read_png(tmp_path / "p" / "masks" / names[0])
    assert mask.shape == (496, 768)
    assert areas.loc[0, "fluid_pixels"] == np.count_nonzero(mask)
    assert _read_png(tmp_path / "p" / "overlays" / names[0]).shape == (496, 768, 3)


def test_output_folder_is_atomic(tmp_path, threshold_net):
    good = _png(tmp_path / "good.png", np.zeros((16, 16), np.uint8))
    bad = tmp_path / "bad.vol"
    bad.write_bytes(b"HSF-OCT-103" + bytes(3000))  # header with zero sizes
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"bad\.vol"):
        predict_files(threshold_net, [good, bad], out, progress=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict_files(threshold_net, [good], out, progress=False)
    assert os.listdir(out) == ["keep.txt"]
    predict_files(threshold_net, [good], out, progress=False, overwrite=True)
    assert sorted(os.listdir(out)) == ["fluid_areas.csv", "fluid_volumes.csv", "masks",
                                       "overlays"]


def test_bad_inputs(tmp_path, threshold_net):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        predict_files(threshold_net, [tmp_path / "nothere.png"], tmp_path / "o")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"a\.txt: unsupported"):
        predict_files(threshold_net, [tmp_path / "a.txt"], tmp_path / "o")
    small = _png(tmp_path / "small.png", np.zeros((3, 40), np.uint8))
    with pytest.raises(ValueError, match=r"small\.png: 3 x 40 B-scan is smaller than 16 x 16"):
        predict_files(threshold_net, [small], tmp_path / "o", progress=False)
    (tmp_path / "scans").mkdir()
    with pytest.raises(IsADirectoryError, match="scans: is a folder"):
        predict_files(threshold_net, [tmp_path / "scans"], tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_small_bscans_follow_the_one_size_rule(tmp_path):
    """B-scans from 16 px up are segmented whatever the network's size step (padding): predict
    refused a 16 x 20 B-scan for a network with a step of 32 while the README said any size."""
    inp = keras.Input((None, None, 1))
    x = SizeCheck(32, name="size_check")(inp)
    net = keras.Model(inp, keras.layers.Activation("sigmoid")(keras.layers.Rescaling(
        100.0, -50.0)(x)))
    img = np.zeros((16, 20), np.uint8)
    img[3:6, 4:9] = 255
    areas = predict_files(net, [_png(tmp_path / "s.png", img)], tmp_path / "o", progress=False)
    assert areas.loc[0, "fluid_pixels"] == 15
    np.testing.assert_array_equal(_read_png(tmp_path / "o" / "masks" / "s.png") > 0, img > 0)


def test_load_model_errors(tmp_path, threshold_net):
    with pytest.raises(FileNotFoundError, match="none.keras: model not found"):
        load_model(tmp_path / "none.keras")
    fake = tmp_path / "fake.keras"
    fake.write_text("not a zip")  # Keras itself says "File not found" for a file that is there
    with pytest.raises(ValueError, match=r"fake\.keras: not a loadable Keras model \(not a "
                                         r"\.keras zip archive\)"):
        load_model(fake)
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "a zip, but not a Keras model")
    with pytest.raises(ValueError, match=r"other\.keras: not a loadable Keras model \(the zip "
                                         r"archive holds no config\.json\)"):
        load_model(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="not a SavedModel"):
        load_model(tmp_path)
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match=r"w\.txt: not a model file"):
        load_model(tmp_path / "w.txt")
    threshold_net.save(tmp_path / "t.keras")
    loaded = load_model(tmp_path / "t.keras")
    x = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded(x), threshold_net(x), atol=1e-6)


# ------------------------------------------------------------------- TIFF stacks and batching
def _tiff(path, pages):
    import tifffile

    tifffile.imwrite(path, np.asarray(pages), photometric="minisblack")
    return path


class _Recorder:
    """Wraps oct_seg.inference.predict_image: keeps every call's input and output."""

    def __init__(self, predict_image):
        self.predict_image, self.inputs, self.outputs = predict_image, [], []

    def __call__(self, model, image, **kwargs):
        out = self.predict_image(model, image, **kwargs)
        self.inputs.append(np.asarray(image))
        self.outputs.append(np.asarray(out))
        return out


@pytest.fixture
def recorder(monkeypatch):
    import oct_seg.inference

    rec = _Recorder(oct_seg.inference.predict_image)
    monkeypatch.setattr(oct_seg.inference, "predict_image", rec)
    return rec


def test_tiff_stack_names_and_volume_csv(tmp_path, threshold_net):
    pages = np.zeros((3, 16, 20), np.uint8)
    pages[0, 0, :4] = 255        # 4 fluid pixels (stack max 255 -> 1.0)
    pages[2, 3:5, 2:5] = 200     # 6 fluid pixels (200 / 255 > 0.5)
    pages[1] = 100               # 100 / 255 < 0.5: none
    out = tmp_path / "pred"
    areas = predict_files(threshold_net, [_tiff(tmp_path / "oct.tif", pages)], out,
                          progress=False)
    assert list(areas["name"]) == ["oct_b000", "oct_b001", "oct_b002"]
    assert list(areas["fluid_pixels"]) == [4, 0, 6]
    assert sorted(os.listdir(out / "masks")) == ["oct_b000.png", "oct_b001.png", "oct_b002.png"]
    np.testing.assert_array_equal(_read_png(out / "masks" / "oct_b002.png") == 255,
                                  pages[2] / 255 > 0.5)
    vols = pd.read_csv(out / "fluid_volumes.csv")
    assert len(vols) == 1 and vols.loc[0, "n_bscans"] == 3 and vols.loc[0, "fluid_pixels"] == 10
    assert np.isnan(vols.loc[0, "fluid_volume_mm3"])  # no spacing in the file
    # a one-page TIFF keeps its plain image name
    areas = predict_files(threshold_net, [_tiff(tmp_path / "one.tif", pages[:1])],
                          tmp_path / "p1", progress=False)
    assert list(areas["name"]) == ["one"]


def _gap_threshold(probs):
    """A threshold in the widest gap between the middle half of the probabilities, so that
    masks of runs whose probabilities differ by float round-off must be identical."""
    values = np.unique(probs)
    middle = values[len(values) // 4: 3 * len(values) // 4]
    k = int(np.argmax(np.diff(middle)))
    assert middle[k + 1] - middle[k] > 1e-4, "test model's probabilities are too dense"
    return float(middle[k] + middle[k + 1]) / 2


@pytest.mark.parametrize("input_size", [(None, None, 1), (32, 32, 1)], ids=["pad", "resize"])
def test_batch_size_does_not_change_results(tmp_path, recorder, input_size):
    from oct_seg.inference import predict_image
    from oct_seg.models.unet import build_unet

    keras.utils.set_random_seed(1)
    core = build_unet(input_size=input_size, filter_num=[4, 8], batch_norm=True,
                      output_activation=None, name="tiny")
    inp = keras.Input(input_size)
    net = keras.Model(inp, keras.layers.Activation("sigmoid")(
        keras.layers.Rescaling(300.0)(core(inp))))  # logits spread out: probabilities too
    pages = np.random.default_rng(5).integers(0, 256, (5, 30, 45), dtype=np.uint8)
    path = _tiff(tmp_path / "five.tif", pages)
    # reference: one predict_image call per B-scan of the stack scaled by its maximum
    want = np.stack([predict_image(net, p / pages.max()) for p in pages.astype(np.float32)])
    threshold = _gap_threshold(want)
    runs = {}
    for batch_size in (1, 3):
        out = tmp_path / f"b{batch_size}"
        calls = len(recorder.outputs)
        areas = predict_files(net, [path], out, progress=False, batch_size=batch_size,
                              threshold=threshold)
        assert [len(x) for x in recorder.inputs[calls:]] == ([1] * 5 if batch_size == 1
                                                             else [3, 2])
        probs = np.concatenate(recorder.outputs[calls:])
        np.testing.assert_allclose(probs, want, atol=1e-5)
        masks = [_read_png(out / "masks" / f"five_b{k:03d}.png") for k in range(5)]
        for mask, p in zip(masks, want):
            np.testing.assert_array_equal(mask == 255, p[..., 0] > threshold)
        runs[batch_size] = areas
    assert 0 < runs[1]["fluid_pixels"].sum() < 5 * 30 * 45
    pd.testing.assert_frame_equal(runs[1], runs[3])
    for name in ("fluid_areas.csv", "fluid_volumes.csv"):
        assert (tmp_path / "b1" / name).read_text() == (tmp_path / "b3" / name).read_text()


def test_batches_group_bscans_by_shape(tmp_path, threshold_net, recorder, monkeypatch):
    import oct_seg.predict
    from oct_seg.volumes import Volume

    rng = np.random.default_rng(6)
    shapes = [(8, 12), (12, 8), (8, 12), (8, 12), (12, 8)]
    bscans = [rng.random(s, dtype=np.float32) for s in shapes]
    src = tmp_path / "mixed.vol"
    src.write_bytes(b"")
    monkeypatch.setattr(oct_seg.predict, "read_input",
                        lambda path, img_shape: [Volume("mixed", path, bscans, Spacing())])
    out = tmp_path / "o"
    areas = predict_files(threshold_net, [src], out, progress=False, batch_size=2)
    assert [x.shape[:3] for x in recorder.inputs] == [(2, 8, 12), (1, 8, 12), (2, 12, 8)]
    assert list(areas["height"]) == [s[0] for s in shapes]
    assert list(areas["fluid_pixels"]) == [int((b > 0.5).sum()) for b in bscans]
    for k, b in enumerate(bscans):
        np.testing.assert_array_equal(_read_png(out / "masks" / f"mixed_b{k:03d}.png") == 255,
                                      b > 0.5)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "4", None])
def test_batch_size_validation(tmp_path, threshold_net, bad):
    path = _png(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict_files(threshold_net, [path], tmp_path / "o", progress=False, batch_size=bad)
    assert not (tmp_path / "o").exists()


def test_volume_reports(tmp_path, threshold_net):
    """A .vol of 3 B-scans gets the report files; the ETDRS 'scan' row is the same fluid
    volume as fluid_volumes.csv; the file's eye and a given fovea are used."""
    raw = [np.zeros((16, 16), np.float32) for _ in range(3)]
    raw[1][2:5, 4:7] = 1.0      # 9 fluid pixels in B-scan 1
    raw[2][0, 10:12] = 1.0      # 2 in B-scan 2
    write_vol(tmp_path / "eye.vol", raw, scale_x=0.1, distance=0.125, scale_z=0.0039,
              eye=b"OS")
    out = tmp_path / "pred"
    predict_files(threshold_net, [tmp_path / "eye.vol"], out, progress=False, fovea=(1, 5))
    assert sorted(os.listdir(out / "reports")) == ["eye_enface.png", "eye_etdrs.csv",
                                                   "eye_fluid_height.tif", "eye_report.png"]
    etdrs = pd.read_csv(out / "reports" / "eye_etdrs.csv").set_index("region")
    scan = etdrs.loc["scan"]
    assert (scan["eye"], scan["fovea_bscan"], scan["fovea_column"]) == ("OS", 1, 5)
    assert scan["fluid_voxels"] == 11 and scan["fluid_ascans"] == 5
    volumes = pd.read_csv(out / "fluid_volumes.csv")
    assert scan["volume_mm3"] == pytest.approx(volumes.loc[0, "fluid_volume_mm3"])
    # A-scans 4-6 of B-scan 1 lie within 0.1 mm of the fovea; 10 and 11 of B-scan 2 0.125 mm
    # below and 0.5 / 0.6 mm to the right: the temporal side of a left eye
    assert etdrs.loc["C0", "fluid_voxels"] == 9 and etdrs.loc["T1", "fluid_voxels"] == 2


def test_volume_report_options_checked_before_writing(tmp_path, threshold_net):
    write_vol(tmp_path / "eye.vol", [np.zeros((16, 16), np.float32)] * 3, 0.011, 0.125, 0.0039)
    out = tmp_path / "o"
    with pytest.raises(ValueError, match=r"eye\.vol: --fovea 3 0 is outside"):
        predict_files(threshold_net, [tmp_path / "eye.vol"], out, fovea=(3, 0))
    with pytest.raises(ValueError, match="one volume; got 2 inputs"):
        predict_files(threshold_net, [tmp_path / "eye.vol"] * 2, out, fovea=(1, 1))
    with pytest.raises(ValueError, match="eye must be one of OD, OS"):
        predict_files(threshold_net, [tmp_path / "eye.vol"], out, eye="R")
    assert not out.exists()


@pytest.fixture(scope="module")
def class_net():
    """Softmax over (background, A, B, C) on 16 x 20 B-scans: pixels brighter than 0.5 are
    fluid, of class A in columns 0-6, B in 7-13, C in 14-19."""
    band = np.full((16, 20, 3), -1000.0, np.float32)
    band[:, :7, 0] = band[:, 7:14, 1] = band[:, 14:, 2] = 0.0
    inp = keras.Input((16, 20, 1))
    x = keras.layers.Rescaling(100.0, -50.0)(inp)
    logits = keras.layers.Lambda(lambda v: keras.ops.concatenate(
        [keras.ops.zeros_like(v), v + band], axis=-1))(x)
    return keras.Model(inp, keras.layers.Softmax()(logits), name="class_net")


def test_multiclass_areas_volumes_masks_and_legend_by_hand(tmp_path, class_net):
    raw = [np.zeros((16, 20), np.float32) for _ in range(3)]
    raw[0][0, :3] = 1.0          # A: 3 px
    raw[2][2:4, :5] = 1.0        # A: 10 px
    raw[2][5:7, 8:12] = 1.0      # B: 8 px
    raw[1][10, 15:20] = 1.0      # C: 5 px
    write_vol(tmp_path / "eye.vol", raw, scale_x=0.011, distance=0.125, scale_z=0.0039)
    out = tmp_path / "pred"
    areas = predict_files(class_net, [tmp_path / "eye.vol"], out, progress=False,
                          classes=["IRF", "SRF", "PED"])
    pixel_mm2 = 0.011 * 0.0039
    assert list(areas["IRF_pixels"]) == [3, 0, 10] and list(areas["SRF_pixels"]) == [0, 0, 8]
    assert list(areas["PED_pixels"]) == [0, 5, 0] and list(areas["fluid_pixels"]) == [3, 5, 18]
    np.testing.assert_allclose(areas["SRF_area_mm2"], [0, 0, 8 * pixel_mm2])
    vols = pd.read_csv(out / "fluid_volumes.csv").iloc[0]
    for name, pixels in (("IRF", 13), ("SRF", 8), ("PED", 5), ("fluid", 26)):
        assert vols[f"{name}_pixels"] == pixels
        assert vols[f"{name}_volume_mm3"] == pytest.approx(pixels * pixel_mm2 * 0.125)
    mask = _read_png(out / "masks" / "eye_b002.png")
    want = np.zeros((16, 20), np.uint8)
    want[2:4, :5], want[5:7, 8:12] = 1, 2
    np.testing.assert_array_equal(mask, want)
    rgb = _read_png(out / "overlays" / "eye_b002.png")
    assert rgb.shape == (16 + 3 * 14, 20, 3)      # 20 px wide: one legend row per class
    for k in range(3):                             # each class's swatch in its colour
        np.testing.assert_array_equal(rgb[16 + 14 * k + 6, 6], OVERLAY_COLOURS[k])
    np.testing.assert_array_equal(rgb[:16], overlay(raw[2] > 0.5, want))
    with pytest.raises(ValueError, match="2 class names"):
        predict_files(class_net, [tmp_path / "eye.vol"], tmp_path / "p2", progress=False,
                      classes=["IRF", "SRF"])
    generic = predict_files(class_net, [tmp_path / "eye.vol"], tmp_path / "p3", progress=False)
    assert list(generic["class3_pixels"]) == [0, 5, 0]
