"""The default training recipe: what ``oct_seg.train`` does unless told otherwise, and why.

The builders keep keras-unet-collection's defaults (paper widths, no batch norm); training
does not: each default below fixes a way the first defaults failed on real B-scans (Duke DME:
88 Spectralis B-scans of 8 DME patients, 26 of them fluid-free, fluid ~0.9 % of the pixels).
Every value can be overridden through TrainConfig (model_kwargs, loss_kwargs, bn_momentum,
prior_bias); the values a fold used are stored in its trained.json ("recipe").
What the recipe reaches: BENCHMARKS.md, section Accuracy (its U-Net on the benchmark's
5 patient-wise folds: pooled Dice 0.715 on the 88 held-out B-scans, per fold 0.707, 0.718,
0.792, 0.626, 0.619, per-image Dice 0.59 on the fluid-positive ones, 60 epochs, ~33 CPU
minutes a fold in mixed_bfloat16). tests/test_recipe_learns.py checks on real B-scans that
every network and loss learns under it.

* Network widths (``network_kwargs``): CPU-sized, 8 channels at full resolution doubling to
  128 (TransUNet: the same CNN with the paper's Table 2 transformer). Twice the width
  (16-256, the recipe's default until measured; 4x the multiply-adds, ~2x the training time
  on 2 cores) did not raise held-out Dice: pooled Dice 0.599 / 0.586 against 0.626 / 0.619
  on folds 3 / 4 of the accuracy benchmark (bench/accuracy.py's ``ours_unet16``), and 0.712
  against 0.711 on fold 0 under the earlier ReLU recipe. The paper's widths (64 ... 1024)
  cost ~16x the 16-256 time per B-scan: ~1 h per epoch of the Duke set on 2 cores.
  Swin-UNet: 16 channels (``SWIN_FILTERS_BEGIN``), 3 levels, MLP 64 (4x the width, Swin's
  ratio): with the builder's 4 levels and MLP 512 it stayed below 0.06 training Dice for 24
  epochs of real patches (3 patients, 128 x 384); with these values it learnt (0.15-0.19).
  Presets (e.g. ``transunet_paper``) keep their own widths.
* Batch norm on (``batch_norm=True`` where the builder has it): without normalisation the
  networks sat at the all-background output for the whole run (issue 11: Dice 0.000 for
  11 epochs, then early stopping).
* LeakyReLU (``activation="LeakyReLU"``, Keras' slope 0.3, where the builder has the
  argument; nnU-Net's choice too): the sigmoid head is a 1 x 1 convolution of the last
  decoder features. After ReLU those are >= 0, so when every head weight is negative the
  output can never rise above its bias, and nothing pushes a weight back above 0. A random
  initialisation draws that with chance 2^-C for a C-channel head: the 8-128 U-Net on fold 2
  of the accuracy benchmark (seed 2000) started with all 8 head weights negative and stayed
  at p <= sigmoid(bias) = 0.12 on every pixel, training Dice 0.000 for all 60 epochs. With
  LeakyReLU the same initial weights learn (negative features times negative weights raise
  the output): training Dice 0.09 after the first epoch, 0.29 after the second, where ReLU
  stays at 0.000 (tests/test_recipe_learns.py).
* Batch-norm momentum (``bn_momentum``): 1 - 1 / steps_per_epoch, within [0.9, 0.99], so the
  moving statistics average over about one epoch of batches. Keras' 0.99 remembers ~100 steps:
  after the ~200 steps of a short run the moving variance still carries ~15 % of its initial
  1.0, and the model in inference mode marked whole B-scans as fluid.
* Schedule length (TrainConfig.epochs, 60 epochs of one patch per training B-scan, Adam 1e-3
  with a warm-up epoch and cosine decay): 120 epochs fit the training patches better
  (last-epoch training Dice 0.74 against 0.67-0.70) but not the held-out patients (8-128 U-Net,
  folds 0 and 1 of the accuracy benchmark: pooled Dice 0.714 -> 0.709, per-image 0.618 ->
  0.592; bench/accuracy.py's ``ours_unet8_long``), at twice the cost. Swin-UNet 120
  (``NETWORK_EPOCHS``): at its learning rate of 3e-4 over 60 epochs its training Dice ended at
  0.33-0.53 and the validation Dice of fold 2 of the paper runs was still rising when the
  schedule ended (gain 0.019 over the last 10 epochs, last 0.449). Over 120 epochs (the pilot
  that set this value) that fold ended at 0.600 (best 0.629 at epoch 99, its last 20 epochs
  0.015 below the best before them: plateaued) and fold 0 at 0.534 (60 epochs: 0.390; last 20
  epochs 0.008 below), both with training Dice 0.48 over their last 10 epochs (60 epochs: 0.36
  on fold 2, 0.39 on fold 0). Fold 1, run after fold 0, over-fitted instead: 0.422 against
  0.450 over 60 epochs (best 0.488 at epoch 58, training Dice 0.56 over its last 10 epochs);
  fold 3 fell too (0.214 against 0.241) and fold 4 rose (0.369 against 0.302): pooled over
  the 88 B-scans 0.471 against 0.405 (results/README.md). A Swin-UNet epoch costs ~19 s on 2
  cores (a U-Net epoch ~33 s).
* Learning rate (``learning_rate``, Adam's peak after the warm-up epoch): 1e-3; 2e-3 collapsed
  to all-background. Swin-UNet 3e-4: at 1e-3 it output a near-constant map (training Dice
  0.02-0.09, what a constant scores on fluid-oversampled patches) for the first 21-37 epochs of
  every fold of the paper runs, and first learnt once the cosine had brought the rate down to
  3-7e-4 (results/folds/swin_unet__dice at commit 785412c); neither twice the width (32
  channels) nor float32 instead of mixed bfloat16 changed that in pilots on fold 0 (training
  Dice <= 0.09 over 18 and 26 epochs). At 3e-4 fold 0 passed training Dice 0.15 at epoch 19
  (1e-3: epoch 29) and ended at 0.41 (1e-3: 0.26), with pooled held-out Dice 0.39 (1e-3: 0.23)
  and its validation Dice plateaued (gain 0.007 over the last 10 epochs). Over all 5 folds at
  3e-4: training Dice 0.15 passed at epochs 13-22 (1e-3: 22-38), last-epoch training Dice
  0.33-0.53 (1e-3: 0.22-0.45), pooled held-out Dice 0.405 over the 88 B-scans (1e-3: 0.316;
  higher on 4 folds, lower on fold 4: 0.302 against 0.393), 4 of 5 folds plateaued over 60
  epochs (results/folds/swin_unet__dice at commit eab0db7). The CNN-based networks pass
  training Dice 0.15 within 1-6 epochs at 1e-3.
* Overlap losses over the whole batch (``per_image=False``; nnU-Net's batch Dice): a
  per-image Dice scores an all-zero output perfectly on every fluid-free B-scan (26 of 88),
  and the networks collapsed to it within ~5 epochs.
* Weighted BCE weight (``pos_weight``) from the training masks: ``bce_pos_weight``, the square
  root of the class ratio (~10 on Duke DME). The full ratio (~105) over-segments: the combined
  loss with it was at 0.33 pooled validation Dice after 18 epochs where the square root
  reached 0.64 (U-Net, fold 0, 24 epochs); the weighted BCE alone with weight 100 marked 85 %
  of a held-out patient's B-scans as fluid.
  Lower (weight 3, with the focal Tversky term at fp = fn = 0.5: bench/accuracy.py's
  ``ours_unet8_bal``) matched the predicted area to the truth on fold 0 of the accuracy
  benchmark but lost fluid: pooled Dice 0.707 -> 0.686, per-image Dice 0.632 -> 0.545.
* Output bias at the fluid prior (``prior_bias``): the head starts predicting the constant the
  (weighted) BCE would fit, instead of 0.5 everywhere (RetinaNet's prior initialisation). It
  keeps the predicted area near the truth: in 72-step runs of a narrow U-Net with the combined
  loss, held-out predicted area 0.6-1.9x the truth with it and 14-16x without it (two seeds
  each). The price is a slower start (training Dice ~0 for the first ~40 steps; the weighted
  BCE alone first marks fluid after ~60 steps), which a 60-epoch schedule does not notice.

Several fluid classes (a data folder that declares ``classes``, e.g. RETOUCH's IRF, SRF, PED):
the network ends in a softmax over C = background + the fluid classes, and the same rules
are applied per class, so that C = 1 gives exactly the numbers above:

* Overlap terms and the BCE without the background channel (``ignore_background=True``,
  nnU-Net's do_bg=False): background is ~98 % of the pixels, its Dice is ~0.99 whatever the
  network does, and it would dilute the mean over classes.
* BCE weight per channel (``bce_pos_weight(masks, n_labels)``): sqrt((1 - f_c) / f_c), f_c the
  pooled fraction of class c in the training masks, one-vs-rest as the binary weight.
* Output biases at the class priors (``fluid_prior(masks, pos_weight, n_labels)``): each
  class's weighted prior w f / (w f + 1 - f), normalised to sum 1, and bias_c = log p_c, so
  the softmax starts at those probabilities (the binary logit(p) is its two-class case).

Measured so far only on synthetic phantoms (tests/test_multiclass.py: 16 training B-scans of
64 x 96, a 3-level U-Net of 8-32 channels, no augmentation): held-out pooled Dice IRF 0.80,
SRF 0.61, PED 0.78 after 20 epochs (0.87, 0.75, 0.87 after 30). RETOUCH itself was not
available here, so these values are untuned on it.
"""
from __future__ import annotations

