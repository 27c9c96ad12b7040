"""`oct-seg demo --quick`: the run folder is complete and self-consistent."""
import json

import numpy as np
import pandas as pd
from PIL import Image

from oct_seg.cli import main


def test_quick_demo_run_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "run folder" in printed and str(out / "savedmodel") in printed
    for name in ("config.json", "model.keras", "history.csv", "curves.png", "summary.csv",
                 "test_scores_clean.csv", "test_scores_noisy.csv", "comparison.png",
                 "savedmodel/saved_model.pb", "savedmodel/oct_seg.json",
                 "predictions/fluid_areas.csv", "data/index.csv"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["network"] == "transunet" and config["epochs_run"] == 1
    assert set(config["test_scans"]).isdisjoint(config["train_scans"])
    scores = pd.read_csv(out / "test_scores_clean.csv")
    assert sorted(scores["name"]) == sorted(config["test_scans"])
    summary = pd.read_csv(out / "summary.csv")
    assert {"condition", "mean", "std"} <= set(summary.columns)
    # the fluid table agrees with the written masks
    areas = pd.read_csv(out / "predictions" / "fluid_areas.csv")
    for name, pixels in zip(areas["name"], areas["fluid_pixels"]):
        mask = np.asarray(Image.open(out / "predictions" / "masks" / f"{name}.png"))
        assert np.count_nonzero(mask) == pixels
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary folders left


def test_demo_bad_arguments(tmp_path, capsys):
    assert main(["demo", "--quick", "--minutes", "0", "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "--minutes must be > 0" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_pretrained_demo_on_real_bscans_prefers_unseen_subjects(tmp_path, duke_dir, capsys):
    """`demo --pretrained --data`: no training; the preset's masks are the written ones and
    the scores are those of the written masks against the grader's (checked with numpy)."""
    from oct_seg.presets import preset_metadata

    out = tmp_path / "pre"
    assert main(["demo", "--pretrained", "--data", str(duke_dir), "--out", str(out)]) == 0
    assert "preset demo finished" in capsys.readouterr().out
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 6 and (out / "comparison.png").is_file()
    # all 8 Duke subjects are in the preset's training data: every shown scan is marked seen
    assert set(preset_metadata("duke_dme_fluid")["trained_on"]["subject_ids"]) == {
        str(s) for s in range(1, 9)}
    assert set(scores["source"]) == {"seen in training"}
    for name, dice in zip(scores["name"], scores["dice"]):
        pred = np.asarray(Image.open(out / "predictions" / "masks" / f"{name}.png")) > 0
        truth = np.asarray(Image.open(duke_dir / "masks" / f"{name}.png")) > 0
        expected = 2 * np.count_nonzero(pred & truth) / (pred.sum() + truth.sum())
        assert abs(dice - expected) < 1e-6
    assert scores["dice"].mean() > 0.5


def test_pretrained_demo_without_data_segments_a_phantom_volume(tmp_path, capsys):
    out = tmp_path / "pre"
    assert main(["demo", "--pretrained", "--out", str(out)]) == 0
    assert "phantoms are drawn shapes, not OCT" in capsys.readouterr().out
    volumes = pd.read_csv(out / "predictions" / "fluid_volumes.csv")
    assert len(volumes) == 1 and volumes["n_bscans"].iloc[0] == 25
    assert (out / "predictions" / "reports").is_dir()
    assert main(["demo", "--pretrained", "--quick", "--out", str(tmp_path / "q")]) == 1
    assert "--pretrained trains nothing" in capsys.readouterr().err
