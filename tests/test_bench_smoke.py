"""Smoke test of the benchmark harness (bench/) at tiny size, so that it cannot rot.

Runs the per-configuration worker in-process for our U-Net and keras-unet-collection's
unet_2d (32 x 32, filters 4-8-16, one timed step each; kuc inference only), then checks the planning
(interleaving), the ratio summary against a hand computation and the markdown report.
"""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def worker():
    return _load("_worker")


@pytest.fixture(scope="module")
def runner():
    return _load("run_benchmarks")


def _run_worker(worker, capsys, impl, *extra):
    worker.main([*extra, "--impl", impl, "--net", "unet", "--size", "32", "--filters", "4,8,16",
                 "--opts", json.dumps({"batch_norm": False}), "--min-time", "0",
                 "--max-steps", "1"])
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("BENCH_RESULT ")]
    assert len(line) == 1
    return json.loads(line[0][len("BENCH_RESULT "):])


def test_worker_measures_ours_and_kuc(worker, capsys):
    pytest.importorskip("keras_unet_collection")
    ours = _run_worker(worker, capsys, "ours")
    kuc = _run_worker(worker, capsys, "kuc", "--skip-train")  # parameters + inference only
    # same architecture -> same parameter count; hand count for filters 4-8-16, 1 channel in:
    # encoder 3x3 convs: 1->4, 4->4, 4->8, 8->8, 8->16, 16->16; decoder level 1: 16->8 (before
    # concat), 16->8, 8->8; level 0: 8->4, 8->4, 4->4; head 1x1 4->1
    convs = [(1, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 8), (16, 8), (8, 8),
             (8, 4), (8, 4), (4, 4)]
    expected = sum(9 * i * o + o for i, o in convs) + (4 + 1)
    assert ours["params"] == kuc["params"] == expected
    assert ours["train_ips"] > 0 and len(ours["train_step_s"]) == 1
    assert ours["rss_train_mb"] >= ours["rss_infer_mb"] >= ours["rss_import_mb"] > 0
    assert "train_ips" not in kuc
    for res in (ours, kuc):
        assert res["infer_ips"] > 0 and len(res["infer_step_s"]) == 1


def test_plan_interleaves_and_summary_ratios(runner, tmp_path):
    args = runner.parse_args(["--quick", "--nets", "unet,transunet", "--no-legacy",
                              "--volume", "off", "--out", str(tmp_path / "B.md")])
    args.legacy_py = None
    groups = runner.plan(args)
    # kuc transunet needs the legacy venv (skipped here): unet has a pair, transunet ours only
    assert [[c["label"] for c in g] for g in groups] == [["kuc", "ours"], ["ours"]]
    transunet_opts = json.loads(groups[1][0]["args"][groups[1][0]["args"].index("--opts") + 1])
    assert transunet_opts["patch_size"] == [1, 1]  # kuc's 1x1 tokens: the fair pair

    def row(label, rep, train, infer):
        return dict(section="grid", net="unet", size=64, label=label, impl=label, rep=rep,
                    filters="8,16", params=10, train_ips=train, infer_ips=infer,
                    rss_train_mb=900.0, rss_infer_mb=800.0, error="")

    rows = [row("kuc", 0, 2.0, 10.0), row("ours", 0, 3.0, 10.0),
            row("kuc", 1, 4.0, 20.0), row("ours", 1, 4.0, 30.0),
            row("kuc", 2, 1.0, 5.0), row("ours", 2, 2.0, 5.0)]
    summary = {s["label"]: s for s in runner.summarize(rows)}
    ours = summary["ours"]
    # per-repetition ratios: train 1.5, 1.0, 2.0 -> median 1.5; infer 1.0, 1.5, 1.0 -> 1.0
    assert ours["train_ips_ratio"] == pytest.approx(1.5)
    assert (ours["train_ips_ratio_min"], ours["train_ips_ratio_max"]) == (1.0, 2.0)
    assert ours["infer_ips_ratio"] == pytest.approx(1.0)
    assert ours["train_ips"] == pytest.approx(3.0)
    info = dict(cpu="test cpu", cores=2, load_avg_start=(1.0, 1.0, 1.0), python="3",
                tf="2", keras="3", kuc="0.1.13")
    args.rows = rows
    md = runner.markdown(info, list(summary.values()), None, [], args, "RUN", "RUN_raw.csv", 60)
    assert "| unet | 64 | ours (ours) | 10 | 3 | **1.50** (1.00–2.00) | – |" in md
    assert "test cpu" in md and args.command in md


