"""`oct-seg` command line: every subcommand in-process, --help in a real subprocess, and the
bad-input contract (one line on stderr naming the file, exit 1, nothing half-written)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from oct_seg.cli import main
from oct_seg.models.unet import build_unet

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    build_unet(input_size=(32, 32, 1), filter_num=[4, 4, 8, 8], name="tiny").save(path)
    return path


@pytest.fixture(scope="module")
def small_duke(duke_dir, tmp_path_factory):
    """6 real B-scans of 3 subjects (symlinked), with their index rows."""
    index = pd.read_csv(duke_dir / "index.csv")
    index = index[index["subject"].isin([1, 2, 3])].groupby("subject").head(2)
    out = tmp_path_factory.mktemp("duke_small")
    for sub in ("images", "masks"):
        (out / sub).mkdir()
        for name in index["name"]:
            (out / sub / f"{name}.png").symlink_to(duke_dir / sub / f"{name}.png")
    index.to_csv(out / "index.csv", index=False)
    return out


def _fails(capsys, argv, *fragments):
    """Run main(argv): it must return 1 with one stderr line holding every fragment."""
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_help_in_subprocess():
    run = subprocess.run([str(VENV_BIN / "oct-seg"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for command in ("train", "evaluate", "predict", "export", "data", "demo"):
        assert command in run.stdout
    run = subprocess.run([sys.executable, "-m", "oct_seg", "predict", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "fluid_volumes.csv" in run.stdout and "--spacing" in run.stdout


def test_error_is_one_stderr_line_in_subprocess(tmp_path):
    """A real `oct-seg` process: exit 1 and exactly one stderr line (TensorFlow's start-up
    notices are silenced), naming the file; nothing written."""
    (tmp_path / "m.keras").write_text("not a model")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "b.png")
    run = subprocess.run([str(VENV_BIN / "oct-seg"), "predict", "--model",
                          str(tmp_path / "m.keras"), str(tmp_path / "b.png"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "m.keras: not a loadable Keras model" in lines[0], run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "m.keras"]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--model", "m.keras"])  # no inputs, no --out
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err


def test_predict_command(tmp_path, tiny_model, small_duke, capsys):
    images = sorted((small_duke / "images").iterdir())[:2]
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(tiny_model), *map(str, images), "--out", str(out),
                 "--spacing", "0.0115", "0.0039", "0", "--no-progress"]) == 0
    assert "2 B-scans" in capsys.readouterr().out
    areas = pd.read_csv(out / "fluid_areas.csv")
    assert list(areas["name"]) == [p.stem for p in images]
    masks = [np.asarray(Image.open(out / "masks" / p.name)) for p in images]
    assert [m.shape for m in masks] == [(496, 768)] * 2
    np.testing.assert_allclose(areas["fluid_area_mm2"],
                               [np.count_nonzero(m) * 0.0115 * 0.0039 for m in masks])


def test_predict_batch_size_option(tmp_path, tiny_model, capsys, monkeypatch):
    import tifffile

    import oct_seg.inference

    calls = []
    original = oct_seg.inference.predict_image

    def spy(model, image, **kwargs):
        calls.append(len(image))
        return original(model, image, **kwargs)

    monkeypatch.setattr(oct_seg.inference, "predict_image", spy)
    pages = np.random.default_rng(0).integers(0, 256, (3, 32, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")
    out = tmp_path / "pred"
    base = ["predict", "--model", str(tiny_model), str(tmp_path / "stack.tif"), "--no-progress"]
    assert main(base + ["--out", str(out), "--batch-size", "2"]) == 0
    assert "3 B-scans" in capsys.readouterr().out and calls == [2, 1]
    assert sorted(os.listdir(out / "masks")) == [f"stack_b{k:03d}.png" for k in range(3)]
    assert pd.read_csv(out / "fluid_volumes.csv").loc[0, "n_bscans"] == 3
    calls.clear()
    assert main(base + ["--out", str(tmp_path / "default")]) == 0 and calls == [3]  # default 4
    with pytest.raises(SystemExit) as info:
        main(base + ["--out", str(tmp_path / "o"), "--batch-size", "0"])
    assert info.value.code == 2 and "positive integer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_predict_precision_option(tmp_path, tiny_model, capsys, monkeypatch):
    import oct_seg.inference

    dtypes = []
    original = oct_seg.inference.predict_image

    def spy(models, image, **kwargs):
        dtypes.append(next(la.compute_dtype for la in models[0].layers
                           if isinstance(la, keras.layers.Conv2D)))
        return original(models, image, **kwargs)

    monkeypatch.setattr(oct_seg.inference, "predict_image", spy)
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48), np.uint8)).save(image)
    base = ["predict", "--model", str(tiny_model), str(image), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--precision", "mixed_bfloat16"]) == 0
    assert dtypes == ["float32", "bfloat16"]
    with pytest.raises(SystemExit):
        main(base + ["--out", str(tmp_path / "c"), "--precision", "bf16"])
    assert "invalid choice: 'bf16'" in capsys.readouterr().err


def test_predict_volume_report_options(tmp_path, tiny_model, capsys):
    import tifffile

    pages = np.random.default_rng(1).integers(0, 256, (3, 32, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", pages, photometric="minisblack")
    base = ["predict", "--model", str(tiny_model), str(tmp_path / "stack.tif"), "--no-progress"]
    out = tmp_path / "pred"
    assert main(base + ["--out", str(out), "--eye", "OS", "--fovea", "1", "20",
                        "--report-format", "pdf"]) == 0
    assert "volume reports" in capsys.readouterr().out
    assert (out / "reports" / "stack_report.pdf").is_file()
    etdrs = pd.read_csv(out / "reports" / "stack_etdrs.csv")
    assert etdrs.loc[0, ["eye", "fovea_bscan", "fovea_column"]].tolist() == ["OS", 1, 20]
    _fails(capsys, base + ["--out", str(tmp_path / "o"), "--fovea", "3", "0"],
           "stack.tif: --fovea 3 0 is outside")
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as info:
        main(base + ["--out", str(tmp_path / "o"), "--eye", "right"])
    assert info.value.code == 2 and "invalid choice: 'right'" in capsys.readouterr().err


def test_evaluate_command(tmp_path, tiny_model, small_duke, capsys):
    from oct_seg.data.readers import read_dataset
    from oct_seg.evaluate import evaluate_model

    out = tmp_path / "scores.csv"
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(small_duke),
                 "--noise-std", "0.05", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dice" in printed and "mean" in printed and "sensitivity" in printed
    scores = pd.read_csv(out)
    assert len(scores) == 6
    want = evaluate_model(keras.saving.load_model(tiny_model, compile=False),
                          read_dataset(small_duke), image_size=(32, 32), noise_std=0.05)
    np.testing.assert_allclose(scores["dice"], want["dice"], equal_nan=True)


def test_export_command(tmp_path, tiny_model, capsys):
    out = tmp_path / "sm"
    assert main(["export", "--model", str(tiny_model), "--out", str(out)]) == 0
    assert (out / "saved_model.pb").is_file() and (out / "oct_seg.json").is_file()
    assert str(out) in capsys.readouterr().out


def test_train_command(tmp_path, capsys):
    from oct_seg.data.phantom import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "data", n_subjects=3, per_subject=2, height=40,
                                 width=48, seed=0)

    def argv(out, *extra, kwargs='{"filter_num": [4, 8]}'):
        return ["train", "--data", str(data), "--model", "unet", "--loss", "dice", "--epochs",
                "1", "--batch-size", "2", "--image-size", "32", "--model-kwargs", kwargs,
                "--out", str(tmp_path / out), *extra]

    good = ("--folds", "1", "--devices", "cpu:2", "--bn-momentum", "0.9", "--precision",
            "mixed_bfloat16", "--augment-noise", "0.05")  # MirroredStrategy, bf16
    # a bad option fails before anything is written, so the corrected command is not refused
    # as "a different configuration" of a half-made run
    _fails(capsys, argv("run", *good, kwargs='{"filter_num": [4, 8], "nope": 1}'),
           "model_kwargs of 'unet': unknown argument(s) ['nope']")
    _fails(capsys, argv("run", *good, "--image-size", "33", "32"), "image_size 33 x 32")
    assert not (tmp_path / "run").exists()
    assert main(argv("run", *good)) == 0
    run = tmp_path / "run"
    assert (run / "config.json").is_file() and (run / "final" / "model.keras").is_file()
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["n_folds"] == 1 and config["model_kwargs"]["filter_num"] == [4, 8]
    assert config["bn_momentum"] == 0.9 and config["precision"] == "mixed_bfloat16"
    assert config["augment_noise"] == 0.05
    capsys.readouterr()
    _fails(capsys, argv("r2", "--fold", "7"), "--fold 7")
    _fails(capsys, argv("r3", kwargs="{bad"), "--model-kwargs is not valid JSON")
    _fails(capsys, argv("r4", "--devices", "cpu:x"), "--devices cpu:x")
    _fails(capsys, argv("r5", "--augment-noise", "-0.1"), "augment_noise must be >= 0")
    assert not any((tmp_path / r).exists() for r in ("r2", "r3", "r4", "r5"))


def test_data_duke_command(tmp_path, monkeypatch, capsys):
    import oct_seg.data.duke

    calls = []
    monkeypatch.setattr(oct_seg.data.duke, "convert_duke",
                        lambda *a, **k: calls.append((a, k)) or Path(a[1]))
    (tmp_path / "duke.zip").write_bytes(b"")
    assert main(["data", "duke", "--source", str(tmp_path / "duke.zip"), "--out",
                 str(tmp_path / "d"), "--grader", "2"]) == 0
    assert calls == [((tmp_path / "duke.zip", tmp_path / "d"), {"grader": 2, "overwrite": False})]
    _fails(capsys, ["data", "duke", "--source", str(tmp_path / "nope.zip"), "--out",
                    str(tmp_path / "d2")], "nope.zip", "not found")


# ------------------------------------------------------------------------------- bad inputs
def _leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_bad_model_file(tmp_path, capsys):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "model.keras").write_text("this is not a model")
    _fails(capsys, ["predict", "--model", str(tmp_path / "model.keras"), str(tmp_path / "b.png"),
                    "--out", str(tmp_path / "o")], "model.keras", "not a loadable Keras model")
    _fails(capsys, ["export", "--model", str(tmp_path / "missing.keras"), "--out",
                    str(tmp_path / "o")], "missing.keras", "model not found")
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_bad_inputs_to_predict(tmp_path, tiny_model, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.png").write_text("not an image")
    Image.fromarray(np.zeros((6, 40), np.uint8)).save(tmp_path / "tiny.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "ok.png")
    base = ["predict", "--model", str(tiny_model), "--out", str(tmp_path / "o"), "--no-progress"]
    _fails(capsys, base + [str(tmp_path / "notes.txt")], "notes.txt", "unsupported input type")
    _fails(capsys, base + [str(tmp_path / "ok.png"), str(tmp_path / "fake.png")], "fake.png",
           "not a readable image")
    _fails(capsys, base + [str(tmp_path / "tiny.png")], "tiny.png: 6 x 40 B-scan is smaller "
           "than 16 x 16 pixels")
    _fails(capsys, base + [str(tmp_path / "gone.png")], "gone.png", "not found")
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_unwritable_output(tmp_path, tiny_model, capsys):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "ok.png")
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    # a file where a folder of --out should be: named as such (was "File exists" / "folder
    # does not exist")
    for argv in (["predict", "--model", str(tiny_model), str(tmp_path / "ok.png"), "--out",
                  str(blocker / "out")],
                 ["export", "--model", str(tiny_model), "--out", str(blocker / "out")],
                 ["evaluate", "--model", str(tiny_model), "--data", str(tmp_path), "--out",
                  str(blocker / "x.csv")]):
        _fails(capsys, argv, f"{blocker} is a file, not a folder")
    _fails(capsys, ["export", "--model", str(tiny_model), "--out", str(blocker)],
           "file", "not a folder")
    _fails(capsys, ["evaluate", "--model", str(tiny_model), "--data", str(tmp_path), "--out",
                    str(tmp_path)], "is a folder; give a file name")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        _fails(capsys, ["predict", "--model", str(tiny_model), str(tmp_path / "ok.png"),
                        "--out", str(locked / "o")], "locked", "cannot write")


def test_existing_output_needs_overwrite(tmp_path, tiny_model, capsys):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "ok.png")
    out = tmp_path / "o"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    argv = ["predict", "--model", str(tiny_model), str(tmp_path / "ok.png"), "--out", str(out),
            "--no-progress"]
    _fails(capsys, argv, str(out), "--overwrite")
    assert os.listdir(out) == ["old.txt"]
    assert main(argv + ["--overwrite"]) == 0 and not (out / "old.txt").exists()


def test_missing_data_folder(tmp_path, tiny_model, capsys):
    for argv in (["evaluate", "--model", str(tiny_model), "--data", str(tmp_path / "nodata")],
                 ["train", "--data", str(tmp_path / "nodata"), "--model", "unet", "--loss",
                  "dice", "--out", str(tmp_path / "run")],
                 ["demo", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "d")]):
        _fails(capsys, argv, "nodata", "data folder not found")
    assert sorted(os.listdir(tmp_path)) == []


def test_data_folder_layout_messages_and_optional_index(tmp_path, tiny_model, capsys):
    """README: index.csv is optional; train and evaluate refused a folder without it, and an
    empty folder or one without images/ got the index.csv message."""
    from oct_seg.data.phantom import write_phantom_dataset

    empty = tmp_path / "empty"
    empty.mkdir()
    evaluate = ["evaluate", "--model", str(tiny_model), "--data"]
    _fails(capsys, evaluate + [str(empty)], f"{empty}: empty folder; a data folder holds "
                                            "images/ and masks/")
    (empty / "masks").mkdir()
    _fails(capsys, evaluate + [str(empty)], f"{empty}: no images/ sub-folder")
    data = write_phantom_dataset(tmp_path / "data", n_subjects=2, per_subject=2, height=32,
                                 width=32, seed=0)
    (data / "index.csv").unlink()
    mask = data / "masks" / "phantom01_scan00.png"
    labels = (np.asarray(Image.open(mask)) > 0).astype(np.uint8) * 3
    labels[0, 0] = 3  # an instance id, not 255: binarised with a warning
    Image.fromarray(labels).save(mask)
    assert main(evaluate + [str(data)]) == 0
    out, err = capsys.readouterr()
    assert "phantom02_scan01" in out  # every scan scored, each its own subject
    # warnings: one line each, no Python source line under them
    assert set(err.strip().splitlines()) == {
        f"oct-seg evaluate: warning: {data / 'masks' / 'phantom01_scan00.png'}: mask values "
        "[0, 3] are not {0,1} or {0,255}; binarising (any non-zero = fluid)",
        f"oct-seg evaluate: warning: {data}: no index.csv, so every scan is its own subject "
        "and folds are not split by patient; add index.csv (columns name, subject) for "
        "patient-wise folds"}


def test_ctrl_c_is_one_line_from_parsing_on(monkeypatch, capsys):
    """Ctrl-C while the command line was read printed a traceback; train's run folder is
    kept (resumable), so its message says how to go on."""
    import oct_seg.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(oct_seg.cli, "_add_demo", interrupted)  # inside build_parser
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "oct-seg: interrupted; no partial output was kept\n"
    monkeypatch.undo()
    monkeypatch.setattr(oct_seg.cli, "_train", interrupted)
    assert main(["train", "--data", "d", "--out", "r"]) == 130
    assert capsys.readouterr().err == "oct-seg: interrupted; rerun the same command to resume\n"


def test_debug_shows_traceback(tmp_path, tiny_model):
    from oct_seg.data.readers import DataError

    with pytest.raises(DataError, match="data folder not found"):
        main(["--debug", "evaluate", "--model", str(tiny_model), "--data", str(tmp_path / "x")])
