"""train / cross_validate on tiny phantoms: run dir contents, resume, mismatch, overwrite,
determinism, train_final."""
import json

import keras
import numpy as np
import pandas as pd
import pytest

from oct_seg.data.phantom import write_phantom_dataset
from oct_seg.data.readers import read_dataset
from oct_seg.evaluate import evaluate_folder
from oct_seg.training import TrainConfig, build_and_compile, train

TINY = dict(model="unet", model_kwargs={"filter_num": [4, 8], "stack_num_down": 1,
                                        "stack_num_up": 1},
            loss="combined", image_size=(32, 32), epochs=2, batch_size=2, n_folds=2,
            patience=5, noise_std=0.1, augment=True, deterministic=True, seed=1,
            prior_bias=False)  # outputs start at 0.5: a 2-epoch run still marks some fluid


@pytest.fixture(scope="module", autouse=True)
def _op_determinism_off_afterwards():
    yield  # deterministic=True turns TF op determinism on process-wide; restore for others
    from tensorflow.python.framework import config as tf_config  # no public "disable"
    tf_config.disable_op_determinism()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("ph") / "data", n_subjects=4,
                                 per_subject=2, height=48, width=64, seed=0)


@pytest.fixture(scope="module")
def cv_run(phantoms, tmp_path_factory):
    run = tmp_path_factory.mktemp("cv") / "run"
    summary = train(phantoms, run, verbose=0, **TINY)
    return run, summary


def test_config_json_round_trip_and_errors():
    cfg = TrainConfig(**TINY)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.image_size == (32, 32)
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="vnet")
    with pytest.raises(ValueError, match="folds must be"):
        TrainConfig(n_folds=5, folds=[5])
    with pytest.raises(ValueError, match="image_size"):
        TrainConfig(image_size=(32, 32, 1))
    with pytest.raises(ValueError, match="unknown training options"):
        train("x", "y", epoch=3)
    with pytest.raises(ValueError, match=r"^learning_rate must be > 0, got -1$"):
        TrainConfig(learning_rate=-1)  # blamed noise_std too
    with pytest.raises(ValueError, match=r"^unknown loss 'bogus'; choose one of \["):
        TrainConfig(loss="bogus")
    with pytest.raises(ValueError, match=r"^augment_noise 0.1 needs augment=True$"):
        TrainConfig(augment=False, augment_noise=0.1)


@pytest.mark.parametrize("bad, message", [
    ({"loss_kwargs": {"nope": 1}},
     r"loss_kwargs of 'combined': unknown argument\(s\) \['nope'\]; valid: \[.*'smooth'"),
    ({"loss_kwargs": {"smooth": -1}},
     r"loss 'combined' with loss_kwargs \{'smooth': -1\}: smooth must be a finite number > 0"),
    ({"model_kwargs": {"filter_num": [4, 8], "nope": 1}},
     r"model_kwargs of 'unet': unknown argument\(s\) \['nope'\]; valid: \[.*'filter_num'"),
    ({"model_kwargs": {"filter_num": "abc"}},
     r"model 'unet' with model_kwargs \{'filter_num': 'abc'\}: filter_num must be a list"),
    ({"model_kwargs": {"filter_num": [4, 8], "n_labels": 2}},
     r"\['n_labels'\] are set by training"),
    ({"image_size": (33, 32)}, r"image_size 33 x 32: model 'unet' .* divisible by 2"),
    ({"image_size": None, "patch_size": (16, 30), "model_kwargs": {"filter_num": [4, 8, 16]}},
     r"patch_size 16 x 30: model 'unet' .* divisible by 4 \(e.g. 16 x 28\)"),
])
def test_bad_options_fail_before_the_run_folder(phantoms, tmp_path, bad, message):
    """They failed after config.json, splits.json and fold_0/ were written, and the corrected
    call was then refused as "a different configuration"."""
    with pytest.raises(ValueError, match=message):
        train(phantoms, tmp_path / "run", verbose=0, **{**TINY, **bad})
    assert not (tmp_path / "run").exists()