def test_volume_job_paths_write_the_same_outputs(duke_dir, tmp_path, monkeypatch):
    """bench/_volume.py --quick on a 2-slice TIFF: every path runs and reports its stages."""
    volume = _load("_volume")
    monkeypatch.setattr(volume, "DUKE", duke_dir / "images")
    out = tmp_path / "volume.json"
    assert volume.main(["--quick", "--slices", "2", "--out-json", str(out)]) == 0
    result = json.loads(out.read_text())
    names = [p["name"] for p in result["paths"]]
    assert names == ["stock predict_files (batch 4, float32)",
                     "stock predict_files (batch 4, mixed_bfloat16)",
                     "fast (batch 4, compiled predict, float32)"]
    for path in result["paths"]:
        assert path["n_slices"] == 2 and path["n_rows"] == 2
        assert path["times"]["total"] >= max(v for k, v in path["times"].items() if k != "total")
    assert set(result["paths"][0]["times"]) >= {"read", "predict_image", "write", "total"}
    assert set(result["paths"][2]["times"]) >= {"read", "preprocess", "model", "postprocess"}


def test_accuracy_table_pools_the_folds_every_recipe_finished(tmp_path):
    """bench/accuracy.py's table: rows over the folds all started recipes finished, pooled
    Dice from summed TP / FP / FN (hand-computed), CPU summed, lost sessions marked >=."""
    accuracy = _load("accuracy")
    scans = {  # recipe -> fold -> rows of (truth_pixels, pred_pixels, tp)
        "ours_unet": {0: [(10, 10, 8), (0, 4, 0)], 1: [(20, 10, 10)]},
        "kuc_unet": {0: [(10, 6, 5), (0, 0, 0)]},
    }
    for name, folds in scans.items():
        for k, rows in folds.items():
            out = tmp_path / name / f"fold_{k}"
            out.mkdir(parents=True)
            lines = ["name,truth_pixels,pred_pixels,dice"]   # val_scores.csv's columns
            for i, (t, p, tp) in enumerate(rows):
                dice = 2 * tp / (t + p) if t + p else float("nan")
                lines.append(f"s{i},{t},{p},{dice}")
            (out / "val_scores.csv").write_text("\n".join(lines) + "\n")
            cpu = {"cpu_s": 60.0 * (k + 1)} | ({"incomplete": "lost"} if name == "ours_unet"
                                              else {})
            (out / "cpu.json").write_text(json.dumps(cpu))
    done = {n: accuracy.finished_folds(n, tmp_path) for n in accuracy.TRAINED}
    assert done == {"ours_unet": {0, 1}, "kuc_unet": {0}, "ours_transunet": set()}
    row = accuracy.recipe_row("ours_unet", tmp_path, {0})   # kuc_unet has fold 0 only
    assert row["pooled_dice"] == pytest.approx(2 * 8 / (2 * 8 + 2 + 2 + 4))
    assert row["fp_pixels_fluid_free"] == 4 and row["fluid_free_scans_with_fp"] == 1
    assert row["cpu_min"] == 1.0 and row["cpu_incomplete"]
    args = accuracy.parse_args(["--ours-args=--precision mixed_bfloat16"])
    text = accuracy.markdown([row, accuracy.recipe_row("kuc_unet", tmp_path, {0})], {0},
                             ["TransUNet"], args)
    assert "**Partial: folds 0 of 0-4**" in text and "Not run yet: TransUNet" in text
    assert "| **0.667** |" in text and "| **0.625** |" in text and "| >= 1.0 |" in text
    # a recipe ahead of the others also gets its own line over all its folds
    both = accuracy.recipe_row("ours_unet", tmp_path, {0, 1}) | {"folds": [0, 1]}
    line = accuracy.beyond_common([both])
    pooled = 2 * 18 / (2 * 18 + 2 + 12 + 4)   # TP 8+10, FN 2+10, FP 2+4 (hand-computed)
    assert f"folds 0, 1: pooled Dice **{pooled:.3f}**" in line
    assert "(per fold 0.667, 0.667)" in line