import inspect
import math

import keras
import numpy as np

from oct_seg.losses import LOSSES, pos_weight_from_fraction, pos_weight_from_masks
from oct_seg.models.registry import MODELS, PRESETS

CPU_FILTERS = [8, 16, 32, 64, 128]
# Swin-UNet's level-0 width: no narrower than 16, where it was checked to learn
SWIN_FILTERS_BEGIN = 16
# convolution activation of every builder that takes one (Keras' LeakyReLU, slope 0.3)
ACTIVATION = "LeakyReLU"
# Adam's peak learning rate (after the warm-up epoch); per network where it differs
LEARNING_RATE = 1e-3
NETWORK_LEARNING_RATE = {"swin_unet": 3e-4}
# epochs of the cosine schedule (one patch per training B-scan each); per network where it
# differs
EPOCHS = 60
NETWORK_EPOCHS = {"swin_unet": 120}

# builder kwargs of the recipe, per network (the user's model_kwargs override them)
NETWORK_KWARGS = {
    "unet": dict(filter_num=CPU_FILTERS),
    "att_unet": dict(filter_num=CPU_FILTERS),
    "r2_unet": dict(filter_num=CPU_FILTERS),
    "unet3plus": dict(filter_num_down=CPU_FILTERS),
    "transunet": dict(filter_num=CPU_FILTERS),   # transformer: the builder's Table 2 values
    # 3 levels, MLP 4x the level-0 width (Swin's ratio): with the builder's 4 levels and
    # MLP 512 (32x) Swin-UNet stayed below 0.06 training Dice for 24 epochs on real patches
    "swin_unet": dict(filter_num_begin=SWIN_FILTERS_BEGIN, depth=3, num_heads=[2, 4, 4],
                      window_size=[4, 2, 2], num_mlp=4 * SWIN_FILTERS_BEGIN),
}


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _network(model: str) -> str:
    """The builder name of a network or preset name."""
    return model if model in MODELS else PRESETS[model][0]


