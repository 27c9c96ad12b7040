"""oct_seg.losses against float64 numpy references written from the formulas."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from oct_seg.losses import (
    LOSSES, CombinedLoss, DiceLoss, FocalTverskyLoss, TverskyLoss, WeightedBCE, get_loss,
    pos_weight_from_fraction, pos_weight_from_masks,
)

# ---------------------------------------------------------------- float64 references


def ref_counts(y, p, per_image, ignore_background=False):
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    if ignore_background and y.shape[-1] > 1:
        y, p = y[..., 1:], p[..., 1:]
    axes = (1, 2) if per_image else (0, 1, 2)
    return ((y * p).sum(axes), ((1 - y) * p).sum(axes), (y * (1 - p)).sum(axes))


def ref_overlap(kind, y, p, per_image=True, smooth=1.0, fp_weight=0.3, fn_weight=0.7,
                gamma=0.75, ignore_background=False):
    """Per-image (B,) values, or the scalar batch value when per_image=False."""
    tp, fp, fn = ref_counts(y, p, per_image, ignore_background)
    if kind == "dice":
        per_class = 1 - (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    else:
        per_class = 1 - (tp + smooth) / (tp + fp_weight * fp + fn_weight * fn + smooth)
        if kind == "focal_tversky":
            per_class = per_class ** gamma
    return per_class.mean(-1)


def ref_wbce(y, p=None, logits=None, pos_weight=1.0):
    """(B,) mean over pixels of -(w y log p + (1 - y) log(1 - p))."""
    y = np.asarray(y, np.float64)
    if logits is None:
        p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
        log_p, log_q = np.log(p), np.log1p(-p)
    elif logits.shape[-1] == 1:
        z = np.asarray(logits, np.float64)
        log_p, log_q = -np.logaddexp(0, -z), -np.logaddexp(0, z)
    else:
        z = np.asarray(logits, np.float64)
        lse = np.logaddexp.reduce(z, axis=-1, keepdims=True)
        log_p = z - lse
        log_q = np.log1p(-np.exp(log_p))
    return (-(pos_weight * y * log_p + (1 - y) * log_q)).mean((1, 2, 3))


def sigmoid64(z):
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def random_case(seed, shape=(3, 16, 16, 1)):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    if c == 1:
        fractions = np.linspace(0.05, 0.6, shape[0])[:, None, None, None]
        y = (rng.random(shape) < fractions).astype("float32")
        p = rng.random(shape).astype("float32")
    else:
        y = np.eye(c, dtype="float32")[rng.integers(0, c, shape[:-1])]
        p = softmax64(rng.normal(size=shape) * 2).astype("float32")
    return y, p


def value(loss, y, p):
    return float(loss(tf.constant(y), tf.constant(p)))


def per_image(loss, y, p):
    return keras.ops.convert_to_numpy(loss.call(tf.constant(y), tf.constant(p)))


OVERLAP = {"dice": DiceLoss, "tversky": TverskyLoss, "focal_tversky": FocalTverskyLoss}

# ---------------------------------------------------------------- values


@pytest.mark.parametrize("kind", sorted(OVERLAP))
@pytest.mark.parametrize("per_img", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_overlap_losses_match_reference(kind, per_img, channels):
    y, p = random_case(1, (3, 16, 16, channels))
    loss = OVERLAP[kind](per_image=per_img)
    ref = ref_overlap(kind, y, p, per_image=per_img)
    values = per_image(loss, y, p)
    assert values.shape == (3,)
    np.testing.assert_allclose(values, np.broadcast_to(ref, (3,)), rtol=1e-5)
    np.testing.assert_allclose(value(loss, y, p), np.mean(ref), rtol=1e-5)


def test_per_image_and_batch_forms_differ():
    y, p = random_case(2)
    assert abs(value(DiceLoss(), y, p) - value(DiceLoss(per_image=False), y, p)) > 1e-3


@pytest.mark.parametrize("kind", sorted(OVERLAP))
def test_ignore_background(kind):
    y, p = random_case(3, (2, 8, 8, 3))
    loss = OVERLAP[kind](ignore_background=True, smooth=0.5)
    ref = ref_overlap(kind, y, p, smooth=0.5, ignore_background=True)
    np.testing.assert_allclose(per_image(loss, y, p), ref, rtol=1e-5)
    assert not np.allclose(ref, ref_overlap(kind, y, p, smooth=0.5))


@pytest.mark.parametrize("kind", sorted(OVERLAP))
@pytest.mark.parametrize("channels", [1, 3])
def test_overlap_from_logits(kind, channels):
    rng = np.random.default_rng(4)
    y, _ = random_case(4, (2, 8, 8, channels))
    z = (rng.normal(size=y.shape) * 3).astype("float32")
    p = sigmoid64(z) if channels == 1 else softmax64(z)
    ref = ref_overlap(kind, y, p)
    np.testing.assert_allclose(per_image(OVERLAP[kind](from_logits=True), y, z), ref, rtol=1e-5)


def test_tversky_with_equal_weights_is_dice():
    # (2 TP + s) / (2 TP + FP + FN + s) = (TP + s/2) / (TP + FP/2 + FN/2 + s/2)
    y, p = random_case(5)
    np.testing.assert_allclose(per_image(TverskyLoss(0.5, 0.5, smooth=0.5), y, p),
                               per_image(DiceLoss(smooth=1.0), y, p), rtol=1e-5)


@pytest.mark.parametrize("pos_weight", [1.0, 7.5])
@pytest.mark.parametrize("channels", [1, 3])
def test_wbce_matches_reference(pos_weight, channels):
    y, p = random_case(6, (3, 8, 8, channels))
    loss = WeightedBCE(pos_weight=pos_weight)
    np.testing.assert_allclose(per_image(loss, y, p), ref_wbce(y, p, pos_weight=pos_weight),
                               rtol=1e-5)
    z = (np.random.default_rng(6).normal(size=y.shape) * 4).astype("float32")
    ref = ref_wbce(y, logits=z, pos_weight=pos_weight)
    np.testing.assert_allclose(per_image(WeightedBCE(pos_weight, from_logits=True), y, z), ref,
                               rtol=1e-5)


def test_plain_bce_equals_keras_binary_crossentropy():
    y, p = random_case(7)
    expected = float(keras.losses.BinaryCrossentropy()(y, p))
    np.testing.assert_allclose(value(WeightedBCE(), y, p), expected, rtol=1e-5)


def test_wbce_stable_at_large_logits():
    y = np.array([1, 0, 1, 0], "float32").reshape(1, 2, 2, 1)
    z = np.array([-200, 200, 200, -200], "float32").reshape(1, 2, 2, 1)
    # two pixels wrong by a logit of 200: loss = (3 * 200 + 200) / 4 with pos_weight 3
    np.testing.assert_allclose(value(WeightedBCE(3.0, from_logits=True), y, z), 200.0, rtol=1e-6)


@pytest.mark.parametrize("per_img", [True, False])
def test_combined_is_weighted_sum(per_img):
    y, p = random_case(8)
    loss = CombinedLoss(alpha=0.3, beta=0.5, gamma=0.2, fp_weight=0.4, fn_weight=0.6,
                        focal_gamma=1.5, pos_weight=4.0, smooth=0.5, per_image=per_img)
    ref = (0.3 * ref_overlap("dice", y, p, per_img, smooth=0.5)
           + 0.5 * ref_overlap("focal_tversky", y, p, per_img, smooth=0.5, fp_weight=0.4,
                               fn_weight=0.6, gamma=1.5)
           + 0.2 * ref_wbce(y, p, pos_weight=4.0))
    np.testing.assert_allclose(per_image(loss, y, p), ref, rtol=1e-5)
    np.testing.assert_allclose(value(loss, y, p), np.mean(ref), rtol=1e-5)


def test_combined_from_logits():
    y, _ = random_case(9, (2, 8, 8, 1))
    z = (np.random.default_rng(9).normal(size=y.shape) * 5).astype("float32")
    p = sigmoid64(z)
    ref = (ref_overlap("dice", y, p) + ref_overlap("focal_tversky", y, p)
           + ref_wbce(y, logits=z, pos_weight=2.0))
    np.testing.assert_allclose(per_image(CombinedLoss(pos_weight=2.0, from_logits=True), y, z),
                               ref, rtol=1e-5)


# ---------------------------------------------------------------- hand-computed cases


def img(values):
    return np.array(values, "float32").reshape(1, 2, 2, 1)


@pytest.mark.parametrize("cls", [DiceLoss, TverskyLoss, FocalTverskyLoss, CombinedLoss])
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_perfect_empty_or_full_costs_zero(cls, fill):
    y = np.full((2, 4, 4, 1), fill, "float32")
    for per_img in (True, False):
        got = value(cls(per_image=per_img), y, y)
        assert np.isfinite(got)
        assert got == pytest.approx(0.0, abs=1e-6)  # BCE at p = 0 or 1 is -log(1 - 1e-7)


def test_hand_disjoint_and_one_pixel():
    # disjoint: TP 0, FP 1, FN 1 -> Dice loss 1 - 1 / 3
    assert value(DiceLoss(), img([1, 0, 0, 0]), img([0, 1, 0, 0])) == pytest.approx(2 / 3)
    # one fluid pixel predicted at 0.5: TP .5, FN .5 -> 1 - 2 / 2.5
    assert value(DiceLoss(), img([1, 0, 0, 0]), img([0.5, 0, 0, 0])) == pytest.approx(0.2)
    # same with smooth 0.01: 1 - 1.01 / 1.51
    assert value(DiceLoss(smooth=0.01), img([1, 0, 0, 0]),
                 img([0.5, 0, 0, 0])) == pytest.approx(0.5 / 1.51)
    # one pixel, WBCE w=4: -(4 log .5) / 4 pixels (other pixels p = 0 -> clipped, ~1e-7)
    assert value(WeightedBCE(4.0), img([1, 0, 0, 0]),
                 img([0.5, 0, 0, 0])) == pytest.approx(np.log(2), rel=1e-5)


def test_fp_and_fn_weights_act_in_documented_direction():
    truth_fp, pred_fp = img([1, 1, 0, 0]), img([1, 1, 1, 0])  # TP 2, FP 1, FN 0
    truth_fn, pred_fn = img([1, 1, 1, 0]), img([1, 1, 0, 0])  # TP 2, FP 0, FN 1
    loss = TverskyLoss(fp_weight=0.3, fn_weight=0.7)
    fp_only, fn_only = value(loss, truth_fp, pred_fp), value(loss, truth_fn, pred_fn)
    assert fp_only == pytest.approx(1 - 3 / 3.3)  # (TP + 1) / (TP + 0.3 FP + 1)
    assert fn_only == pytest.approx(1 - 3 / 3.7)  # (TP + 1) / (TP + 0.7 FN + 1)
    assert fn_only > fp_only
    swapped = TverskyLoss(fp_weight=0.7, fn_weight=0.3)
    assert value(swapped, truth_fp, pred_fp) == pytest.approx(fn_only)
    assert value(swapped, truth_fn, pred_fn) == pytest.approx(fp_only)
    focal = FocalTverskyLoss(gamma=2.0)
    assert value(focal, truth_fn, pred_fn) == pytest.approx(fn_only ** 2)
    assert value(focal, truth_fp, pred_fp) == pytest.approx(fp_only ** 2)


def test_keras_tversky_applies_alpha_to_false_negatives():
    """Keras 3.15 documents alpha as the FP weight, but its code weights FN by alpha."""
    truth_fp, pred_fp = img([1, 1, 0, 0]), img([1, 1, 1, 0])
    truth_fn, pred_fn = img([1, 1, 1, 0]), img([1, 1, 0, 0])
    k = keras.losses.Tversky(alpha=0.3, beta=0.7)
    k_fp, k_fn = value(k, truth_fp, pred_fp), value(k, truth_fn, pred_fn)
    assert k_fp == pytest.approx(1 - 2 / 2.7, rel=1e-5)  # FP weighted by beta = 0.7
    assert k_fn == pytest.approx(1 - 2 / 2.3, rel=1e-5)  # FN weighted by alpha = 0.3
    assert k_fp > k_fn  # the opposite of its docstring's reading
    # Hence keras Tversky(alpha=a, beta=b) == ours(fn_weight=a, fp_weight=b) (eps-level smooth).
    y, p = random_case(10)
    ours = TverskyLoss(fp_weight=0.7, fn_weight=0.3, smooth=1e-7, per_image=False)
    np.testing.assert_allclose(value(k, y, p), value(ours, y, p), rtol=1e-5)


# ---------------------------------------------------------------- keras-unet-collection

kuc = pytest.importorskip("keras_unet_collection.losses")


def test_kuc_tversky_and_focal_tversky_conventions():
    """kuc: TI = (TP + c) / (TP + alpha FN + (1 - alpha) FP + c); FTL = (1 - TI) ** (1 / gamma)."""
    y, p = random_case(11)
    for a in (0.3, 0.7):
        ours = TverskyLoss(fn_weight=a, fp_weight=1 - a, smooth=1e-7, per_image=False)
        np.testing.assert_allclose(value(ours, y, p), float(kuc.tversky(y, p, alpha=a)),
                                   rtol=1e-5)
        ft = FocalTverskyLoss(fn_weight=a, fp_weight=1 - a, gamma=0.75, smooth=1e-7,
                              per_image=False)
        np.testing.assert_allclose(value(ft, y, p),
                                   float(kuc.focal_tversky(y, p, alpha=a, gamma=4 / 3)),
                                   rtol=1e-5)
    # same smooth constant, same value also with a large constant
    np.testing.assert_allclose(value(TverskyLoss(0.5, 0.5, smooth=3.0, per_image=False), y, p),
                               float(kuc.tversky(y, p, alpha=0.5, const=3.0)), rtol=1e-5)


def test_kuc_dice_agrees_except_smooth_and_empty():
    y, p = random_case(12)
    ours = value(DiceLoss(smooth=1e-7, per_image=False), y, p)
    np.testing.assert_allclose(ours, float(kuc.dice(y, p)), rtol=1e-5)
    # kuc adds its constant to the numerator only: (2 TP + c) / (2 TP + FP + FN)
    tp, fp, fn = (float(v[0]) for v in ref_counts(y, p, per_image=False))
    c = 5.0
    np.testing.assert_allclose(float(kuc.dice(y, p, const=c)),
                               1 - (2 * tp + c) / (2 * tp + fp + fn), rtol=1e-5)
    assert float(kuc.dice(y, p, const=c)) != pytest.approx(
        value(DiceLoss(smooth=c, per_image=False), y, p), rel=1e-4)
    # ...so an empty mask with an empty prediction gives -inf there, 0 here.
    empty = np.zeros((2, 8, 8, 1), "float32")
    assert np.isneginf(float(kuc.dice(empty, empty)))
    assert value(DiceLoss(per_image=False), empty, empty) == 0.0


# ---------------------------------------------------------------- gradients and dtypes


def gradient(loss, y, p):
    p = tf.Variable(p)
    with tf.GradientTape() as tape:
        out = loss(tf.constant(y), p)
    return float(out), tape.gradient(out, p).numpy()


ALL = [DiceLoss, TverskyLoss, FocalTverskyLoss, WeightedBCE, CombinedLoss]


@pytest.mark.parametrize("cls", ALL)
def test_finite_gradients_at_saturated_inputs(cls):
    y, _ = random_case(13, (2, 8, 8, 1))
    hard = np.where(np.random.default_rng(13).random(y.shape) < 0.5, 0.0, 1.0).astype("float32")
    for p in (hard, y.copy(), np.zeros_like(y), np.ones_like(y)):
        out, grad = gradient(cls(), y, p)
        assert np.isfinite(out) and np.all(np.isfinite(grad))
    empty = np.zeros((2, 8, 8, 1), "float32")
    for p in (empty, np.full_like(empty, 0.3)):
        out, grad = gradient(cls(), empty, p)
        assert np.isfinite(out) and np.all(np.isfinite(grad))
    logits = np.where(hard > 0, 1e4, -1e4).astype("float32")
    for z in (logits, -logits, logits * 0.01):
        out, grad = gradient(cls(from_logits=True), y, z)
        assert np.isfinite(out) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("cls", ALL)
def test_finite_gradients_softmax_logits(cls):
    y, _ = random_case(19, (2, 8, 8, 3))
    z = np.where(y > 0, 1e4, -1e4).astype("float32")
    for logits in (z, -z):
        out, grad = gradient(cls(from_logits=True, ignore_background=True), y, logits)
        assert np.isfinite(out) and np.all(np.isfinite(grad))


def test_focal_gradient_is_zero_not_nan_at_perfect_prediction():
    y, _ = random_case(14, (2, 8, 8, 1))
    _, grad = gradient(FocalTverskyLoss(gamma=0.5), y, y.copy())
    # 1 - TI = 0 exactly only when there are no FP and no FN: the guard returns 0 gradient
    assert np.all(np.isfinite(grad))
    empty = np.zeros_like(y)
    out, grad = gradient(FocalTverskyLoss(gamma=0.5), empty, empty)
    assert out == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("cls", ALL)
def test_low_precision_predictions_computed_in_float32(dtype, cls):
    y, p = random_case(15, (2, 16, 16, 1))
    low = tf.cast(tf.constant(p), dtype)
    rounded = tf.cast(low, "float32").numpy()
    out = cls()(tf.constant(y), low)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(float(out), value(cls(), y, rounded), rtol=1e-6)
    # from logits of large magnitude in low precision: finite
    z = tf.cast(tf.constant(np.where(y > 0, -6e4, 6e4).astype("float32")), dtype)
    assert np.isfinite(float(cls(from_logits=True)(tf.constant(y), z)))


def test_float32_sums_on_a_full_size_scan():
    """496 x 768 scans: float32 sums stay within 1e-4 of the float64 reference."""
    rng = np.random.default_rng(16)
    y = (rng.random((1, 496, 768, 1)) < 0.01).astype("float32")
    p = rng.random(y.shape).astype("float32")
    np.testing.assert_allclose(value(DiceLoss(), y, p), ref_overlap("dice", y, p)[0], rtol=1e-4)


# ---------------------------------------------------------------- registry, config, saving


def test_registry_and_get_loss():
    assert set(LOSSES) == {"dice", "focal_tversky", "wbce", "tversky", "combined"}
    for name, cls in LOSSES.items():
        assert type(get_loss(name)) is cls
    assert get_loss("Combined", alpha=0.5).alpha == 0.5
    inst = DiceLoss()
    assert get_loss(inst) is inst
    with pytest.raises(ValueError, match="focal_tversky"):
        get_loss("focal")
    with pytest.raises(TypeError):
        get_loss(inst, smooth=2.0)
    with pytest.raises(TypeError):
        get_loss(3)


@pytest.mark.parametrize("cls, kwargs", [
    (DiceLoss, dict(smooth=0)), (TverskyLoss, dict(fp_weight=-1)),
    (TverskyLoss, dict(fp_weight=0, fn_weight=0)), (FocalTverskyLoss, dict(gamma=0)),
    (CombinedLoss, dict(alpha=0, beta=0, gamma=0)), (WeightedBCE, dict(pos_weight=0)),
    (CombinedLoss, dict(alpha=float("nan"))), (CombinedLoss, dict(beta=-0.5)),
])
def test_invalid_parameters_raise(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)


@pytest.mark.parametrize("loss", [
    DiceLoss(smooth=0.5, per_image=False, ignore_background=True),
    TverskyLoss(fp_weight=0.2, fn_weight=0.8, from_logits=True),
    FocalTverskyLoss(fp_weight=0.1, fn_weight=0.9, gamma=2.0, name="ft"),
    WeightedBCE(pos_weight=12.0, from_logits=True),
    CombinedLoss(alpha=0.3, beta=0.2, gamma=0.5, fp_weight=0.4, fn_weight=0.6, focal_gamma=1.2,
                 pos_weight=9.0, smooth=2.0, per_image=False),
])
def test_config_round_trip(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y, p = random_case(17)
    assert value(restored, y, p) == pytest.approx(value(loss, y, p))


def test_keras_file_round_trip_restores_combined_loss(tmp_path):
    inp = keras.Input((8, 8, 1))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    model = keras.Model(inp, out)
    loss = CombinedLoss(alpha=0.3, beta=0.6, gamma=0.1, pos_weight=20.0, focal_gamma=1.5)
    model.compile(optimizer="sgd", loss=loss)
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, CombinedLoss)
    assert loaded.loss.get_config() == loss.get_config()
    assert (loaded.loss.alpha, loaded.loss.beta, loaded.loss.gamma) == (0.3, 0.6, 0.1)
    y, x = random_case(18, (2, 8, 8, 1))
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0),
                               rtol=1e-6)


# ---------------------------------------------------------------- class weights


def test_pos_weight_rules():
    assert pos_weight_from_fraction(0.2) == pytest.approx(4.0)
    assert pos_weight_from_fraction(0.001, cap=100) == 100
    masks = [np.zeros((4, 5), "uint8"), np.ones((2, 5), "uint8")]  # 10 fluid of 30 pixels
    assert pos_weight_from_masks(masks) == pytest.approx(2.0)
    assert pos_weight_from_masks(np.array([[0, 255], [0, 0]], "uint8")) == pytest.approx(3.0)
    assert WeightedBCE.from_fluid_fraction(0.25, from_logits=True).pos_weight == pytest.approx(3.0)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            pos_weight_from_fraction(bad)
    with pytest.raises(ValueError):
        pos_weight_from_masks([np.zeros((3, 3))])


def test_wbce_per_class_weights_match_reference_and_round_trip():
    y, p = random_case(8, (2, 8, 8, 3))
    weights = [0.5, 2.0, 3.0]
    ref = ref_wbce(y, p, pos_weight=np.array(weights))
    np.testing.assert_allclose(per_image(WeightedBCE(pos_weight=weights), y, p), ref, rtol=1e-5)
    combined = CombinedLoss(alpha=0.0, beta=0.0, gamma=1.0, pos_weight=weights)
    again = CombinedLoss.from_config(combined.get_config())
    np.testing.assert_allclose(per_image(again, y, p), ref, rtol=1e-5)
    # a single weight per channel is not the scalar weight on every channel
    assert not np.allclose(ref, ref_wbce(y, p, pos_weight=2.0))
    with pytest.raises(ValueError, match="2 pos_weight values for 3 channels"):
        per_image(WeightedBCE(pos_weight=[1.0, 2.0]), y, p)
    with pytest.raises(ValueError, match="pos_weight must be a finite number > 0"):
        WeightedBCE(pos_weight=[1.0, 0.0])
