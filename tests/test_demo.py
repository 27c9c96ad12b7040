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