def learning_rate(model: str) -> float:
    """Adam's peak learning rate for ``model`` (a network or preset name) under the recipe:
    1e-3, Swin-UNet 3e-4 (module docstring)."""
    return NETWORK_LEARNING_RATE.get(_network(model), LEARNING_RATE)


def epochs(model: str) -> int:
    """The length of the cosine schedule for ``model`` (a network or preset name) under the
    recipe, in epochs of one patch per training B-scan: 60, Swin-UNet 120 (module
    docstring)."""
    return NETWORK_EPOCHS.get(_network(model), EPOCHS)


def network_kwargs(model: str, user: dict | None = None) -> dict:
    """Builder kwargs for ``model`` under the recipe: CPU widths, batch norm on and LeakyReLU
    (where the builder has them), then ``user``'s kwargs on top. Presets get only batch norm
    and LeakyReLU."""
    kwargs = dict(NETWORK_KWARGS.get(model, {}))  # a preset: its own widths
    builder = MODELS[_network(model)]
    if _accepts(builder, "batch_norm"):
        kwargs["batch_norm"] = True
    if _accepts(builder, "activation"):
        kwargs["activation"] = ACTIVATION
    kwargs.update(user or {})
    return kwargs


def bce_pos_weight(masks, n_labels: int = 1):
    """Fluid weight of the weighted BCE: sqrt((1 - f) / f), f the pooled fluid fraction.

    The weight (1 - f) / f that balances the classes exactly (~113 on Duke DME) moves the
    0.5 threshold to where fluid is merely ~1 % likely and over-segments (module docstring);
    the square root keeps the emphasis on the rare class that makes the BCE "weighted" while
    leaving the threshold usable. n_labels > 1 (masks of class ids 0..n_labels-1): a list of
    one weight per class, sqrt((1 - f_c) / f_c); ValueError when a class has no pixel.
    """
    if n_labels == 1:
        return math.sqrt(pos_weight_from_masks(masks))
    fractions = class_fractions(masks, n_labels)
    missing = [c for c in range(n_labels) if fractions[c] == 0]
    if missing:
        raise ValueError(f"class id(s) {missing} have no pixel in the training masks: no BCE "
                         "weight or prior can be derived (give pos_weight in loss_kwargs, or "
                         "training scans holding every class)")
    return [math.sqrt(pos_weight_from_fraction(f)) for f in fractions]


