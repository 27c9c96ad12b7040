"""oct_seg.reporting: tables from run dirs (hand-built fixtures), paper numbers, figures."""
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oct_seg import reporting as R


def _scores(names, truth, pred, dice):
    return pd.DataFrame({"name": names, "subject": 1, "dice": dice,
                         "jaccard": [np.nan if np.isnan(d) else d / (2 - d) for d in dice],
                         "sensitivity": np.nan, "precision": np.nan,
                         "truth_pixels": truth, "pred_pixels": pred})


def _fake_run(root, name, per_fold_val_dice, n_epochs=(3, 2)):
    """A run dir with summary.csv, fold dirs with fold.json, history.csv and score CSVs."""
    run = root / name
    records = []
    for k, vd in enumerate(per_fold_val_dice):
        fd = run / f"fold_{k}"
        fd.mkdir(parents=True)
        (fd / "fold.json").write_text(json.dumps({"fold": k}))
        ep = n_epochs[k % len(n_epochs)]
        pd.DataFrame({"epoch": range(ep), "dice": np.arange(ep) + 10.0 * k,
                      "val_dice": np.arange(ep) * 2.0, "loss": 1.0, "val_loss": 1.0,
                      "jaccard": 0.1, "val_jaccard": 0.1}).to_csv(fd / "history.csv", index=False)
        # two scans: T=10,P=10,d=vd ; T=0,P=0 (both empty, NaN) -> pooled Dice = vd
        for part in ("train", "val"):
            for cond in ("clean", "noisy"):
                _scores(["a", "b"], [10, 0], [10, 0], [vd, np.nan]).to_csv(
                    fd / f"{part}_scores_{cond}.csv", index=False)
        for part in ("train", "val"):
            for cond in ("clean", "noisy"):
                for metric, v in (("dice", vd), ("jaccard", vd / (2 - vd))):
                    records.append((part, cond, metric, k, v))
    long = pd.DataFrame(records, columns=["set", "condition", "metric", "fold", "value"])
    g = long.groupby(["set", "condition", "metric"])["value"]
    summ = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n_folds": g.size()}).reset_index()
    summ.to_csv(run / "summary.csv", index=False)
    return run


# the committed tables of the earlier (128 x 192, unconverged) runs
RESULTS = Path(__file__).resolve().parents[1] / "results" / "unconverged_128x192"
# the paper's printed row names (tables.csv) -> our row keys, and our tables' files
PRINTED_ROWS = {"U-Net": "unet", "Attention U-Net": "att_unet", "TransUNet": "transunet",
                "R2 U-Net": "r2_unet", "UNet 3+": "unet3plus", "Swin-UNet": "swin_unet",
                "Proposed (Dice + focal Tversky + WBCE)": "combined",
                "Focal Dice (focal Tversky)": "focal_tversky", "WBCE": "wbce",
                "Tversky": "tversky"}
OUR_TABLES = {"table1": ("table1_networks", R.TABLE1_NETWORKS, R.NETWORK_LABELS),
              "table3": ("table3_losses_clean", R.TABLE3_LOSSES, R.LOSS_LABELS),
              "table4": ("table4_losses_noisy", R.TABLE3_LOSSES, R.LOSS_LABELS)}
CELLS = {"train_dice": "Dice train", "val_dice": "Dice validation",
         "train_jaccard": "Jaccard train", "val_jaccard": "Jaccard validation"}


def _printed_tables(path):
    """tables.csv read with the csv module: {"table1": {row key: {cell: "85.90"}}, ...}."""
    tables = {}
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            tables.setdefault(f"table{rec['table']}", {})[PRINTED_ROWS[rec["row"]]] = {
                cell: rec[cell] for cell in CELLS}
    return tables


def test_paper_holds_every_printed_cell(paper_tables_csv):
    printed = _printed_tables(paper_tables_csv)
    assert R.PAPER == {table: {row: {cell: float(v) for cell, v in cells.items()}
                               for row, cells in rows.items()}
                       for table, rows in printed.items()}


