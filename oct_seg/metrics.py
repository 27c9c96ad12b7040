"""Overlap metrics: Keras set-level Dice / Jaccard and numpy per-case evaluation tables.

Binarisation everywhere: a prediction pixel is fluid when p > threshold (default 0.5, so
p = 0.5 exactly is background); a truth pixel is fluid when its value is > 0.5.

Keras metrics accumulate TP, FP, FN over every batch of the evaluation (float64 state, summed
across replicas under tf.distribute), so ``result()`` is the global Dice / Jaccard of the set.
A set with no fluid in truth and prediction (TP + FP + FN = 0) gives 1.0: nothing was missed
or invented, and a number (not NaN) keeps early stopping and checkpoint monitoring working.

Per-case numpy scores follow nnU-Net: a B-scan whose truth and prediction are both empty gets
NaN Dice / Jaccard (excluded from means, counted as skipped). Exactly:
    dice        = 2 TP / (2 TP + FP + FN)  NaN iff truth and prediction are both empty
    jaccard     = TP / (TP + FP + FN)      NaN iff truth and prediction are both empty
    sensitivity = TP / (TP + FN)           NaN iff truth is empty
    precision   = TP / (TP + FP)           NaN iff prediction is empty

Multi-class (``classes`` = names of the fluid classes 1..C-1; softmax maps (H, W, C), truth
= class ids): a pixel's predicted class is the argmax (``fluid_mask``). Each fluid class
is scored one-vs-rest by the rules above (columns ``dice_IRF``, ``jaccard_IRF``, ...,
``truth_pixels_IRF``, ``pred_pixels_IRF``), and ``dice``, ``jaccard``, ``sensitivity``,
``precision`` become the mean over the fluid classes of the case (NaN classes skipped; the
background class is left out: it is ~98 % of the pixels and would flatter every model);
``truth_pixels`` / ``pred_pixels`` count fluid of any class.
"""
import numpy as np
import pandas as pd
import keras
from keras import ops

SCORE_NAMES = ("dice", "jaccard", "sensitivity", "precision")


