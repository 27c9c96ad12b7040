"""oct_seg.metrics against references counted pixel by pixel."""
import math

import numpy as np
import pandas as pd
import pytest
import keras

from oct_seg.metrics import (
    DiceCoefficient, JaccardIndex, case_scores, score_table, summarize_scores,
)


def ref_counts(truth, prob, threshold=0.5):
    """TP, FP, FN by looping over flattened pixels (independent of numpy boolean algebra)."""
    tp = fp = fn = 0
    for t, p in zip(np.ravel(truth).tolist(), np.ravel(prob).tolist()):
        t, p = t > 0.5, p > threshold
        tp += t and p
        fp += (not t) and p
        fn += t and not p
    return tp, fp, fn


def batches(seed, n=3, shape=(2, 8, 8, 1)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = (rng.random(shape) < 0.1 + 0.2 * i).astype("float32")
        p = rng.random(shape).astype("float32")
        out.append((y, p))
    return out


def run(metric, pairs, sample_weights=None):
    metric.reset_state()
    for i, (y, p) in enumerate(pairs):
        sw = None if sample_weights is None else sample_weights[i]
        metric.update_state(y, p, sample_weight=sw)
    return float(metric.result())


def test_metrics_accumulate_the_global_score_over_batches():
    pairs = batches(0)
    tp, fp, fn = map(sum, zip(*(ref_counts(y, p) for y, p in pairs)))
    assert run(DiceCoefficient(), pairs) == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-6)
    assert run(JaccardIndex(), pairs) == pytest.approx(tp / (tp + fp + fn), rel=1e-6)
    # global, not the mean of per-batch Dice
    per_batch = [2 * a / (2 * a + b + c) for a, b, c in (ref_counts(y, p) for y, p in pairs)]
    assert run(DiceCoefficient(), pairs) != pytest.approx(np.mean(per_batch), rel=1e-4)


def test_threshold_is_strict_and_configurable():
    y = np.array([1, 1, 0, 0], "float32").reshape(1, 2, 2, 1)
    p = np.array([0.5, 0.9, 0.2, 0.6], "float32").reshape(1, 2, 2, 1)
    # p = 0.5 is not fluid: TP 1, FP 1, FN 1
    assert run(DiceCoefficient(), [(y, p)]) == pytest.approx(0.5)
    assert run(JaccardIndex(), [(y, p)]) == pytest.approx(1 / 3)
    # threshold 0.3: TP 2, FP 1
    assert run(DiceCoefficient(threshold=0.3), [(y, p)]) == pytest.approx(0.8)


def test_hand_cases_and_all_empty_set():
    empty = np.zeros((2, 4, 4, 1), "float32")
    assert run(DiceCoefficient(), [(empty, empty)] * 2) == 1.0
    assert run(JaccardIndex(), [(empty, empty)]) == 1.0
    full = np.ones_like(empty)
    assert run(DiceCoefficient(), [(full, full)]) == 1.0
    assert run(DiceCoefficient(), [(full, empty)]) == 0.0
    assert run(JaccardIndex(), [(empty, full)]) == 0.0
    one = empty.copy()
    one[0, 1, 2, 0] = 1
    disjoint = empty.copy()
    disjoint[1, 0, 0, 0] = 1
    assert run(DiceCoefficient(), [(one, disjoint)]) == 0.0
    assert run(DiceCoefficient(), [(one, one)]) == 1.0
    # empty batches do not change an accumulated score
    pairs = batches(1)
    assert run(DiceCoefficient(), pairs + [(empty, empty)]) == pytest.approx(
        run(DiceCoefficient(), pairs))


def test_reset_state():
    m = DiceCoefficient()
    run(m, batches(2))
    m.reset_state()
    assert float(m.result()) == 1.0


def test_from_logits_sample_weight_and_multiclass():
    (y, p), = batches(3, n=1)
    z = np.log(p) - np.log1p(-p)
    assert run(DiceCoefficient(from_logits=True), [(y, z)]) == pytest.approx(
        run(DiceCoefficient(), [(y, p)]), rel=1e-6)
    # per-image weight 0 drops the second image
    weighted = run(DiceCoefficient(), [(y, p)], sample_weights=[np.array([1.0, 0.0])])
    assert weighted == pytest.approx(run(DiceCoefficient(), [(y[:1], p[:1])]), rel=1e-6)
    # C = 3 one-hot: counts pooled over classes, optionally without class 0
    rng = np.random.default_rng(3)
    y3 = np.eye(3, dtype="float32")[rng.integers(0, 3, (2, 8, 8))]
    p3 = rng.dirichlet([1, 1, 1], (2, 8, 8)).astype("float32")
    tp, fp, fn = ref_counts(y3[..., 1:], p3[..., 1:])
    assert run(DiceCoefficient(ignore_background=True), [(y3, p3)]) == pytest.approx(
        2 * tp / (2 * tp + fp + fn), rel=1e-6)


@pytest.mark.parametrize("cls", [DiceCoefficient, JaccardIndex])
def test_metric_config_round_trip(cls):
    m = cls(threshold=0.3, from_logits=True, ignore_background=True, name="x")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
    assert type(restored) is cls and restored.get_config() == m.get_config()
    with pytest.raises(ValueError):
        cls(threshold=1.5)