def test_vs_paper_tables_have_the_paper_number_of_every_row(paper_tables_csv, tmp_path):
    """Every row of our three tables shows the paper's numbers as printed: its own row, or
    Table 1's TransUNet row (trained with the Dice loss) for Table 3's Dice row; Table 4 prints
    no Dice row. Checked on tables built here and on the committed results/*_vs_paper.csv."""
    printed = _printed_tables(paper_tables_csv)
    stand_in = {("table3", "dice"): ("table1", "transunet", "Table 1, TransUNet row (Dice loss)")}
    for table, (stem, rows, labels) in OUR_TABLES.items():
        no_runs = R.results_table({r: tmp_path / "absent" for r in rows}, "clean", labels)
        committed = pd.read_csv(RESULTS / f"{stem}_vs_paper.csv", index_col=0, dtype=str)
        for vs in (R.compare_with_paper(no_runs, table), committed):
            assert list(vs.index) == [labels[r] for r in rows]
            for row in rows:
                line = vs.loc[labels[row]]
                if (table, row) == ("table4", "dice"):
                    assert line["paper source"] == "not in the paper"
                    assert all(line[f"{c} (paper)"] == "not in the paper" for c in CELLS.values())
                    continue
                src_table, src_row, source = stand_in.get(
                    (table, row), (table, row, f"Table {table[-1]}"))
                assert line["paper source"] == source
                for cell, col in CELLS.items():
                    assert line[f"{col} (paper)"] == printed[src_table][src_row][cell]


def test_pooled_scores_against_hand_computed_counts():
    # scan 1: T=4, P=6, TP=3 -> d=0.6 ; scan 2: T=0, P=2 -> d=0 ; scan 3: both empty
    df = _scores(["x", "y", "z"], [4, 0, 0], [6, 2, 0], [0.6, 0.0, np.nan])
    s = R.pooled_scores(df)
    assert s["dice"] == pytest.approx(2 * 3 / (4 + 6 + 2))
    assert s["jaccard"] == pytest.approx(3 / (4 + 8 - 3))
    empty = R.pooled_scores(_scores(["z"], [0], [0], [np.nan]))
    assert np.isnan(empty["dice"])


def test_results_table_and_paper_comparison(tmp_path):
    run = _fake_run(tmp_path, "transunet__dice", [0.5, 0.7])
    ours = R.results_table({"transunet": run}, "clean", labels=R.NETWORK_LABELS)
    row = ours.iloc[0]
    assert row["n_folds"] == 2
    assert row["val_dice"] == pytest.approx(60.0)
    assert row["val_dice_std"] == pytest.approx(100 * np.std([0.5, 0.7], ddof=1))
    assert row["val_dice_pooled"] == pytest.approx(60.0)
    assert row["val_jaccard"] == pytest.approx(100 * np.mean([0.5 / 1.5, 0.7 / 1.3]))
    table = R.compare_with_paper(ours, "table1")
    assert table.loc["TransUNet", "Dice validation (paper)"] == "80.40"
    assert table.loc["TransUNet", "Dice validation (ours)"] == "60.00 ± 14.14"
    missing = R.results_table({"unet": tmp_path / "absent"}, "noisy")
    assert missing.iloc[0]["n_folds"] == 0 and np.isnan(missing.iloc[0]["val_dice"])
    assert R.compare_with_paper(missing, "table4").iloc[0]["Dice train (ours)"] == "not available"
    with pytest.raises(ValueError, match="condition"):
        R.results_table({"x": run}, "blurred")
    with pytest.raises(ValueError, match="table"):
        R.compare_with_paper(ours, "table2")


