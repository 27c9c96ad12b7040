"""Fluid types end to end: the recipe for softmax C = 4, all six networks, per-class metrics
against numpy, and a small multi-class training run on phantoms (IRF, SRF, PED)."""
import numpy as np
import pandas as pd
import pytest

from oct_seg.data import read_dataset, write_phantom_dataset
from oct_seg.metrics import pooled_from_table, pooled_scores, score_table, summarize_scores
from oct_seg.models.registry import MODELS, build_model
from oct_seg.training import recipe

CLASSES = ("IRF", "SRF", "PED")


def test_recipe_for_four_classes_by_hand():
    # 100 pixels: 70 background, 20 IRF, 6 SRF, 4 PED
    mask = np.repeat([0, 1, 2, 3], [70, 20, 6, 4]).reshape(10, 10)
    f = np.array([0.7, 0.2, 0.06, 0.04])
    np.testing.assert_allclose(recipe.class_fractions([mask[:5], mask[5:]], 4), f)
    weights = recipe.bce_pos_weight([mask], 4)
    np.testing.assert_allclose(weights, np.sqrt((1 - f) / f))
    prior = np.array(recipe.fluid_prior([mask], weights, 4))
    raw = np.sqrt((1 - f) / f) * f / (np.sqrt((1 - f) / f) * f + 1 - f)
    np.testing.assert_allclose(prior, raw / raw.sum())
    np.testing.assert_allclose(recipe.fluid_prior([mask], 1.0, 4), f)   # plain BCE: f itself
    assert recipe.loss_kwargs("combined", {}, [mask], 4) == {
        "per_image": False, "ignore_background": True, "pos_weight": pytest.approx(weights)}
    # binary numbers unchanged by the new arguments
    binary = (mask > 0).astype(np.uint8)
    assert recipe.bce_pos_weight([binary]) == pytest.approx(np.sqrt(0.7 / 0.3))
    assert recipe.loss_kwargs("combined", {}, [binary]) == {
        "per_image": False, "pos_weight": pytest.approx(np.sqrt(0.7 / 0.3))}
    with pytest.raises(ValueError, match=r"class id\(s\) \[3\] have no pixel"):
        recipe.bce_pos_weight([np.minimum(mask, 2)], 4)