def test_run_dir_contents(cv_run, phantoms):
    run, summary = cv_run
    cfg = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_dict(cfg) == TrainConfig(**TINY)
    assert cfg["data_dir"] == str(phantoms.resolve()) and "keras" in cfg["versions"]
    splits = json.loads((run / "splits.json").read_text())
    index = read_dataset(phantoms).index.set_index("name")
    assert sorted(n for s in splits for n in s["val"]) == sorted(index.index)
    for s in splits:  # by subject: no subject on both sides
        assert not set(index.loc[s["train"], "subject"]) & set(index.loc[s["val"], "subject"])
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_fold = []
    for k, s in enumerate(splits):
        fd = run / f"fold_{k}"
        hist = pd.read_csv(fd / "history.csv")
        assert list(hist["epoch"]) == [0, 1]
        assert {"loss", "dice", "jaccard", "val_dice", "val_jaccard",
                "learning_rate"} <= set(hist.columns)
        assert (fd / "model.keras").is_file() and not (fd / "backup").exists()
        for part in ("train", "val"):
            for cond in ("clean", "noisy"):
                df = pd.read_csv(fd / f"{part}_scores_{cond}.csv")
                assert sorted(df["name"]) == sorted(s[part])
                assert list(df["truth_pixels"]) == [
                    int((np.asarray(m) > 0).sum()) for m in
                    read_dataset(phantoms).subset(list(df["name"])).masks]  # 48 x 64 scale
        per_fold.append(pd.read_csv(fd / "val_scores_clean.csv")["dice"].mean())  # skips NaN
    row = summary[(summary.set == "val") & (summary.condition == "clean")
                  & (summary.metric == "dice")].iloc[0]
    assert row["mean"] == pytest.approx(np.mean(per_fold))
    assert row["std"] == pytest.approx(np.std(per_fold, ddof=1), nan_ok=True)
    assert row["n_folds"] == 2
    assert len(summary) == 2 * 2 * 4  # set x condition x metric
    pd.testing.assert_frame_equal(summary, pd.read_csv(run / "summary.csv"))


def test_same_command_resumes_finished_run(cv_run, phantoms):
    run, summary = cv_run
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()
              and p.name not in ("summary.csv", "curves.png")}
    again = train(phantoms, run, verbose=0, **{**TINY, "folds": [1]})  # folds: not identity
    pd.testing.assert_frame_equal(again, summary)
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_different_config_raises(cv_run, phantoms, tmp_path):
    run, _ = cv_run
    with pytest.raises(ValueError, match=r"epochs: run has 2, now 3.*overwrite=True"):
        train(phantoms, run, verbose=0, **{**TINY, "epochs": 3})
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a run directory"):
        train(phantoms, tmp_path, verbose=0, overwrite=True, **TINY)
    assert (tmp_path / "notes.txt").exists()