def test_accuracy_experiment_is_scored_beside_its_base_on_shared_folds(tmp_path):
    """An experiment row pairs it with its base recipe on the folds both finished only, with
    precision, sensitivity and area from the summed counts (hand-computed)."""
    accuracy = _load("accuracy")
    name = "ours_unet8_long"
    base = accuracy.EXPERIMENTS[name][0]
    scans = {base: {0: [(10, 20, 8)], 1: [(30, 30, 20)]},   # (truth, pred, tp) per scan
             name: {1: [(30, 20, 15), (0, 5, 0)]}}
    for recipe, folds in scans.items():
        for k, rows in folds.items():
            out = tmp_path / recipe / f"fold_{k}"
            out.mkdir(parents=True)
            lines = ["name,truth_pixels,pred_pixels,dice"]
            lines += [f"s{i},{t},{p},{2 * tp / (t + p)}" for i, (t, p, tp) in enumerate(rows)]
            (out / "val_scores.csv").write_text("\n".join(lines) + "\n")
            (out / "cpu.json").write_text(json.dumps({"cpu_s": 120.0}))
    # the noisy condition: the experiment's fold 1 has it (TP 5, FP 5, FN 25), the base not
    (tmp_path / name / "fold_1" / "val_scores_noisy.csv").write_text(
        "name,truth_pixels,pred_pixels,dice\ns0,30,10,0.25\n")
    assert accuracy.experiment_row("ours_unet8_bal", tmp_path) is None   # nothing finished
    row = accuracy.experiment_row(name, tmp_path)
    assert row["folds"] == [1]   # fold 0 of the base has no partner
    e, b = row["experiment"], row["base"]
    assert e["pooled_dice"] == pytest.approx(30 / 55)   # TP 15, FP 5 + 5, FN 15
    assert (e["precision"], e["sensitivity"]) == pytest.approx((15 / 25, 15 / 30))
    assert e["area_ratio"] == pytest.approx(25 / 30) and b["area_ratio"] == pytest.approx(1.0)
    assert b["pooled_dice"] == pytest.approx(40 / 60) and e["image_dice_fluid_mean"] == 0.6
    assert e["cpu_min"] == b["cpu_min"] == 2.0
    assert e["noisy_pooled_dice"] == pytest.approx(10 / 40) and b["noisy_pooled_dice"] is None
    text = accuracy.experiments_markdown([row])
    assert ("| 0.545 (0.667) | 0.545 (0.667) | 0.600 (0.667) | 0.500 (0.667) | 0.83 (1.00) | "
            "0.600 (0.667) | 0.250 (n/a) | 2 (2) |") in text


def test_error_anatomy_locates_false_and_missed_fluid():
    """bench/error_anatomy.py on a hand-drawn case: one grader pocket, a prediction that
    draws it 2 px too wide on one side, misses its last column, and adds a separate speck."""
    anatomy = _load("error_anatomy")
    truth = np.zeros((12, 20), bool)
    truth[2:6, 2:8] = True                      # 4 x 6 pocket, 24 px
    pred = np.zeros_like(truth)
    pred[2:6, 0:7] = True                       # 2 extra columns left (8 FP), misses column 7
    pred[10, 15] = True                         # a separate 1-px region
    c = anatomy.counts([truth], [pred])
    assert (c["tp"], c["fp"], c["fn"]) == (20, 9, 4)
    assert c["dice"] == pytest.approx(40 / 53) and c["area_ratio"] == pytest.approx(29 / 24)
    regions = anatomy.false_positive_regions([truth], [pred])
    assert regions["share_touching_truth"] == pytest.approx(8 / 9)
    assert regions["separate_regions"] == 1 and regions["separate_region_median_pixels"] == 1
    # FP distances to the pocket (d = 1, 2, 3, 5, 10, 20): column 1 is 1 px away (4 px),
    # column 0 2 px (4 px), the speck at (10, 15) sqrt(5^2 + 8^2) = 9.4 px from (5, 7)
    assert anatomy.DISTANCES == (1, 2, 3, 5, 10, 20)
    fp_within = anatomy.distance_shares([truth], [pred])
    assert fp_within == pytest.approx([4 / 9, 8 / 9, 8 / 9, 8 / 9, 1.0, 1.0])
    assert anatomy.distance_shares([pred], [truth])[0] == 1.0   # every missed px is 1 px away
    assert anatomy.without_small_regions(pred, 2).sum() == 28   # the speck goes
    # an empty image contributes nothing to a distance share
    empty = np.zeros_like(truth)
    assert np.isnan(anatomy.distance_shares([empty], [empty])).all()