# tiny builder arguments of each network (the structure kept, the widths cut)
TINY = {"unet": dict(filter_num=[4, 8]), "att_unet": dict(filter_num=[4, 8]),
        "r2_unet": dict(filter_num=[4, 8], recur_num=1),
        "unet3plus": dict(filter_num_down=[4, 8, 16], filter_num_skip=[4, 4],
                          filter_num_aggregate=12, deep_supervision=True),
        "transunet": dict(filter_num=[4, 8, 16], embed_dim=16, num_mlp=16, num_heads=2,
                          num_transformer=1),
        "swin_unet": dict(filter_num_begin=8, depth=2, stack_num_down=1, stack_num_up=1,
                          patch_size=(2, 2), num_heads=[2, 2], window_size=[4, 2],
                          num_mlp=16)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_network_has_a_four_class_softmax_head_at_the_prior(name):
    size = (64, 64) if name in ("transunet", "swin_unet") else (None, None)
    model = build_model(name, input_size=size + (1,), n_labels=4, output_activation="Softmax",
                        **TINY[name])
    prior = [0.7, 0.2, 0.06, 0.04]
    heads = recipe.output_convolutions(model)
    assert heads and recipe.set_output_prior(model, prior) == len(heads)
    for conv in heads:   # with a zero kernel the head outputs exactly its bias
        kernel, bias = conv.get_weights()
        conv.set_weights([np.zeros_like(kernel), bias])
    out = model.predict(np.random.default_rng(0).random((1, 64, 64, 1), np.float32), verbose=0)
    for y in (out if isinstance(out, list) else [out]):
        assert y.shape[-1] == 4
        np.testing.assert_allclose(y, np.broadcast_to(prior, y.shape), atol=1e-5)


def _numpy_dice(t, p):
    return 2 * np.sum(t & p) / (np.sum(t) + np.sum(p)) if (t | p).any() else np.nan


def test_per_class_scores_against_numpy():
    rng = np.random.default_rng(3)
    truths = [rng.integers(0, 4, (12, 16)) * (rng.random((12, 16)) < 0.5) for _ in range(3)]
    truths[2][truths[2] == 2] = 0                       # no SRF in case 2 ...
    probs = [rng.random((12, 16, 4)).astype(np.float32) for _ in range(3)]
    probs[2][..., 2] = 0.0                              # ... and none predicted: NaN
    labels = [np.argmax(p, -1) for p in probs]
    df = score_table(["a", "b", "c"], truths, probs, classes=CLASSES)
    for k in range(3):
        t, p = truths[k], labels[k]
        per_class = []
        for cid, name in enumerate(CLASSES, start=1):
            dice = _numpy_dice(t == cid, p == cid)
            inter, union = np.sum((t == cid) & (p == cid)), np.sum((t == cid) | (p == cid))
            per_class.append(dice)
            np.testing.assert_allclose(df[f"dice_{name}"][k], dice, equal_nan=True)
            np.testing.assert_allclose(df[f"jaccard_{name}"][k],
                                       inter / union if union else np.nan, equal_nan=True)
            assert df[f"truth_pixels_{name}"][k] == np.sum(t == cid)
        np.testing.assert_allclose(df["dice"][k], np.nanmean(per_class))
        assert df["truth_pixels"][k] == np.sum(t > 0) and df["pred_pixels"][k] == np.sum(p > 0)
    assert np.isnan(df["dice_SRF"][2])
    summary = summarize_scores(df)
    assert summary.loc["dice_SRF", "n"] == 2 and summary.loc["dice_SRF", "n_skipped"] == 1
    # pooled over the cases, per class, from the maps and from the table alike
    pooled = pooled_scores(truths, probs, classes=CLASSES)
    from_table = pooled_from_table(df, CLASSES)
    for cid, name in enumerate(CLASSES, start=1):
        t = np.concatenate([x.ravel() == cid for x in truths])
        p = np.concatenate([x.ravel() == cid for x in labels])
        assert pooled[f"dice_{name}"] == pytest.approx(_numpy_dice(t, p))
        assert from_table[f"dice_{name}"] == pytest.approx(_numpy_dice(t, p))
    assert pooled["dice"] == pytest.approx(np.mean([pooled[f"dice_{n}"] for n in CLASSES]))


@pytest.fixture(scope="module")
def fluid_types(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("mc") / "data", n_subjects=3,
                                 per_subject=8, height=64, width=96, seed=2, fluid_types=True)


def test_multiclass_training_learns_every_fluid_type(fluid_types, tmp_path):
    """A tiny U-Net (softmax over background, IRF, SRF, PED) trained for 20 short epochs on phantoms
    must find each class: all-background scores Dice 0 for every class, and a network that
    found fluid but not its type could not pass the per-class floors of two classes."""
    from oct_seg.training import TrainConfig, train

    config = TrainConfig(model="unet", model_kwargs={"filter_num": [8, 16, 32]},
                         patch_size=(64, 96), epochs=20, batch_size=4, learning_rate=3e-3,
                         noise_std=0.0, n_folds=3, folds=[0], augment=False)
    train(fluid_types, tmp_path / "run", config, verbose=0)
    fold = tmp_path / "run" / "fold_0"
    scores = pd.read_csv(fold / "val_scores_clean.csv")
    assert {f"dice_{n}" for n in CLASSES} <= set(scores.columns)
    scans = read_dataset(fluid_types).subset(scores["name"].tolist())
    pooled = pooled_from_table(scores, CLASSES)
    print({k: round(v, 3) for k, v in pooled.items()})
    for name in CLASSES:
        assert pooled[f"dice_{name}"] > 0.3, (name, pooled)
    trained = pd.read_json(fold / "trained.json", typ="series")
    assert trained["recipe"]["classes"] == list(CLASSES)
    assert len(trained["recipe"]["output_prior"]) == 4 and scans.n_labels == 4
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert "dice_PED" in set(summary["metric"])

    # predict names the classes from the run, and from an export of its model
    from oct_seg.export import export_model
    from oct_seg.predict import predict_files

    image = fluid_types / "images" / f"{scores['name'][0]}.png"
    by_run = predict_files(tmp_path / "run", [image], tmp_path / "p1", progress=False)
    for name in CLASSES:   # the fold's score table counted the same pixels
        assert by_run[f"{name}_pixels"][0] == scores[f"pred_pixels_{name}"][0]
    export_model(fold / "model.keras", tmp_path / "sm")
    by_export = predict_files(tmp_path / "sm", [image], tmp_path / "p2", progress=False)
    pd.testing.assert_series_equal(by_export["PED_pixels"], by_run["PED_pixels"])