def test_deterministic_rerun_then_overwrite_with_final_model(cv_run, phantoms, tmp_path):
    run, summary = cv_run
    run2 = tmp_path / "run2"
    summary2 = train(phantoms, run2, verbose=0, **{**TINY, "folds": [0]})
    assert (run2 / "splits.json").read_text() == (run / "splits.json").read_text()
    assert not (run2 / "fold_1").exists()
    for name in ("history.csv", "val_scores_clean.csv", "val_scores_noisy.csv",
                 "train_scores_clean.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(run / "fold_0" / name),
                                      pd.read_csv(run2 / "fold_0" / name))
    pd.testing.assert_series_equal(summary2["fold_0"], summary["fold_0"])
    # overwrite=True: a different config starts anew; n_folds=1 -> train_final, which with
    # checkpoint "best" holds val_fraction of the subjects out to choose the epoch
    final = train(phantoms, run2, verbose=0, overwrite=True,
                  **{**TINY, "n_folds": 1, "epochs": 1, "val_fraction": 0.25,
                     "checkpoint": "best"})
    assert not (run2 / "fold_0").exists() and (run2 / "final" / "model.keras").is_file()
    assert json.loads((run2 / "config.json").read_text())["config"]["n_folds"] == 1
    (split,) = json.loads((run2 / "splits.json").read_text())
    index = read_dataset(phantoms).index.set_index("name")
    assert set(split["train"]) | set(split["val"]) == set(index.index)
    assert index.loc[split["val"], "subject"].nunique() == 1  # 1 of 4 subjects held out
    assert set(final["n_folds"]) == {1}
    assert len(pd.read_csv(run2 / "final" / "history.csv")) == 1
    # oct-seg evaluate: the saved final model on a folder, settings from config.json
    ev = evaluate_folder(run2 / "final" / "model.keras", phantoms, out_dir=tmp_path / "ev")
    assert list(ev["condition"].unique()) == ["clean", "noisy"]
    for cond in ("clean", "noisy"):
        full = pd.read_csv(tmp_path / "ev" / f"all_scores_{cond}.csv").set_index("name")
        held = pd.read_csv(run2 / "final" / f"val_scores_{cond}.csv").set_index("name")
        pd.testing.assert_frame_equal(full.loc[held.index], held)


def test_bn_momentum_is_applied():
    import tensorflow as tf

    cfg = TrainConfig(**{**TINY, "bn_momentum": 0.9,
                         "model_kwargs": {**TINY["model_kwargs"], "batch_norm": True}})
    model = build_and_compile(cfg, steps_per_epoch=2, strategy=tf.distribute.get_strategy())
    bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert bns and {la.momentum for la in bns} == {0.9}
    with pytest.raises(ValueError, match="bn_momentum"):
        TrainConfig(bn_momentum=1.0)


NATIVE = dict(model="unet", model_kwargs={"filter_num": [4, 8, 8], "stack_num_down": 1,
                                          "stack_num_up": 1},
              patch_size=(32, 48), epochs=3, batch_size=2, n_folds=2, noise_std=0.0, seed=2)


def test_native_cv_uses_the_recipe_and_scores_whole_scans(phantoms, tmp_path):
    from oct_seg.losses import pos_weight_from_masks
    from oct_seg.training import recipe

    summary = train(phantoms, tmp_path / "run", verbose=0, **NATIVE)
    scans = read_dataset(phantoms)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    for k, split in enumerate(splits):
        fold = tmp_path / "run" / f"fold_{k}"
        trained = json.loads((fold / "trained.json").read_text())
        used = trained["recipe"]
        masks = scans.subset(split["train"]).masks
        # 4 train scans / batch 2 = 2 steps per epoch -> momentum clipped to 0.9
        assert used["bn_momentum"] == 0.9 and trained["steps_per_epoch"] == 2
        assert used["model_kwargs"] == {**NATIVE["model_kwargs"], "batch_norm": True,
                                        "activation": "LeakyReLU"}
        assert used["loss_kwargs"]["per_image"] is False
        assert used["loss_kwargs"]["pos_weight"] == pytest.approx(
            np.sqrt(pos_weight_from_masks(masks)))
        f = np.mean(np.concatenate([np.ravel(m) > 0 for m in masks]))
        w = used["loss_kwargs"]["pos_weight"]
        assert used["output_prior"] == pytest.approx(w * f / (w * f + 1 - f))
        assert trained["epochs_run"] == 3 and trained["checkpoint"] == "last"
        model = keras.saving.load_model(fold / "model.keras", compile=False)
        assert model.input_shape == (None, None, None, 1)          # any size: native scans
        val = pd.read_csv(fold / "val_scores_clean.csv")
        assert list(val["truth_pixels"]) == [int((m > 0).sum())
                                             for m in scans.subset(list(val["name"])).masks]
        hist = pd.read_csv(fold / "history.csv")
        assert trained["last_val_dice"] == pytest.approx(hist["val_dice"].iloc[-1])
        done = json.loads((fold / "fold.json").read_text())
        assert 0 <= done["val_clean_pooled_dice"] <= 1
    assert set(summary["condition"]) == {"clean"}                   # noise_std 0: no noisy set