def test_mean_history_averages_folds_of_unequal_length(tmp_path):
    run = _fake_run(tmp_path, "unet__dice", [0.5, 0.7], n_epochs=(3, 2))
    h = R.mean_history(run)
    # fold 0: dice 0,1,2 ; fold 1: dice 10,11 -> epoch means 5, 6, 2
    np.testing.assert_allclose(h["dice"], [5.0, 6.0, 2.0])
    np.testing.assert_array_equal(h["n_folds"], [2, 2, 1])
    fig = R.curves_figure({"unet": run}, out_png=tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0 and fig is not None


def test_subset_data_keeps_only_the_chosen_subjects(tmp_path):
    src = tmp_path / "src"
    for sub in ("images", "masks"):
        (src / sub).mkdir(parents=True)
    names = ["s1_a", "s1_b", "s2_a", "s3_a"]
    for n in names:
        for sub in ("images", "masks"):
            (src / sub / f"{n}.png").write_bytes(b"x")
    pd.DataFrame({"name": names, "subject": [1, 1, 2, 3],
                  "fluid_fraction": [0.1, 0.3, 0.2, 0.0]}).to_csv(src / "index.csv", index=False)
    out = R.subset_data(src, tmp_path / "sub", [1, 3])
    assert sorted(p.stem for p in (out / "images").iterdir()) == ["s1_a", "s1_b", "s3_a"]
    assert (out / "masks" / "s1_b.png").is_symlink()
    assert pd.read_csv(out / "index.csv")["subject"].tolist() == [1, 1, 3]
    assert R.pick_example_scan(out) == "s1_b"
    pd.DataFrame({"name": ["a", "b"], "subject": [1, 2], "height": [2, 2], "width": [2, 2],
                  "fluid_fraction": [0.5, 0.0]}).to_csv(tmp_path / "index.csv", index=False)
    base = R.trivial_baseline(tmp_path)  # scan a: T=2 of N=4 -> Dice 2*2/(2+4); scan b: 0
    per_image = base.loc["all fluid, per-image mean", "Dice"]
    assert per_image == pytest.approx(100 * (4 / 6) / 2, abs=0.01)
    assert base.loc["all fluid, pooled", "Dice"] == pytest.approx(100 * 4 / (2 + 8), abs=0.01)
    with pytest.raises(ValueError, match="subjects"):
        R.subset_data(src, tmp_path / "none", [9])


def test_experiment_configs_share_settings_and_network_kwargs_modes():
    cfgs = R.experiment_configs([("transunet", "dice"), ("transunet", "wbce")],
                                R.network_kwargs("QUICK"), image_size=(32, 48), epochs=1,
                                n_folds=2)
    a, b = cfgs[("transunet", "dice")], cfgs[("transunet", "wbce")]
    assert a.image_size == (32, 48) and a.model_kwargs == b.model_kwargs
    assert a.loss_kwargs == b.loss_kwargs == {}  # the recipe's, resolved per fold
    assert R.run_dir_for("/x", "transunet", "dice").name == "transunet__dice"
    assert R.network_kwargs("FULL") == {m: {} for m in R.TABLE1_NETWORKS}
    with pytest.raises(ValueError, match="mode"):
        R.network_kwargs("MEDIUM")
    with pytest.raises(ValueError, match="no model kwargs"):
        R.experiment_configs([("vgg", "dice")], R.network_kwargs("QUICK"))


def test_full_settings_are_the_default_recipe_over_the_ten_experiments():
    full = R.experiment_configs(R.PAPER_EXPERIMENTS, R.network_kwargs("FULL"),
                                **R.SETTINGS["FULL"])
    assert len(full) == 10 and ("transunet", "combined") in full
    assert sum(model == "transunet" for model, _ in full) == 5
    unet, swin = full[("unet", "dice")], full[("swin_unet", "dice")]
    assert unet.native and unet.patch_size == (256, 768) and unet.epochs == 60
    assert unet.n_folds == 5 and unet.checkpoint == "last" and unet.noise_std == 0.1
    assert unet.augment_noise == 0.1   # else the noisy B-scans get no fluid (Table 4 zeros)
    assert unet.precision == "mixed_bfloat16"
    table = R.setting_differences(unet)
    assert table.loc["noisy condition", "ours"].endswith(
        "models trained with Gaussian noise of std U(0, 0.1) added to each training patch, "
        "scored on clean and on noisy scans")
    clean_only = dataclasses.replace(unet, augment_noise=0.0)
    assert R.setting_differences(clean_only).loc["noisy condition", "ours"].endswith(
        "models trained on clean scans, scored on noisy ones")
    assert table.loc["resolution", "ours"].startswith("native pixel spacing: 256 x 768")
    assert "[8, 16, 32, 64, 128]" in table.loc["widths", "ours"]
    assert table.loc["normalisation", "ours"].startswith("batch norm, momentum 1 - 1 /")
    assert table.loc["cross-validation", "ours"] == "5-fold CV split by patient"
    assert table.loc["hardware", "ours"].endswith("mixed_bfloat16 compute (float32 weights)")
    assert "compute" not in R.setting_differences(clean_only.to_dict() | {
        "precision": "float32"}).loc["hardware", "ours"]
    assert R.setting_differences(swin).loc["normalisation", "ours"] == "no batch norm"
    # the Table 1 notebook's table: U-Net's settings, naming the network that differs
    whole = R.setting_differences(unet, others=full)
    assert whole.loc["epochs", "ours"].startswith("60 (swin_unet: 120), the last epoch is")
    assert whole.loc["optimiser", "ours"].startswith(
        "Adam, lr 0.001 (swin_unet: 0.0003) with 1 warm-up epoch")
    assert table.loc["epochs", "ours"].startswith("60, the last epoch is")
    resized = R.setting_differences(R.experiment_configs(
        [("unet", "dice")], R.network_kwargs("QUICK"), **R.SETTINGS["QUICK"])[("unet", "dice")])
    assert resized.loc["resolution", "ours"].startswith("B-scans resized to 32 x 48")


def _fake_train(calls):
    """Stands in for oct_seg.train in fill_fold: writes a finished fold as the library would
    (config.json, splits.json, fold_K with model.keras, history, trained.json, scores,
    fold.json) and records the call."""
    from oct_seg.rundir import RunDir

    def train(data_dir, run_dir, config, verbose=None):
        (k,) = config.folds
        calls.append((config.model, config.loss, k))
        run = RunDir(run_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        if not run.config.is_file():
            run.write_config(config.to_dict(), data_dir)
            run.write_splits([{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]}])
        fold = run.fold(k, config.n_folds)
        fold.path.mkdir()
        fold.model.write_bytes(b"weights")
        pd.DataFrame({"epoch": range(3), "dice": 0.5, "val_dice": [0.2, 0.4, 0.41],
                      "loss": 1.0}).to_csv(fold.history, index=False)
        fold.trained.write_text(json.dumps({"epochs_run": 3, "best_epoch": 2,
                                            "best_val_dice": 0.41, "last_val_dice": 0.41}))
        for cond in ("clean", "noisy"):
            _scores(["ab"[k]], [10], [10], [0.4]).to_csv(fold.scores("val", cond), index=False)
        fold.done.write_text(json.dumps({"fold": k}))
    return train


def test_fill_fold_trains_only_what_is_not_committed_and_copies_no_model(tmp_path, monkeypatch):
    from oct_seg.reporting import experiments

    calls = []
    monkeypatch.setattr(experiments, "train", _fake_train(calls))
    monkeypatch.setattr(experiments, "write_example_predictions", lambda *a: [])
    configs = R.experiment_configs([("unet", "dice"), ("transunet", "dice")],
                                   R.network_kwargs("QUICK"), **R.SETTINGS["QUICK"])
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert len(R.missing_folds(results, configs)) == 4
    dirs = R.collect_experiments(tmp_path / "data", runs, results, configs, folds=[0])
    assert calls == [("unet", "dice", 0), ("transunet", "dice", 0)]  # fold-major
    committed = dirs[("unet", "dice")]
    assert committed == results / "unet__dice"
    assert sorted(p.name for p in (committed / "fold_0").iterdir()) == [
        "fold.json", "history.csv", "trained.json", "val_scores_clean.csv",
        "val_scores_noisy.csv"]
    assert (committed / "config.json").is_file() and (committed / "splits.json").is_file()
    assert (committed / "summary.csv").is_file()  # rebuilt from the committed folds
    assert not (committed / "curves.png").exists()  # no figure rewritten per fold
    todo = R.missing_folds(results, configs)
    assert list(todo["fold"]) == [1, 1]
    assert todo["command"].iloc[0] == ("python -m oct_seg.reporting --experiment unet__dice "
                                       "--fold 1")
    # committed folds are read, never retrained, even when the models are gone
    import shutil
    shutil.rmtree(runs)
    R.collect_experiments(tmp_path / "data", runs, results, configs, folds=[0])
    R.collect_experiments(tmp_path / "data", runs, results, configs, train_missing=False)
    assert len(calls) == 2
    R.fill_fold(tmp_path / "data", runs, results, configs[("unet", "dice")], 1)
    assert calls[-1] == ("unet", "dice", 1) and R.missing_folds(results, configs).shape[0] == 1
    facts = R.convergence_table({"unet": committed})
    assert list(facts["best epoch"]) == [2, 2] and list(facts["epochs run"]) == [3, 3]


def test_committed_folds_of_another_configuration_are_refused(tmp_path, monkeypatch):
    from oct_seg.reporting import experiments

    monkeypatch.setattr(experiments, "train", _fake_train([]))
    monkeypatch.setattr(experiments, "write_example_predictions", lambda *a: [])
    config = R.experiment_configs([("unet", "dice")], R.network_kwargs("QUICK"),
                                  **R.SETTINGS["QUICK"])[("unet", "dice")]
    R.fill_fold(tmp_path, tmp_path / "runs", tmp_path / "results", config, 0)
    other = dataclasses.replace(config, epochs=2)
    with pytest.raises(ValueError, match=r"results/unet__dice/config.json: .*epochs: "
                                         r"committed 1, now 2"):
        R.fill_fold(tmp_path, tmp_path / "runs2", tmp_path / "results", other, 1)
    with pytest.raises(ValueError, match="config.json"):
        R.collect_experiments(tmp_path, tmp_path / "runs2", tmp_path / "results",
                              {("unet", "dice"): other}, train_missing=False)


def test_missing_command_lists_every_fold(tmp_path, capsys):
    from oct_seg.reporting.__main__ import main

    assert main(["--missing", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("python -m oct_seg.reporting --experiment") == 50
    assert "--experiment swin_unet__dice --fold 4" in out


def test_plateau_gain_and_convergence_figure(tmp_path):
    # last window of 5 (of 12 epochs) peaks at 0.705, the epochs before at 0.70
    v = [0.1, 0.3, 0.5, 0.6, 0.65, 0.68, 0.70, 0.69, 0.70, 0.705, 0.70, 0.70]
    assert R.plateau_gain(v) == pytest.approx(0.005)
    assert R.plateau_gain(v, window=9) == pytest.approx(0.705 - 0.5)  # before: 0.1, 0.3, 0.5
    assert np.isnan(R.plateau_gain([0.1] * 5))
    run = _fake_run(tmp_path, "unet__dice", [0.5, 0.7])
    fig = R.convergence_figure({"unet": run, "empty": tmp_path / "absent"},
                               out_png=tmp_path / "conv" / "c.png")
    assert (tmp_path / "conv" / "c.png").stat().st_size > 1000 and fig is not None
    with pytest.raises(ValueError, match="finished fold"):
        R.convergence_figure({"x": tmp_path / "absent"})


def test_scan_summary_and_dice_forms_by_hand(tmp_path):
    # fold 0: (T=4, P=6, d=0.6), (T=0, P=2, d=0); fold 1: (T=10, P=10, d=0.8), (T=0, P=0, NaN)
    f0 = _scores(["x", "y"], [4, 0], [6, 2], [0.6, 0.0])
    f1 = _scores(["z", "w"], [10, 0], [10, 0], [0.8, np.nan])
    s = R.scan_summary([f0, f1])
    assert s["pooled_dice"] == pytest.approx(2 * (3 + 8) / (4 + 6 + 2 + 10 + 10))
    assert s["per_fold_pooled"] == pytest.approx([6 / 12, 0.8])
    assert s["fold_pooled_sd"] == pytest.approx(np.std([0.5, 0.8], ddof=1))
    assert s["image_dice_mean"] == pytest.approx((0.6 + 0.0 + 0.8) / 3)
    assert s["image_dice_fluid_mean"] == pytest.approx(0.7)
    assert (s["fluid_free_scans_with_fp"], s["n_fluid_free"]) == (1, 2)
    run = tmp_path / "transunet__combined"
    for k, table in enumerate((f0, f1)):
        (run / f"fold_{k}").mkdir(parents=True)
        (run / f"fold_{k}" / "fold.json").write_text("{}")
        table.to_csv(run / f"fold_{k}" / "val_scores_clean.csv", index=False)
    forms = R.dice_forms({"combined": run, "wbce": tmp_path / "absent"}, "table3",
                         labels=R.LOSS_LABELS)
    row = forms.loc[R.LOSS_LABELS["combined"]]
    assert row["pooled"] == f"{100 * s['pooled_dice']:.2f}" and row["scans"] == 4
    assert row["per-image, fluid scans"] == "70.00 ± 14.14" and row["paper"] == "83.52"
    assert forms.loc[R.LOSS_LABELS["wbce"], "pooled"] == "not available"
    scans = R.scan_scores({"combined": run})
    assert list(scans["fold"]) == ["fold_0", "fold_0", "fold_1", "fold_1"]


def test_segmentation_grid_draws_the_saved_prediction_of_the_held_out_fold(tmp_path):
    """Two untrained tiny nets saved as fold models; their example predictions are saved
    (write_example_predictions), the models deleted, and the grid drawn from the PNGs."""
    import keras

    from oct_seg.data.phantom import write_phantom_dataset
    from oct_seg.data.readers import read_dataset
    from oct_seg.evaluate import predict_probabilities
    from oct_seg.metrics import case_scores
    from oct_seg.models.registry import build_model
    from oct_seg.training import TrainConfig

    data = write_phantom_dataset(tmp_path / "data", n_subjects=2, per_subject=1, height=40,
                                 width=56, seed=3)
    scans = read_dataset(data)
    scan = R.pick_example_scan(data)
    i = scans.names.index(scan)
    runs, expected = {}, {}
    for seed, name in ((1, "a"), (2, "b")):
        run = tmp_path / name
        (run / "fold_0").mkdir(parents=True)
        (run / "fold_1").mkdir()
        cfg = TrainConfig(model="unet", model_kwargs={"filter_num": [2, 4]}, image_size=(16, 24),
                          n_folds=2, noise_std=0.2)
        (run / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
        others = [n for n in scans.names if n != scan]
        (run / "splits.json").write_text(json.dumps([{"train": [scan], "val": others},
                                                     {"train": others, "val": [scan]}]))
        keras.utils.set_random_seed(seed)
        model = build_model("unet", input_size=(16, 24, 1), filter_num=[2, 4])
        model.save(run / "fold_1" / "model.keras")
        prob = predict_probabilities(model, [scans.images[i]], image_size=(16, 24))[0]
        expected[name] = 100 * case_scores(scans.masks[i] > 0, prob)["dice"]
        assert R.write_example_predictions(run, 0, data) == []  # fold 0 did not hold it out
        written = R.write_example_predictions(run, 1, data)
        assert [p.name for p in written] == [f"example_{scan}_clean.png",
                                             f"example_{scan}_noisy.png"]
        (run / "fold_1" / "model.keras").unlink()
        runs[name] = run
    runs["absent"] = tmp_path / "absent"
    fig, df = R.segmentation_grid(runs, data, out_png=tmp_path / "g.png")
    assert (tmp_path / "g.png").is_file() and list(df["fold"]) == [1, 1]
    np.testing.assert_allclose(df["dice"], [expected["a"], expected["b"]])
    _, noisy = R.segmentation_grid(runs, data, noisy=True)
    assert len(noisy) == 2
    with pytest.raises(ValueError, match="no run holds"):
        R.segmentation_grid({"absent": tmp_path / "absent"}, data)


def test_fold_progress_and_committed_command_by_hand(tmp_path, capsys):
    from oct_seg.reporting.__main__ import main

    fold = tmp_path / "transunet__combined" / "fold_0"
    fold.mkdir(parents=True)
    # clean: (T=4, P=6, d=0.6) and a fluid-free scan given 2 pixels; noisy: (T=4, P=4, d=0.5)
    # and the fluid-free scan left empty
    clean = _scores(["x", "y"], [4, 0], [6, 2], [0.6, 0.0]).assign(subject=[7, 6])
    noisy = _scores(["x", "y"], [4, 0], [4, 0], [0.5, np.nan]).assign(subject=[7, 6])
    clean.to_csv(fold / "val_scores_clean.csv", index=False)
    noisy.to_csv(fold / "val_scores_noisy.csv", index=False)
    (fold / "trained.json").write_text(json.dumps({"epochs_run": 60, "best_epoch": 41}))
    (fold / "fold.json").write_text(json.dumps({"fold": 0, "seconds_last_session": 1800.0}))
    table = R.fold_progress({"combined": fold.parent, "wbce": tmp_path / "absent"},
                            R.LOSS_LABELS)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["run"], row["fold"], row["held out"]) == (R.LOSS_LABELS["combined"], "fold_0",
                                                          "6, 7")
    assert (row["epochs run"], row["best epoch"], row["wall min"]) == (60, 42, 30.0)
    assert row["pooled clean"] == pytest.approx(100 * 2 * 3 / (4 + 6 + 2))
    assert row["pooled noisy"] == pytest.approx(50.0)
    assert row["per-image fluid clean"] == pytest.approx(60.0)
    assert (row["fluid-free with FP clean"], row["fluid-free with FP noisy"]) == ("1/1", "0/1")
    md = R.markdown_table(table[["run", "best epoch", "pooled clean"]]).splitlines()
    assert md == ["| run | best epoch | pooled clean |", "|---|---|---|",
                  f"| {R.LOSS_LABELS['combined']} | 42 | 50.0 |"]

    assert main(["--committed", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[2].startswith("| transunet__combined | fold_0 | 6, 7 | 60 | 42 |")
    assert main(["--committed", "--results", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip() == "no fold is committed yet"
