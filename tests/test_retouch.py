"""convert_retouch on tiny MetaImage volumes written here with SimpleITK, and classes in index.csv."""
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from oct_seg.data import DataError, convert_retouch, read_dataset
from oct_seg.cli import main

N, H, W = 3, 64, 96
SPACING = (0.0117, 0.0039, 0.12)   # lateral, axial, B-scan (mm): MetaImage x, y, z


def _write(path, array, spacing=SPACING):
    image = sitk.GetImageFromArray(array)          # numpy (z, y, x) -> image size (x, y, z)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))              # .mhd + .raw (uncompressed)


def _case(folder, seed, dtype=np.uint8):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    oct_ = rng.integers(0, np.iinfo(dtype).max, (N, H, W), dtype=dtype)
    labels = np.zeros((N, H, W), np.uint8)
    labels[0, 10:14, 20:30] = 1        # IRF: 40 px
    labels[1, 30:32, 40:45] = 2        # SRF: 10 px
    labels[2, 50:53, 0:8] = 3          # PED: 24 px
    labels[2, 5:6, 5:7] = 1            # IRF: 2 px
    _write(folder / "oct.mhd", oct_)
    _write(folder / "reference.mhd", labels)
    return oct_, labels


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    cirrus = _case(src / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001", 1)
    spectralis = _case(src / "RETOUCH-TrainingSet-Spectralis" / "TRAIN025", 2, np.uint16)
    return src, cirrus, spectralis


def test_retouch_volumes_become_a_multiclass_data_folder(source, tmp_path):
    src, (cirrus_oct, cirrus_lab), (spec_oct, _) = source
    out = convert_retouch(src, tmp_path / "out")
    index = pd.read_csv(out / "index.csv")
    assert len(index) == 2 * N
    assert sorted(index["subject"].unique()) == ["Cirrus_TRAIN001", "Spectralis_TRAIN025"]
    row = index.set_index("name").loc["Cirrus_TRAIN001_b002"]
    assert (row["height"], row["width"], row["bscan_index"]) == (H, W, 2)
    assert (row["lateral_mm"], row["axial_mm"], row["bscan_mm"]) == pytest.approx(SPACING)
    assert row["PED_fraction"] == pytest.approx(24 / (H * W), abs=1e-6)
    assert row["IRF_fraction"] == pytest.approx(2 / (H * W), abs=1e-6)
    assert row["fluid_fraction"] == pytest.approx(26 / (H * W), abs=1e-6)
    # pixels unchanged, 8 and 16 bit; masks are the class ids
    assert np.array_equal(np.asarray(Image.open(out / "images" / "Cirrus_TRAIN001_b001.png")),
                          cirrus_oct[1])
    assert np.array_equal(np.asarray(Image.open(out / "images" / "Spectralis_TRAIN025_b000.png")),
                          spec_oct[0])
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "Cirrus_TRAIN001_b002.png")),
                          cirrus_lab[2])

    scans = read_dataset(out)
    assert scans.classes == ("IRF", "SRF", "PED") and scans.n_labels == 4
    mask = scans.masks[scans.names.index("Cirrus_TRAIN001_b002")]
    assert sorted(np.unique(mask).tolist()) == [0, 1, 3]
    # fluid area by hand: 24 PED px x 0.0117 mm x 0.0039 mm
    area = np.count_nonzero(mask == 3) * row["lateral_mm"] * row["axial_mm"]
    assert area == pytest.approx(24 * 0.0117 * 0.0039)
    # the volume of IRF in the Cirrus case: (40 + 2) px x pixel area x 0.12 mm
    irf = sum(np.count_nonzero(m == 1) for n, m in zip(scans.names, scans.masks)
              if n.startswith("Cirrus"))
    assert irf * 0.0117 * 0.0039 * 0.12 == pytest.approx(42 * 5.4756e-06)