def test_native_final_model_trains_on_every_subject(phantoms, tmp_path):
    train(phantoms, tmp_path / "final", verbose=0, **{**NATIVE, "n_folds": 1, "epochs": 1})
    (split,) = json.loads((tmp_path / "final" / "splits.json").read_text())
    assert split["val"] == [] and len(split["train"]) == len(read_dataset(phantoms).names)
    assert (tmp_path / "final" / "final" / "model.keras").is_file()
    assert not (tmp_path / "final" / "final" / "val_scores_clean.csv").exists()
    with pytest.raises(ValueError, match="checkpoint"):
        TrainConfig(checkpoint="first")


def test_learning_rate_and_epochs_are_the_recipes_per_network_unless_given():
    assert (TrainConfig(model="unet").learning_rate, TrainConfig(model="unet").epochs) == (
        1e-3, 60)
    swin = TrainConfig(model="swin_unet")
    assert (swin.learning_rate, swin.epochs) == (3e-4, 120)
    preset = TrainConfig(model="transunet_cpu")  # a preset: its network's
    assert (preset.learning_rate, preset.epochs) == (1e-3, 60)
    given = TrainConfig(model="swin_unet", learning_rate=2e-4, epochs=30)
    assert (given.learning_rate, given.epochs) == (2e-4, 30)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(model="swin_unet", epochs=0)
    # stored resolved, so a config.json read back (or written before the per-network values)
    # keeps its rate and length
    stored = TrainConfig(model="swin_unet").to_dict()
    assert (stored["learning_rate"], stored["epochs"]) == (3e-4, 120)
    old = TrainConfig.from_dict({**stored, "learning_rate": 1e-3, "epochs": 60})
    assert (old.learning_rate, old.epochs) == (1e-3, 60)
    # the schedule peaks at it: warm-up from 0.1 x the rate to the rate over epoch 1 (4 steps)
    config = TrainConfig(model="swin_unet", image_size=(32, 32), epochs=5, prior_bias=False,
                         model_kwargs=dict(filter_num_begin=8, depth=2, num_heads=[2, 2],
                                           window_size=[2, 2], num_mlp=16, patch_size=(2, 2)))
    optimizer = build_and_compile(config, steps_per_epoch=4).optimizer
    rates = []
    for step in (0, 4):
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    assert rates == pytest.approx([3e-5, 3e-4])


def test_recipe_output_prior_and_momentum_by_hand():
    from oct_seg.models.unet import build_unet
    from oct_seg.training import recipe

    assert recipe.bn_momentum(17) == pytest.approx(1 - 1 / 17)
    assert recipe.bn_momentum(2) == 0.9 and recipe.bn_momentum(1000) == 0.99
    masks = [np.zeros((10, 10)), np.pad(np.ones((2, 5)), ((0, 8), (0, 5)))]   # 10 of 200
    assert recipe.fluid_prior(masks) == pytest.approx(0.05)
    assert recipe.fluid_prior(masks, pos_weight=19.0) == pytest.approx(0.5)  # balanced
    model = build_unet((None, None, 1), [4, 8], stack_num_down=1, stack_num_up=1)
    assert recipe.set_output_prior(model, 0.05) == 1
    head = recipe.output_convolutions(model)[0]
    assert head.get_weights()[1][0] == pytest.approx(np.log(0.05 / 0.95))
    assert recipe.network_kwargs("unet", {"filter_num": [8, 16]}) == {
        "filter_num": [8, 16], "batch_norm": True, "activation": "LeakyReLU"}
    assert recipe.network_kwargs("unet", {"activation": "ReLU"})["activation"] == "ReLU"
    assert not {"batch_norm", "activation"} & set(recipe.network_kwargs("swin_unet"))
    assert recipe.loss_kwargs("dice", {}, masks) == {"per_image": False}
    assert recipe.loss_kwargs("wbce", {"pos_weight": 3.0}, masks) == {"pos_weight": 3.0}
