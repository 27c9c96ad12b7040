"""Segmentation losses of Darooei et al. 2023 (eq. 5): Dice, focal Tversky, weighted BCE.

Inputs: ``y_true`` a mask (B, H, W, C) in {0, 1} (one-hot when C > 1; (B, H, W) is accepted
for C = 1) and ``y_pred`` probabilities of the same shape (sigmoid for C = 1, softmax for C > 1)
or logits with ``from_logits=True``. Everything is computed in float32 whatever the input dtype
(float16 / bfloat16 predictions of a mixed-precision model are cast first).

Reduction. ``call`` returns one value per image, shape (B,), and Keras averages the batch:
 - ``per_image=True`` (default, as MONAI): each B-scan's overlap score over its own H, W (per
   class, then the mean over classes), so a small-fluid scan weighs as much as a large one.
 - ``per_image=False`` (keras-unet-collection's form): TP, FP, FN are summed over the whole
   batch, and the single batch loss is broadcast to (B,), so Keras' mean returns it unchanged.
   Under ``tf.distribute`` the sums are all-reduced over the replicas, so each replica sees
   the loss of the *global* batch (and its gradient, as the all-reduce is differentiable):
   the result equals the single-device one. This is the one place where the module uses
   TensorFlow directly, because Keras 3 has no backend-neutral cross-replica sum.
Returning (B,) rather than a scalar also avoids the Keras 3 MirroredStrategy trap: a scalar
loss is not divided by the number of replicas, so loss and gradients come out R times too big.

Soft counts per class: TP = sum(y p), FP = sum((1 - y) p), FN = sum(y (1 - p)). ``smooth``
is added to numerator and denominator, so an empty mask with an empty prediction costs 0.
"""
import numpy as np
import keras
from keras import ops

_CLIP = 1e-7  # probabilities are clipped to [_CLIP, 1 - _CLIP] inside the BCE logarithms


def _sum_across_replicas(values):
    """Sum a list of tensors over the replicas of the current tf.distribute replica context."""
    if keras.backend.backend() != "tensorflow":
        return values
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def _standardize(y_true, y_pred):
    """Cast both to float32 and give y_true the rank of y_pred (channels-last)."""
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    if len(y_true.shape) == len(y_pred.shape) - 1 and y_pred.shape[-1] == 1:
        y_true = ops.expand_dims(y_true, -1)
    if len(y_true.shape) != len(y_pred.shape) or len(y_pred.shape) < 3:
        raise ValueError(
            "y_true and y_pred must both be (B, H, W, C) (y_true may be (B, H, W) when C=1); "
            f"got y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)}"
        )
    return y_true, y_pred


def _probabilities(y_pred, from_logits):
    if not from_logits:
        return y_pred
    if y_pred.shape[-1] == 1:
        return ops.sigmoid(y_pred)
    return ops.softmax(y_pred, axis=-1)


def _drop_background(x, ignore_background):
    if ignore_background and x.shape[-1] is not None and x.shape[-1] > 1:
        return x[..., 1:]
    return x


def _check(name, value, low=0.0, strict=False):
    value = float(value)
    if not np.isfinite(value) or value < low or (strict and value == low):
        rel = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {rel} {low}; got {value}")
    return value