def class_fractions(masks, n_labels: int) -> np.ndarray:
    """Pooled fraction of the pixels of each class id 0..n_labels-1 over all masks, (n_labels,)."""
    counts = np.zeros(n_labels)
    for m in masks:
        counts += np.bincount(np.asarray(m).ravel(), minlength=n_labels)[:n_labels]
    if counts.sum() == 0:
        raise ValueError("masks are empty: no pixels to count")
    return counts / counts.sum()


def loss_kwargs(loss: str, user: dict | None, masks=None, n_labels: int = 1) -> dict:
    """Loss kwargs under the recipe: batch-level overlap terms (per_image=False), for
    n_labels > 1 no background channel (ignore_background=True) and, for losses with a BCE
    term, pos_weight = bce_pos_weight(masks, n_labels) (the loss's own default when masks is
    None); ``user``'s kwargs on top."""
    cls = LOSSES[loss]
    kwargs = {}
    if _accepts(cls, "per_image"):
        kwargs["per_image"] = False
    if n_labels > 1 and _accepts(cls, "ignore_background"):
        kwargs["ignore_background"] = True
    user = dict(user or {})
    if _accepts(cls, "pos_weight") and "pos_weight" not in user and masks is not None:
        kwargs["pos_weight"] = bce_pos_weight(masks, n_labels)
    kwargs.update(user)
    return kwargs


def bn_momentum(steps_per_epoch: int) -> float:
    """1 - 1 / steps_per_epoch clipped to [0.9, 0.99] (see the module docstring)."""
    return float(min(0.99, max(0.9, 1.0 - 1.0 / max(1, int(steps_per_epoch)))))


def fluid_prior(masks, pos_weight=1.0, n_labels: int = 1):
    """The constant probability that minimises a BCE with fluid weight ``pos_weight`` on
    ``masks``: w f / (w f + 1 - f), f the pooled fluid fraction (f itself for plain BCE).

    n_labels > 1: a list of n_labels class probabilities summing to 1, each class's
    w_c f_c / (w_c f_c + 1 - f_c) (pos_weight a scalar or one weight per class), normalised.
    """
    if n_labels > 1:
        f = class_fractions(masks, n_labels)
        w = np.broadcast_to(np.asarray(pos_weight, float), f.shape)
        prior = w * f / (w * f + 1.0 - f)
        return (prior / prior.sum()).tolist()
    total = sum(np.size(m) for m in masks)
    if total == 0:
        raise ValueError("masks are empty: no pixels to count")
    f = sum(int(np.count_nonzero(np.asarray(m) > 0)) for m in masks) / total
    return float(pos_weight * f / (pos_weight * f + 1.0 - f))


def output_convolutions(model) -> list:
    """The Conv2D layers of the network's output heads (oct_seg builders name them
    ``*_output*``: the final head and any deep-supervision heads)."""
    found = []

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            elif type(layer) is keras.layers.Conv2D and "_output" in layer.name:
                found.append(layer)

    walk(model)
    return found


def set_output_prior(model, probability) -> int:
    """Set every output head's bias so that it starts at ``probability``; returns how many
    heads were set. A float: one-channel (sigmoid) heads, bias logit(p). A sequence of C
    class probabilities (summing to 1): C-channel (softmax) heads, bias_c = log p_c."""
    p = np.asarray(probability, float)
    if not ((p > 0) & (p < 1)).all():
        raise ValueError(f"probabilities must be in (0, 1), got {probability}")
    if p.ndim == 0:
        bias = math.log(probability / (1.0 - probability))
    elif abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"class probabilities must sum to 1, got {p.sum():.6f}")
    else:
        bias = np.log(p)
    heads = [c for c in output_convolutions(model) if c.filters == p.size and c.use_bias]
    for conv in heads:
        kernel, b = conv.get_weights()
        conv.set_weights([kernel, np.full_like(b, bias)])
    return len(heads)