def test_retouch_cli(source, tmp_path, capsys):
    src = source[0]
    assert main(["data", "retouch", "--source", str(src), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "index.csv").is_file()


def _refused(src, out, match):
    with pytest.raises(DataError, match=match):
        convert_retouch(src, out)
    assert not out.exists()


def test_bad_retouch_input_is_refused_before_writing(source, tmp_path):
    src = source[0]
    case = src / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001"
    out = tmp_path / "out"
    (case / "oct.raw").rename(case / "oct.raw.bak")                 # .mhd without its .raw
    _refused(src, out, r"TRAIN001/oct\.mhd: its data file oct\.raw is missing")
    (case / "oct.raw.bak").rename(case / "oct.raw")
    _write(case / "reference.mhd", np.zeros((N, H, W - 8), np.uint8))   # other shape
    _refused(src, out, r"TRAIN001/reference\.mhd: size \(3, 64, 88\).*differs")
    _write(case / "reference.mhd", np.zeros((N, H, W), np.uint8), (0.01, 0.0039, 0.12))
    _refused(src, out, r"reference\.mhd: spacing .* differs")
    labels = np.zeros((N, H, W), np.uint8)
    labels[1, 0, 0] = 7                                              # class id 7
    _write(case / "reference.mhd", labels)
    _refused(src, out, r"TRAIN001/reference\.mhd: class ids \[7\] outside")
    (case / "reference.mhd").unlink()
    _refused(src, out, r"TRAIN001/reference\.mhd: missing")


def _folder(tmp_path, classes, mask_value=2):
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    mask = np.zeros((32, 32), np.uint8)
    mask[4:8, 4:8] = mask_value
    for name in ("a", "b"):
        Image.fromarray(np.full((32, 32), 100, np.uint8)).save(folder / "images" / f"{name}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{name}.png")
    pd.DataFrame({"name": ["a", "b"], "subject": ["s1", "s2"],
                  "classes": classes}).to_csv(folder / "index.csv", index=False)
    return folder


def test_declared_classes_keep_ids_and_refuse_undeclared_ones(tmp_path):
    scans = read_dataset(_folder(tmp_path, ["IRF;SRF"] * 2))
    assert scans.classes == ("IRF", "SRF") and scans.n_labels == 3
    assert int(scans.masks[0].max()) == 2 and scans.subset(["b"]).classes == ("IRF", "SRF")
    with pytest.raises(DataError, match=r"masks/a\.png: class ids \[2\] outside the declared"):
        read_dataset(_folder(tmp_path / "x", ["IRF"] * 2))
    with pytest.raises(DataError, match=r"index\.csv: column 'classes' must hold the same"):
        read_dataset(_folder(tmp_path / "y", ["IRF;SRF", "IRF"]))
    with pytest.raises(DataError, match=r"index\.csv: classes 'IRF;;SRF' must be distinct"):
        read_dataset(_folder(tmp_path / "z", ["IRF;;SRF"] * 2))


def test_predict_reads_metaimage_volumes_with_their_spacing(source, tmp_path):
    """`oct-seg predict` on oct.mhd: B-scans read as their converted PNGs do, and fluid
    areas / volumes use the header's spacing (a threshold network: fluid = pixels > 0.5)."""
    import keras

    from oct_seg.data import read_image
    from oct_seg.models.blocks import SizeCheck
    from oct_seg.predict import predict_files
    from oct_seg.volumes import read_input

    src, _, (spec_oct, _) = source
    case = src / "RETOUCH-TrainingSet-Spectralis" / "TRAIN025"
    out = convert_retouch(src, tmp_path / "data")
    (volume,) = read_input(case / "oct.mhd")
    assert (volume.spacing.lateral_mm, volume.spacing.axial_mm, volume.spacing.bscan_mm) == \
        pytest.approx(SPACING)
    for k in range(N):
        np.testing.assert_array_equal(
            volume.bscans[k], read_image(out / "images" / f"Spectralis_TRAIN025_b{k:03d}.png"))
    inp = keras.Input((None, None, 1))
    x = keras.layers.Rescaling(100.0, -50.0)(SizeCheck(4)(inp))
    net = keras.Model(inp, keras.layers.Activation("sigmoid")(x))
    areas = predict_files(net, [case / "oct.mhd"], tmp_path / "pred", progress=False)
    bright = [int(np.count_nonzero(spec_oct[k] / 65535.0 > 0.5)) for k in range(N)]
    assert list(areas["fluid_pixels"]) == bright
    pixel_mm2 = SPACING[0] * SPACING[1]
    np.testing.assert_allclose(areas["fluid_area_mm2"], np.array(bright) * pixel_mm2)
    volumes = pd.read_csv(tmp_path / "pred" / "fluid_volumes.csv")
    assert volumes.loc[0, "fluid_volume_mm3"] == pytest.approx(sum(bright) * pixel_mm2 * 0.12)
    (case / "oct.raw").unlink()
    with pytest.raises(DataError, match=r"oct\.mhd: its data file oct\.raw is missing"):
        read_input(case / "oct.mhd")