def test_metrics_in_compile_and_keras_file(tmp_path):
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp))
    model.compile(optimizer="sgd", loss="mse", metrics=[DiceCoefficient(), JaccardIndex(threshold=0.4)])
    pairs = batches(4, n=2)
    x = np.concatenate([p for _, p in pairs])
    y = np.concatenate([t for t, _ in pairs])
    logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    prob = model.predict(x, batch_size=2, verbose=0)
    tp, fp, fn = ref_counts(y, prob)
    assert logs["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-5)
    tp, fp, fn = ref_counts(y, prob, threshold=0.4)
    assert logs["jaccard"] == pytest.approx(tp / (tp + fp + fn), rel=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    again = loaded.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert again["dice"] == pytest.approx(logs["dice"]) and again["jaccard"] == pytest.approx(
        logs["jaccard"])


# ---------------------------------------------------------------- per-case numpy scores


def nan_equal(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


@pytest.mark.parametrize("truth, pred, expected", [
    # both empty: dice, jaccard NaN; sensitivity NaN (no truth); precision NaN (no prediction)
    ([0, 0, 0, 0], [0.1, 0.2, 0.0, 0.5], dict(dice=np.nan, jaccard=np.nan, sensitivity=np.nan,
                                             precision=np.nan)),
    # empty truth, non-empty prediction
    ([0, 0, 0, 0], [0.9, 0, 0, 0], dict(dice=0.0, jaccard=0.0, sensitivity=np.nan, precision=0.0)),
    # non-empty truth, empty prediction
    ([1, 0, 0, 0], [0.5, 0, 0, 0], dict(dice=0.0, jaccard=0.0, sensitivity=0.0, precision=np.nan)),
    # TP 1, FP 1, FN 1
    ([1, 1, 0, 0], [0.9, 0, 0.7, 0], dict(dice=0.5, jaccard=1 / 3, sensitivity=0.5,
                                          precision=0.5)),
    # TP 2, FP 0, FN 1
    ([1, 1, 1, 0], [1, 1, 0, 0], dict(dice=0.8, jaccard=2 / 3, sensitivity=2 / 3, precision=1.0)),
    ([1, 1, 1, 1], [1, 1, 1, 1], dict(dice=1.0, jaccard=1.0, sensitivity=1.0, precision=1.0)),
])
def test_case_scores_hand_cases(truth, pred, expected):
    got = case_scores(np.reshape(truth, (2, 2)), np.reshape(pred, (2, 2)))
    assert set(got) == {"dice", "jaccard", "sensitivity", "precision"}
    for key, want in expected.items():
        assert nan_equal(got[key], want), (key, got[key], want)


def test_case_scores_random_and_shapes():
    rng = np.random.default_rng(5)
    truth = (rng.random((32, 48)) < 0.2).astype("uint8") * 255
    prob = rng.random((32, 48, 1)).astype("float32")  # trailing channel is squeezed
    tp, fp, fn = ref_counts(truth / 255, prob, threshold=0.3)
    got = case_scores(truth, prob, threshold=0.3)
    assert got["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert got["jaccard"] == pytest.approx(tp / (tp + fp + fn))
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["precision"] == pytest.approx(tp / (tp + fp))
    with pytest.raises(ValueError, match="shapes"):
        case_scores(truth, prob[:10])


def test_score_table_and_summary():
    truths = [np.array([[1, 1], [0, 0]]), np.zeros((2, 2)), np.array([[1, 1], [1, 0]]),
              np.zeros((2, 2))]
    probs = [np.array([[0.9, 0.1], [0.8, 0.0]]), np.zeros((2, 2)), np.ones((2, 2)),
             np.array([[0.0, 0.7], [0.0, 0.0]])]
    df = score_table(["a", "b", "c", "d"], truths, probs)
    assert list(df.columns) == ["name", "dice", "jaccard", "sensitivity", "precision",
                                "truth_pixels", "pred_pixels"]
    assert df["truth_pixels"].tolist() == [2, 0, 3, 0]
    assert df["pred_pixels"].tolist() == [2, 0, 4, 1]
    assert df.loc[0, "dice"] == pytest.approx(0.5) and math.isnan(df.loc[1, "dice"])
    assert df.loc[2, "dice"] == pytest.approx(6 / 7) and df.loc[3, "dice"] == 0.0
    summary = summarize_scores(df)
    assert list(summary.columns) == ["mean", "std", "n", "n_skipped"]
    assert list(summary.index) == ["dice", "jaccard", "sensitivity", "precision"]
    dice_used = [0.5, 6 / 7, 0.0]
    assert summary.loc["dice", "mean"] == pytest.approx(np.mean(dice_used))
    assert summary.loc["dice", "std"] == pytest.approx(np.std(dice_used, ddof=1))
    assert (summary.loc["dice", "n"], summary.loc["dice", "n_skipped"]) == (3, 1)
    # sensitivity: NaN for b and d (empty truth); precision: NaN for b only
    assert (summary.loc["sensitivity", "n"], summary.loc["sensitivity", "n_skipped"]) == (2, 2)
    assert summary.loc["sensitivity", "mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert (summary.loc["precision", "n"], summary.loc["precision", "n_skipped"]) == (3, 1)
    with pytest.raises(ValueError, match="same length"):
        score_table(["a"], truths, probs)
    with pytest.raises(ValueError, match="lacks"):
        summarize_scores(pd.DataFrame({"dice": [1.0]}))