class _OverlapLoss(keras.losses.Loss):
    """Base of the overlap losses: soft TP / FP / FN per image (or per batch) and class."""

    def __init__(self, smooth=1.0, per_image=True, from_logits=False, ignore_background=False,
                 name=None, reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.smooth = _check("smooth", smooth, strict=True)
        self.per_image = bool(per_image)
        self.from_logits = bool(from_logits)
        self.ignore_background = bool(ignore_background)

    def _counts(self, y_true, y_pred):
        """(tp, fp, fn), each (B, C) per image or (C,) for the (replica-summed) whole batch."""
        y_true, y_pred = _standardize(y_true, y_pred)
        prob = _drop_background(_probabilities(y_pred, self.from_logits), self.ignore_background)
        y_true = _drop_background(y_true, self.ignore_background)
        rank = len(prob.shape)
        axis = tuple(range(1, rank - 1)) if self.per_image else tuple(range(rank - 1))
        tp = ops.sum(y_true * prob, axis=axis)
        fp = ops.sum((1.0 - y_true) * prob, axis=axis)
        fn = ops.sum(y_true * (1.0 - prob), axis=axis)
        if not self.per_image:
            tp, fp, fn = _sum_across_replicas([tp, fp, fn])
        return tp, fp, fn, y_pred

    def _per_image(self, class_loss, y_pred):
        """Mean over classes; the whole-batch value is broadcast to (B,)."""
        loss = ops.mean(class_loss, axis=-1)
        if not self.per_image:
            loss = loss + ops.zeros(ops.shape(y_pred)[:1], dtype="float32")
        return loss

    def _score(self, tp, fp, fn):
        raise NotImplementedError

    def _class_loss(self, tp, fp, fn):
        return 1.0 - self._score(tp, fp, fn)

    def call(self, y_true, y_pred):
        tp, fp, fn, y_pred = self._counts(y_true, y_pred)
        return self._per_image(self._class_loss(tp, fp, fn), y_pred)

    def get_config(self):
        config = super().get_config()
        config.update(smooth=self.smooth, per_image=self.per_image, from_logits=self.from_logits,
                      ignore_background=self.ignore_background)
        return config


@keras.saving.register_keras_serializable(package="oct_seg")
class DiceLoss(_OverlapLoss):
    """Soft Dice loss, 1 - (2 TP + smooth) / (2 TP + FP + FN + smooth); returns (B,).

    Args:
        smooth: > 0, added to numerator and denominator (default 1.0, MONAI-like: an empty
            mask with an empty prediction costs 0; a 496 x 768 scan has ~10^3-10^4 fluid
            pixels, so 1 pixel of smoothing barely changes non-empty scans).
        per_image: per-B-scan Dice (default) or the whole-batch Dice (see module docstring).
        from_logits: y_pred are logits (sigmoid for C = 1, softmax over C for C > 1).
        ignore_background: with C > 1, leave class 0 out of the mean over classes.
    """

    def __init__(self, smooth=1.0, per_image=True, from_logits=False, ignore_background=False,
                 name="dice_loss", reduction="sum_over_batch_size"):
        super().__init__(smooth, per_image, from_logits, ignore_background, name, reduction)

    def _score(self, tp, fp, fn):
        numerator = 2.0 * tp + self.smooth
        return numerator / (numerator + fp + fn)


@keras.saving.register_keras_serializable(package="oct_seg")
class TverskyLoss(_OverlapLoss):
    """Tversky loss, 1 - TI with TI = (TP + s) / (TP + fp_weight FP + fn_weight FN + s).

    Naming is explicit: ``fp_weight`` multiplies the false positives (predicted fluid outside
    the mask), ``fn_weight`` the false negatives (missed fluid). ``fn_weight > fp_weight``
    (default 0.7 / 0.3, Salehi 2017 and Abraham 2019) makes missed fluid cost more, favouring
    recall of small fluid pockets. fp_weight = fn_weight = 0.5 is the Dice loss.
    Other conventions: keras-unet-collection's ``tversky(alpha)`` uses fn_weight = alpha and
    fp_weight = 1 - alpha; Keras 3.15's ``keras.losses.Tversky(alpha, beta)`` documents alpha as
    the FP weight but its code applies alpha to the false negatives and beta to the false
    positives (tests/test_losses.py shows both).

    Args: fp_weight, fn_weight >= 0, not both 0; the others as in ``DiceLoss``.
    """

    def __init__(self, fp_weight=0.3, fn_weight=0.7, smooth=1.0, per_image=True,
                 from_logits=False, ignore_background=False, name="tversky_loss",
                 reduction="sum_over_batch_size"):
        super().__init__(smooth, per_image, from_logits, ignore_background, name, reduction)
        self.fp_weight = _check("fp_weight", fp_weight)
        self.fn_weight = _check("fn_weight", fn_weight)
        if self.fp_weight + self.fn_weight == 0:
            raise ValueError("fp_weight and fn_weight cannot both be 0 (the loss would be 0)")

    def _score(self, tp, fp, fn):
        numerator = tp + self.smooth
        # numerator + errors (not a re-summed denominator) keeps TI <= 1 after rounding.
        return numerator / (numerator + (self.fp_weight * fp + self.fn_weight * fn))

    def get_config(self):
        config = super().get_config()
        config.update(fp_weight=self.fp_weight, fn_weight=self.fn_weight)
        return config


@keras.saving.register_keras_serializable(package="oct_seg")
class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss ("focal Dice" in Darooei et al.): (1 - TI) ** gamma per image/class.

    Convention: ``gamma`` is the exponent applied to 1 - TI. Abraham & Khan 2019 (and
    keras-unet-collection's ``focal_tversky``) write (1 - TI) ** (1 / gamma) with their best
    gamma = 4/3, i.e. ``gamma=0.75`` here, the default. For gamma < 1, (1 - TI) ** gamma
    exceeds 1 - TI on (0, 1) and its slope grows as TI -> 1, so cases that are nearly right
    keep a sizeable gradient; gamma = 1 is ``TverskyLoss``.
    The power is guarded so that a perfect case (1 - TI = 0) gives loss 0 and gradient 0
    instead of inf / NaN for gamma < 1.

    Args: gamma > 0; the others as in ``TverskyLoss`` (defaults fp_weight 0.3, fn_weight 0.7).
    """

    def __init__(self, fp_weight=0.3, fn_weight=0.7, gamma=0.75, smooth=1.0, per_image=True,
                 from_logits=False, ignore_background=False, name="focal_tversky_loss",
                 reduction="sum_over_batch_size"):
        super().__init__(fp_weight, fn_weight, smooth, per_image, from_logits,
                         ignore_background, name, reduction)
        self.gamma = _check("gamma", gamma, strict=True)

    def _class_loss(self, tp, fp, fn):
        base = ops.maximum(1.0 - self._score(tp, fp, fn), 0.0)
        positive = base > 0
        safe = ops.where(positive, base, ops.ones_like(base))
        return ops.where(positive, ops.power(safe, self.gamma), ops.zeros_like(base))

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma)
        return config


def pos_weight_from_fraction(fraction, cap=None):
    """Positive-class weight (1 - f) / f for a fluid fraction f in (0, 1), optionally capped.

    With this weight, fluid and background pixels contribute equally to the weighted BCE of
    the set (f w = 1 - f). ``cap`` (e.g. 100) bounds it for sets with very little fluid.
    The Duke DME set (88 B-scans) has f = 0.0088, hence w ~ 113.
    """
    f = float(fraction)
    if not 0.0 < f < 1.0:
        raise ValueError(
            f"fluid fraction must be in (0, 1) to derive a class weight; got {f}. "
            "Pass pos_weight explicitly for a set without fluid or without background."
        )
    weight = (1.0 - f) / f
    if cap is not None:
        weight = min(weight, _check("cap", cap, strict=True))
    return weight


def pos_weight_from_masks(masks, cap=None):
    """``pos_weight_from_fraction`` of the pooled fluid fraction of masks (array or list of).

    f = (number of mask pixels > 0.5) / (number of pixels), over all masks together (the
    pixel imbalance the BCE actually sees), not the mean of per-scan fractions.
    """
    arrays = [np.asarray(masks)] if isinstance(masks, np.ndarray) else [np.asarray(m) for m in masks]
    total = sum(a.size for a in arrays)
    if total == 0:
        raise ValueError("masks are empty: no pixels to count")
    fluid = sum(int(np.count_nonzero(a > 0.5)) for a in arrays)
    return pos_weight_from_fraction(fluid / total, cap=cap)


@keras.saving.register_keras_serializable(package="oct_seg")
class WeightedBCE(keras.losses.Loss):
    """Weighted binary cross-entropy, per pixel -(w y log p + (1 - y) log(1 - p)), mean per image.

    Returns (B,). The mean over pixels of a batch equals the mean of per-image means (equal
    image sizes), so there is no per_image option: both forms coincide, also across replicas.
    From logits, log p = log_sigmoid(z) and log(1 - p) = log_sigmoid(-z) (exact for any |z|);
    for C > 1 with softmax, log p_c = log_softmax(z)_c and log(1 - p_c) = logsumexp over the
    other classes - logsumexp(z). From probabilities, p is clipped to [1e-7, 1 - 1e-7].
    C > 1 is treated per channel (one-vs-rest BCE, mean over channels).

    Args:
        pos_weight: w > 0, weight of fluid pixels. Default 1.0 (plain BCE); for the paper's
            weighted BCE derive it from the training masks: ``pos_weight_from_masks(masks)`` or
            ``WeightedBCE.from_fluid_fraction(f)`` -> (1 - f) / f. For C > 1 also a sequence
            of C weights, one per channel (class c's pixels in its one-vs-rest term).
        from_logits, ignore_background: as in ``DiceLoss``.
    """

    def __init__(self, pos_weight=1.0, from_logits=False, ignore_background=False,
                 name="weighted_bce", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction, dtype="float32")
        if np.ndim(pos_weight) == 1:
            self.pos_weight = [_check("pos_weight", w, strict=True) for w in pos_weight]
        else:
            self.pos_weight = _check("pos_weight", pos_weight, strict=True)
        self.from_logits = bool(from_logits)
        self.ignore_background = bool(ignore_background)

    @classmethod
    def from_fluid_fraction(cls, fraction, cap=None, **kwargs):
        """WeightedBCE with pos_weight = (1 - f) / f (capped at ``cap``); see pos_weight_from_fraction."""
        return cls(pos_weight=pos_weight_from_fraction(fraction, cap=cap), **kwargs)

    def _log_probs(self, y_pred):
        """log p and log(1 - p), float32, same shape as y_pred."""
        if not self.from_logits:
            prob = ops.clip(y_pred, _CLIP, 1.0 - _CLIP)
            return ops.log(prob), ops.log(1.0 - prob)
        if y_pred.shape[-1] == 1:
            return ops.log_sigmoid(y_pred), ops.log_sigmoid(-y_pred)
        n = y_pred.shape[-1]
        total = ops.logsumexp(y_pred, axis=-1, keepdims=True)
        others = ops.where(ops.eye(n, dtype="bool"), -np.inf, ops.expand_dims(y_pred, -2))
        return y_pred - total, ops.logsumexp(others, axis=-1) - total

    def call(self, y_true, y_pred):
        y_true, y_pred = _standardize(y_true, y_pred)
        log_p, log_q = self._log_probs(y_pred)
        weight = self.pos_weight
        if isinstance(weight, list):
            if len(weight) != y_pred.shape[-1]:
                raise ValueError(f"{len(weight)} pos_weight values for {y_pred.shape[-1]} "
                                 "channels; give one per channel")
            weight = ops.convert_to_tensor(weight, "float32")
        bce = -(weight * y_true * log_p + (1.0 - y_true) * log_q)
        bce = _drop_background(bce, self.ignore_background)
        return ops.mean(bce, axis=tuple(range(1, len(bce.shape))))

    def get_config(self):
        config = super().get_config()
        config.update(pos_weight=self.pos_weight, from_logits=self.from_logits,
                      ignore_background=self.ignore_background)
        return config


@keras.saving.register_keras_serializable(package="oct_seg")
class CombinedLoss(keras.losses.Loss):
    """Darooei et al. eq. 5: alpha * Dice + beta * focal Tversky + gamma * weighted BCE, (B,).

    Defaults alpha = beta = gamma = 1: the paper does not publish its weights, and the three
    terms already have comparable magnitudes (Dice and focal Tversky lie in [0, 1]; the BCE
    with w = (1 - f) / f is ~2 ln 2 ~ 1.4 at an uninformed p = 0.5 and -> 0 when fitted), so
    equal weights let none dominate. The Table 3 loss-ablation experiment (notebook) is what
    confirms or replaces them.

    Args:
        alpha, beta, gamma: >= 0, not all 0; weights of Dice, focal Tversky, weighted BCE.
        fp_weight, fn_weight, focal_gamma: focal Tversky parameters (``FocalTverskyLoss``'s
            fp_weight, fn_weight, gamma; defaults 0.3, 0.7, 0.75 = Abraham 2019's 4/3).
        pos_weight: weighted BCE's fluid weight (default 1.0; see ``pos_weight_from_masks``).
        smooth, per_image: for both overlap terms (the BCE is per-pixel, see ``WeightedBCE``).
        from_logits, ignore_background: for all three terms.
    """

    def __init__(self, alpha=1.0, beta=1.0, gamma=1.0, fp_weight=0.3, fn_weight=0.7,
                 focal_gamma=0.75, pos_weight=1.0, smooth=1.0, per_image=True,
                 from_logits=False, ignore_background=False, name="combined_loss",
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.alpha = _check("alpha", alpha)
        self.beta = _check("beta", beta)
        self.gamma = _check("gamma", gamma)
        if self.alpha + self.beta + self.gamma == 0:
            raise ValueError("alpha, beta and gamma cannot all be 0")
        common = dict(from_logits=from_logits, ignore_background=ignore_background)
        self.dice = DiceLoss(smooth=smooth, per_image=per_image, **common)
        self.focal_tversky = FocalTverskyLoss(fp_weight=fp_weight, fn_weight=fn_weight,
                                              gamma=focal_gamma, smooth=smooth,
                                              per_image=per_image, **common)
        self.wbce = WeightedBCE(pos_weight=pos_weight, **common)

    def call(self, y_true, y_pred):
        # Dice and focal Tversky share one set of counts: one cross-replica sum, not two
        # (two unordered collectives per step can pair up differently on different replicas).
        tp, fp, fn, y_pred = self.dice._counts(y_true, y_pred)
        overlap = (self.alpha * self.dice._class_loss(tp, fp, fn)
                   + self.beta * self.focal_tversky._class_loss(tp, fp, fn))
        return self.dice._per_image(overlap, y_pred) + self.gamma * self.wbce.call(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        ft = self.focal_tversky
        config.update(alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                      fp_weight=ft.fp_weight, fn_weight=ft.fn_weight, focal_gamma=ft.gamma,
                      pos_weight=self.wbce.pos_weight, smooth=ft.smooth,
                      per_image=ft.per_image, from_logits=ft.from_logits,
                      ignore_background=ft.ignore_background)
        return config


LOSSES = {
    "dice": DiceLoss,
    "focal_tversky": FocalTverskyLoss,
    "wbce": WeightedBCE,
    "tversky": TverskyLoss,
    "combined": CombinedLoss,
}


def get_loss(name_or_loss, **kwargs):
    """A loss instance from a ``LOSSES`` name (built with kwargs) or an existing Loss (as is)."""
    if isinstance(name_or_loss, keras.losses.Loss):
        if kwargs:
            raise TypeError("keyword arguments are only accepted with a loss name, "
                            f"not with an instance; got {sorted(kwargs)}")
        return name_or_loss
    if not isinstance(name_or_loss, str):
        raise TypeError(f"expected a loss name or a keras.losses.Loss; got {name_or_loss!r}")
    key = name_or_loss.strip().lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name_or_loss!r}; known names: {sorted(LOSSES)}")
    return LOSSES[key](**kwargs)
