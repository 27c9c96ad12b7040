"""evaluate_model: hand-made perfect / empty predictors, NaN rules, original size, noise."""
import keras
import numpy as np
import pandas as pd
import pytest

from oct_seg.data.pipeline import add_gaussian_noise
from oct_seg.data.readers import ScanSet, read_dataset
from oct_seg.evaluate import evaluate_model, noise_seed
from oct_seg.metrics import case_scores, summarize_scores
from oct_seg.models.blocks import SizeCheck


def _predictor(scale, input_size=(None, None, 1)):
    """Outputs scale * input: with images == masks, 1 -> perfect, 0 -> empty prediction."""
    inp = keras.Input(input_size)
    out = keras.layers.Rescaling(scale)(SizeCheck(multiple=1)(inp))
    return keras.Model(inp, out)


def _mask_scans(n=3, h=40, w=56):
    """Scans whose image is their own mask; the last one has no fluid."""
    masks = [np.zeros((h, w), np.uint8) for _ in range(n)]
    masks[0][5:15, 10:30] = 1
    yy, xx = np.mgrid[:h, :w]
    masks[1][(yy - 25) ** 2 / 60 + (xx - 20) ** 2 / 150 < 1] = 1
    masks[1][30:36, 40:50] = 1
    names = [f"s{i}" for i in range(n)]
    index = pd.DataFrame({"name": names, "subject": [1, 1, 2][:n]})
    return ScanSet(names, [m.astype(np.float32) for m in masks], masks, index)


@pytest.mark.parametrize("image_size", [None, (40, 56)])
def test_perfect_and_empty_predictor(image_size):
    scans = _mask_scans()
    perfect = evaluate_model(_predictor(1.0), scans, image_size=image_size)
    assert list(perfect.columns[:2]) == ["name", "subject"]
    assert list(perfect["subject"]) == [1, 1, 2]
    assert np.all(perfect[["dice", "jaccard", "sensitivity", "precision"]].iloc[:2] == 1.0)
    assert perfect.iloc[2][["dice", "jaccard", "sensitivity", "precision"]].isna().all()
    assert list(perfect["truth_pixels"]) == [int(m.sum()) for m in scans.masks]
    empty = evaluate_model(_predictor(0.0), scans, image_size=image_size)
    assert np.all(empty[["dice", "jaccard", "sensitivity"]].iloc[:2] == 0.0)
    assert empty["precision"].iloc[:2].isna().all()  # nothing predicted
    assert np.isnan(empty["dice"].iloc[2])  # both empty
    assert list(empty["pred_pixels"]) == [0, 0, 0]
    summ = summarize_scores(perfect)
    assert summ.loc["dice", "mean"] == 1.0 and summ.loc["dice", "n_skipped"] == 1


def test_resized_prediction_is_scored_at_original_size():
    scans = _mask_scans()
    df = evaluate_model(_predictor(1.0), scans, image_size=(20, 28))
    assert list(df["truth_pixels"]) == [int(m.sum()) for m in scans.masks]  # 40 x 56 masks
    assert np.all(df["dice"].iloc[:2] > 0.75) and np.all(df["dice"].iloc[:2] < 1.0)


def test_noisy_condition_is_seeded_per_scan():
    scans = _mask_scans()
    a = evaluate_model(_predictor(1.0), scans, noise_std=0.3, seed=4)
    b = evaluate_model(_predictor(1.0), scans.subset(scans.names[::-1]), noise_std=0.3, seed=4)
    pd.testing.assert_frame_equal(a, b.iloc[::-1].reset_index(drop=True))
    assert np.all(a["dice"].iloc[:2] < 1.0)  # noise flipped pixels
    for name, img, mask, dice in zip(scans.names, scans.images, scans.masks, a["dice"]):
        ref = case_scores(mask, add_gaussian_noise(img, 0.3, seed=noise_seed(4, name)))["dice"]
        assert dice == pytest.approx(ref, nan_ok=True)
    c = evaluate_model(_predictor(1.0), scans, noise_std=0.3, seed=5)
    assert not np.allclose(a["dice"].iloc[:2], c["dice"].iloc[:2])
    with pytest.raises(ValueError, match="noise_std"):
        evaluate_model(_predictor(1.0), scans, noise_std=-1)


def test_real_duke_scans_at_half_size(duke_dir):
    full = read_dataset(duke_dir)
    fluid = full.index.sort_values("fluid_fraction").iloc[[-1, 40, 0]]["name"].tolist()
    scans = full.subset(fluid)
    oracle = ScanSet(scans.names, [m.astype(np.float32) for m in scans.masks], scans.masks,
                     scans.index)
    df = evaluate_model(_predictor(1.0, (248, 384, 1)), oracle, image_size=(248, 384))
    assert list(df["name"]) == fluid
    assert list(df["subject"]) == list(scans.index["subject"])
    assert list(df["truth_pixels"]) == [int((m > 0).sum()) for m in scans.masks]  # 496 x 768
    has_fluid = df["truth_pixels"] > 0
    assert np.all(df.loc[has_fluid, "dice"] > 0.8)
    # an untrained tiny net on the real B-scans: well-formed scores in [0, 1] or NaN
    from oct_seg.models.unet import build_unet
    keras.utils.set_random_seed(0)
    net = build_unet(input_size=(64, 96, 1), filter_num=[4, 8])
    df = evaluate_model(net, scans, image_size=(64, 96), noise_std=0.1)
    vals = df[["dice", "jaccard", "sensitivity", "precision"]].to_numpy()
    assert np.all(np.isnan(vals) | ((vals >= 0) & (vals <= 1)))
    assert np.all(df["pred_pixels"] <= 496 * 768)
