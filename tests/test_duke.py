"""convert_duke on small .mat files with the official structure (written here with scipy)."""
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import savemat

from oct_seg.data import DataError, convert_duke, read_dataset

H, W, S = 16, 20, 6
ANNOTATED = {1: [1, 3, 4], 9: [0, 5]}


def _subject(subject, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (H, W, S), dtype=np.uint8)
    fluid = {}
    for grader in (1, 2):
        f = np.full((H, W, S), np.nan)
        for k in ANNOTATED[subject]:
            f[:, :, k] = 0
            f[2:4, 2 + grader:5 + grader, k] = 1       # pocket 1, shifted per grader
            f[8:10, 10:12, k] = 2 if k % 2 else 0      # pocket 2 on odd slices only
        fluid[grader] = f
    return {"images": images, "manualFluid1": fluid[1], "manualFluid2": fluid[2],
            "manualLayers1": np.full((8, W, S), np.nan)}


@pytest.fixture()
def release(tmp_path):
    folder = tmp_path / "2015_BOE_Chiu"
    folder.mkdir()
    mats = {}
    for subject in ANNOTATED:
        mats[subject] = _subject(subject, subject)
        savemat(folder / f"Subject_{subject:02d}.mat", mats[subject])
    (folder / "readme.txt").write_text("not a subject")
    zpath = tmp_path / "2015_BOE_Chiu.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, f"2015_BOE_Chiu/{p.name}")
    return folder, zpath, mats


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_convert_writes_annotated_slices(release, tmp_path, kind):
    folder, zpath, mats = release
    out = convert_duke(folder if kind == "folder" else zpath, tmp_path / "out")
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == ["name", "subject", "bscan_index", "height", "width",
                                   "fluid_fraction", "n_fluid_components"]
    assert list(index["name"]) == ["subject01_annot00", "subject01_annot01", "subject01_annot02",
                                   "subject09_annot00", "subject09_annot01"]
    assert list(index["subject"]) == [1, 1, 1, 9, 9]
    assert list(index["bscan_index"]) == [1, 3, 4, 0, 5]
    assert list(index["n_fluid_components"]) == [2, 2, 1, 1, 2]
    np.testing.assert_allclose(index["fluid_fraction"], [10 / (H * W), 10 / (H * W), 6 / (H * W),
                                                         6 / (H * W), 10 / (H * W)], atol=1e-6)
    for row in index.itertuples():
        mat = mats[row.subject]
        img = np.asarray(Image.open(out / "images" / f"{row.name}.png"))
        np.testing.assert_array_equal(img, mat["images"][:, :, row.bscan_index])
        mask = np.asarray(Image.open(out / "masks" / f"{row.name}.png"))
        np.testing.assert_array_equal(mask, (mat["manualFluid1"][:, :, row.bscan_index] > 0) * 255)
        inst = np.asarray(Image.open(out / "instances" / f"{row.name}.png"))
        np.testing.assert_array_equal(inst, mat["manualFluid1"][:, :, row.bscan_index])
    scans = read_dataset(out)
    assert len(scans) == 5 and scans.images[0].shape == (H, W)


def test_grader_two_and_bad_grader(release, tmp_path):
    folder, _, mats = release
    out = convert_duke(folder, tmp_path / "g2", grader=2)
    mask = np.asarray(Image.open(out / "masks" / "subject01_annot00.png"))
    np.testing.assert_array_equal(mask, (mats[1]["manualFluid2"][:, :, 1] > 0) * 255)
    assert not np.array_equal(mask, (mats[1]["manualFluid1"][:, :, 1] > 0) * 255)
    with pytest.raises(ValueError, match="grader"):
        convert_duke(folder, tmp_path / "g3", grader=3)


def test_refuses_non_empty_out_and_overwrite_replaces(release, tmp_path):
    folder, _, _ = release
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        convert_duke(folder, out)
    assert (out / "keep.txt").read_text() == "mine"
    convert_duke(folder, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "index.csv").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (convert_duke(folder, empty) / "index.csv").is_file()


@pytest.mark.parametrize("broken, message", [
    ({"images": np.zeros((H, W, S), np.uint8)}, "missing variable 'manualFluid1'"),
    ({"images": np.zeros((H, W), np.uint8), "manualFluid1": np.zeros((H, W))}, "expected \\(H, W, slices\\)"),
    ({"images": np.zeros((H, W, S), np.uint8), "manualFluid1": np.zeros((H, W, S + 1))}, "differs"),
    # silent damage before (exit 0): a black B-scan, ids wrapped or lost in instances/,
    # a folder of 1 x 1 B-scans that evaluate then refused
    ({"images": np.linspace(0, 1, H * W * S).reshape(H, W, S), "manualFluid1": np.zeros((H, W, S))},
     r"'images' must hold 8-bit grey values .* look scaled to \[0, 1\]"),
    ({"images": np.full((H, W, S), 100.5), "manualFluid1": np.zeros((H, W, S))},
     r"float64 values in \[100.5, 100.5\]"),
    ({"images": np.zeros((H, W, S), np.uint8), "manualFluid1": np.full((H, W, S), np.inf)},
     "'manualFluid1' holds infinite values"),
    ({"images": np.zeros((H, W, S), np.uint8), "manualFluid1": np.full((H, W, S), 70000.0)},
     "'manualFluid1' holds pocket id 70000; instances/ PNGs hold ids up to 65535"),
    ({"images": np.zeros((1, 1, S), np.uint8), "manualFluid1": np.zeros((1, 1, S))},
     "1 x 1 B-scan is smaller than 16 x 16"),
])
def test_bad_mat_names_file_and_leaves_nothing(release, tmp_path, broken, message):
    folder, _, _ = release
    savemat(folder / "Subject_10.mat", broken)       # processed last, after good subjects
    out = tmp_path / "out"
    with pytest.raises(DataError, match=f"Subject_10.mat.*{message}"):
        convert_duke(folder, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_bad_sources(tmp_path):
    with pytest.raises(DataError, match="no Subject_NN.mat"):
        convert_duke(tmp_path, tmp_path / "out")
    (tmp_path / "Subject_01.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="Subject_01.mat"):
        convert_duke(tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match="not a zip"):
        convert_duke(tmp_path / "missing.zip", tmp_path / "out")