class _OverlapMetric(keras.metrics.Metric):
    """Accumulates thresholded TP, FP, FN over all update_state calls."""

    def __init__(self, threshold=0.5, from_logits=False, ignore_background=False,
                 name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1]; got {threshold}")
        self.from_logits = bool(from_logits)
        self.ignore_background = bool(ignore_background)
        self.tp = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """y_true, y_pred (B, H, W, C) (y_true may be (B, H, W) for C = 1); sample_weight (B,)
        per image or broadcastable to y_pred."""
        y_pred = ops.cast(y_pred, "float32")
        y_true = ops.cast(y_true, "float32")
        if len(y_true.shape) == len(y_pred.shape) - 1 and y_pred.shape[-1] == 1:
            y_true = ops.expand_dims(y_true, -1)
        if self.from_logits:
            y_pred = ops.sigmoid(y_pred) if y_pred.shape[-1] == 1 else ops.softmax(y_pred, -1)
        pred = ops.cast(y_pred > self.threshold, "float32")
        truth = ops.cast(y_true > 0.5, "float32")
        if self.ignore_background and pred.shape[-1] is not None and pred.shape[-1] > 1:
            pred, truth = pred[..., 1:], truth[..., 1:]
        weight = ops.ones_like(pred)
        if sample_weight is not None:
            sample_weight = ops.cast(sample_weight, "float32")
            if len(sample_weight.shape) == 1:
                sample_weight = ops.reshape(sample_weight, (-1,) + (1,) * (len(pred.shape) - 1))
            weight = weight * sample_weight
        self.tp.assign_add(ops.cast(ops.sum(weight * truth * pred), "float64"))
        self.fp.assign_add(ops.cast(ops.sum(weight * (1.0 - truth) * pred), "float64"))
        self.fn.assign_add(ops.cast(ops.sum(weight * truth * (1.0 - pred)), "float64"))

    def _ratio(self, numerator, denominator):
        """numerator / denominator, 1.0 when the denominator is 0 (all-empty set)."""
        empty = denominator <= 0
        value = ops.where(empty, 1.0, numerator / ops.where(empty, 1.0, denominator))
        return ops.cast(value, self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(threshold=self.threshold, from_logits=self.from_logits,
                      ignore_background=self.ignore_background)
        return config


@keras.saving.register_keras_serializable(package="oct_seg")
class DiceCoefficient(_OverlapMetric):
    """Global Dice of the set, 2 TP / (2 TP + FP + FN) at ``threshold``; 1.0 if all empty.

    Args: threshold (p > threshold is fluid), from_logits (sigmoid / softmax first),
    ignore_background (drop class 0 when C > 1; with C > 1 the counts of the classes are
    pooled), name, dtype.
    """

    def __init__(self, threshold=0.5, from_logits=False, ignore_background=False,
                 name="dice", dtype=None):
        super().__init__(threshold, from_logits, ignore_background, name=name, dtype=dtype)

    def result(self):
        return self._ratio(2.0 * self.tp, 2.0 * self.tp + self.fp + self.fn)


@keras.saving.register_keras_serializable(package="oct_seg")
class JaccardIndex(_OverlapMetric):
    """Global Jaccard (IoU) of the set, TP / (TP + FP + FN); 1.0 if all empty. Args as Dice."""

    def __init__(self, threshold=0.5, from_logits=False, ignore_background=False,
                 name="jaccard", dtype=None):
        super().__init__(threshold, from_logits, ignore_background, name=name, dtype=dtype)

    def result(self):
        return self._ratio(self.tp, self.tp + self.fp + self.fn)


def _binary_pair(truth, pred, threshold):
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        truth, pred = np.squeeze(truth), np.squeeze(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction shapes differ: {truth.shape} vs {pred.shape}")
    return truth > 0.5, pred > threshold


def _div(numerator, denominator):
    return float(numerator) / denominator if denominator > 0 else float("nan")


def fluid_mask(prob, threshold=0.5) -> np.ndarray:
    """Probability map (H, W[, C]) -> uint8 label map (H, W): 1 = fluid for a one-channel map
    (p > threshold), the argmax class id for C > 1 (0 = background)."""
    prob = np.asarray(prob)
    if prob.ndim == 3 and prob.shape[-1] == 1:
        prob = prob[..., 0]
    if prob.ndim == 2:
        return (prob > threshold).astype(np.uint8)
    if prob.ndim == 3:
        return np.argmax(prob, axis=-1).astype(np.uint8)
    raise ValueError(f"expected a probability map (H, W) or (H, W, C), got shape {prob.shape}")


def case_scores(truth, pred, threshold=0.5):
    """Scores of one B-scan: dict(dice, jaccard, sensitivity, precision) (NaN rules: module doc).

    truth: mask (H, W) or (H, W, C), fluid where > 0.5; pred: probabilities (or a binary mask)
    of the same shape up to singleton axes, fluid where > threshold.
    """
    t, p = _binary_pair(truth, pred, threshold)
    return _scores(np.count_nonzero(t & p), np.count_nonzero(~t & p), np.count_nonzero(t & ~p))


def _scores(tp: int, fp: int, fn: int) -> dict:
    """dice, jaccard, sensitivity, precision from one case's counts (NaN rules: module doc)."""
    return {
        "dice": _div(2 * tp, 2 * tp + fp + fn),
        "jaccard": _div(tp, tp + fp + fn),
        "sensitivity": _div(tp, tp + fn),
        "precision": _div(tp, tp + fp),
    }


def class_scores(truth, labels, classes) -> dict:
    """Scores of one B-scan per fluid class (module docstring): ``{metric}_{name}``,
    ``truth_pixels_{name}``, ``pred_pixels_{name}`` for each name of ``classes`` (ids 1, 2,
    ...), the four SCORE_NAMES as the mean over the classes, and the fluid pixels of any class.

    truth: class ids (H, W); labels: predicted class ids (H, W) (``fluid_mask``).
    """
    truth, labels = np.asarray(truth), np.asarray(labels)
    if truth.shape != labels.shape:
        raise ValueError(f"truth and prediction shapes differ: {truth.shape} vs {labels.shape}")
    row = {}
    for cid, name in enumerate(classes, start=1):
        t, p = truth == cid, labels == cid
        scores = _scores(np.count_nonzero(t & p), np.count_nonzero(~t & p),
                         np.count_nonzero(t & ~p))
        row.update({f"{metric}_{name}": value for metric, value in scores.items()})
        row[f"truth_pixels_{name}"], row[f"pred_pixels_{name}"] = (int(np.count_nonzero(t)),
                                                                   int(np.count_nonzero(p)))
    for metric in SCORE_NAMES:
        values = [row[f"{metric}_{name}"] for name in classes]
        used = [v for v in values if not np.isnan(v)]
        row[metric] = float(np.mean(used)) if used else float("nan")
    row["truth_pixels"] = int(np.count_nonzero(truth > 0))
    row["pred_pixels"] = int(np.count_nonzero(labels > 0))
    return row


def score_table(names, truths, probs, threshold=0.5, classes=()):
    """One row per case: name, dice, jaccard, sensitivity, precision, truth_pixels, pred_pixels.

    classes: names of the fluid classes of a multi-class model (truths are class ids, probs
    (H, W, C) maps); each row then also holds the per-class columns of ``class_scores``.
    """
    names, truths, probs = list(names), list(truths), list(probs)
    if not len(names) == len(truths) == len(probs):
        raise ValueError(f"names, truths and probs must have the same length; got "
                         f"{len(names)}, {len(truths)}, {len(probs)}")
    columns = ["name", *SCORE_NAMES, "truth_pixels", "pred_pixels"]
    if classes:
        rows = []
        for name, truth, prob in zip(names, truths, probs):
            if np.ndim(prob) != 3 or np.shape(prob)[-1] != len(classes) + 1:
                raise ValueError(f"{name}: a {np.shape(prob)} probability map for "
                                 f"{len(classes)} fluid classes; expected (H, W, "
                                 f"{len(classes) + 1}) (background + {', '.join(classes)})")
            rows.append({"name": name, **class_scores(truth, fluid_mask(prob), classes)})
        extra = [f"{m}_{c}" for c in classes for m in (*SCORE_NAMES, "truth_pixels",
                                                       "pred_pixels")]
        return pd.DataFrame(rows, columns=columns + extra)
    rows = []
    for name, truth, prob in zip(names, truths, probs):
        t, p = _binary_pair(truth, prob, threshold)
        rows.append({"name": name, **case_scores(t, p, threshold=0.5),
                     "truth_pixels": int(np.count_nonzero(t)),
                     "pred_pixels": int(np.count_nonzero(p))})
    return pd.DataFrame(rows, columns=columns)


def pooled_scores(truths, probs, threshold=0.5, classes=()) -> dict:
    """Dice and Jaccard of a whole set of cases: TP, FP, FN summed over every pixel of every
    case first (what ``DiceCoefficient`` gives for a set), so a case weighs by its fluid area.
    An all-empty set (truth and prediction) gives 1.0, as the Keras metrics.

    truths / probs: sequences of same-shaped arrays per case (as case_scores).
    Returns {"dice", "jaccard", "tp", "fp", "fn"} (counts as ints).
    classes: fluid class names of a multi-class model (truths class ids, probs (H, W, C)):
    returns {"dice_NAME", "jaccard_NAME"} per class (each class pooled one-vs-rest on the
    argmax labels) and "dice" / "jaccard", their means over the classes.
    """
    if classes:
        labels = [fluid_mask(prob) for prob in probs]
        result = {}
        for cid, name in enumerate(classes, start=1):
            one = pooled_scores([np.asarray(t) == cid for t in truths],
                                [lab == cid for lab in labels])
            result[f"dice_{name}"], result[f"jaccard_{name}"] = one["dice"], one["jaccard"]
        return _with_class_means(result, classes)
    tp = fp = fn = 0
    for truth, prob in zip(truths, probs, strict=True):
        t, p = _binary_pair(truth, prob, threshold)
        tp += int(np.count_nonzero(t & p))
        fp += int(np.count_nonzero(~t & p))
        fn += int(np.count_nonzero(t & ~p))
    errors = fp + fn
    return {"dice": 1.0 if tp + errors == 0 else 2 * tp / (2 * tp + errors),
            "jaccard": 1.0 if tp + errors == 0 else tp / (tp + errors),
            "tp": tp, "fp": fp, "fn": fn}


def pooled_from_table(df, classes=()) -> dict:
    """pooled_scores from a score_table (its truth_pixels, pred_pixels and dice columns):
    TP per case = dice x (truth + pred) / 2, so no probability map is needed.
    classes: the fluid classes of a multi-class table: "dice_NAME" / "jaccard_NAME" from its
    per-class columns and "dice" / "jaccard", their means (as pooled_scores)."""
    if classes:
        result = {}
        for name in classes:
            one = _pooled_counts(df, f"_{name}")
            result[f"dice_{name}"], result[f"jaccard_{name}"] = one["dice"], one["jaccard"]
        return _with_class_means(result, classes)
    return _pooled_counts(df, "")


def _with_class_means(result: dict, classes) -> dict:
    """``result`` (pooled "dice_NAME" / "jaccard_NAME" per class) with "dice" and "jaccard",
    their means over the fluid classes."""
    for metric in ("dice", "jaccard"):
        result[metric] = float(np.mean([result[f"{metric}_{n}"] for n in classes]))
    return result


def _pooled_counts(df, suffix: str) -> dict:
    """pooled_from_table of the columns dice, truth_pixels, pred_pixels + ``suffix``."""
    truth = df["truth_pixels" + suffix].to_numpy(float)
    pred = df["pred_pixels" + suffix].to_numpy(float)
    dice = np.nan_to_num(df["dice" + suffix].to_numpy(float))
    tp = float(np.round(dice * (truth + pred) / 2).sum())
    fp, fn = float(pred.sum()) - tp, float(truth.sum()) - tp
    errors = fp + fn
    return {"dice": 1.0 if tp + errors == 0 else 2 * tp / (2 * tp + errors),
            "jaccard": 1.0 if tp + errors == 0 else tp / (tp + errors),
            "tp": int(tp), "fp": int(fp), "fn": int(fn)}


def summarize_scores(df):
    """Per metric (rows dice, jaccard, sensitivity, precision, then the per-class columns of
    a multi-class table, e.g. dice_IRF): mean and std (ddof=1) over the non-NaN cases, n
    (cases used) and n_skipped (NaN cases)."""
    missing = [c for c in SCORE_NAMES if c not in df.columns]
    if missing:
        raise ValueError(f"score table lacks columns {missing}; expected score_table's output")
    per_class = [c for c in df.columns if c.startswith(tuple(f"{m}_" for m in SCORE_NAMES))]
    rows = {}
    for metric in (*SCORE_NAMES, *per_class):
        values = pd.to_numeric(df[metric], errors="raise").astype(float)
        used = values.dropna()
        rows[metric] = {"mean": used.mean(), "std": used.std(ddof=1), "n": int(used.size),
                        "n_skipped": int(values.size - used.size)}
    return pd.DataFrame.from_dict(rows, orient="index")[["mean", "std", "n", "n_skipped"]]
