"""tf.data input pipeline: size fitting, paper augmentation, Gaussian noise, batching.

Policy:

* Decode once, cache in memory: the caller passes decoded arrays (e.g. a ScanSet's images /
  masks); make_dataset fits each to ``image_size`` once (numpy/TF eager, before the pipeline)
  and builds ``from_tensor_slices`` of one stacked float32 image array and uint8 mask array
  (the 88 Duke scans at 512 x 512 take ~115 MB). Augmentation then runs per epoch in
  parallel ``map`` calls (AUTOTUNE, order kept), followed by batch and prefetch(AUTOTUNE).
* Size (``fit_to_size``): ``"resize"`` (the paper's choice, default) stretches to H x W without
  keeping the aspect ratio (496 x 768 -> 512 x 512), bilinear with antialiasing for images and
  nearest neighbour for masks. ``"pad"`` keeps the aspect ratio: scale so the scan fits inside
  H x W (same interpolations), then zero-pad evenly on both sides (mask padding = background).
* Training augmentation (``Augment``, defaults in brackets): rotation by U(-r, r) degrees
  [r = 10], shift by U(-s, s) of H and W [s = 0.1], random crop of a sub-image with side
  fraction U(z, 1) resized back to full size (= zoom in) [z = 0.8], horizontal flip with p = 0.5,
  all composed into ONE affine warp (ImageProjectiveTransformV3, bilinear, reflect fill) applied
  jointly to image and mask; the mask is thresholded at 0.5 afterwards so it stays in {0, 1}.
  Then intensity (image only): gamma exp(U(-g, g)) [g = log 1.25], contrast factor U(1-c, 1+c)
  about the scan's mean intensity before augmentation (computed once in numpy, so no
  run-to-run float differences from parallel reductions) [c = 0.2], brightness + U(-b, b) [b = 0.1], clipped to [0, 1];
  optional additive Gaussian noise of std U(0, n) per sample [n = 0: off], clipped. Drawing
  the std per sample (not one fixed std) shows the network clean and noisy B-scans alike, so
  it can learn to segment both (a network trained on clean Spectralis B-scans only marks no
  fluid at all on the noisy test condition; BENCHMARKS.md).
* Determinism: every random draw is stateless; the per-element seed is (a draw of
  ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``, element index), so each
  epoch differs, and two pipelines built with the same seed give the same batches: masks
  bit-identical, images identical up to float32 rounding (TensorFlow's time-limited graph
  optimiser may rewrite the map function differently between constructions on a busy machine,
  which was observed to change some pixels by 1 ulp, <= 1.2e-7).
* Noisy test condition (paper): ``add_gaussian_noise`` in numpy, seeded per image (by name or
  index), so anyone re-creates the same noisy images. With ``training=False`` and
  ``noise_std > 0`` make_dataset adds it at the scan's original size, before size fitting, with
  seed (seed, name) when ``names`` are given (as oct_seg.evaluate), else (seed, index).
  Clipping to [0, 1] lowers the realised std near 0 and 1.
* Masks: with ``n_labels=1`` (binary, the default) any non-zero mask value is fluid (y in
  {0, 1}, one channel); with ``n_labels=C > 1`` the mask values are class ids 0..C-1 and y is
  their one-hot encoding (C channels, for a softmax network). The warp interpolates the
  one-hot channels bilinearly and takes the largest again (one class per pixel, as the binary
  mask's 0.5 threshold).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Augment:
    """Training augmentation ranges (see module docstring). 0 disables a transform."""

    rotation: float = 10.0      # degrees, U(-rotation, rotation)
    shift: float = 0.1          # fraction of H / W, U(-shift, shift)
    crop: float = 0.8           # min crop side fraction; crop resized back (zoom <= 1/crop)
    flip: bool = True           # horizontal flip with p = 0.5
    brightness: float = 0.1     # additive, U(-b, b)
    contrast: float = 0.2       # factor U(1-c, 1+c) about the scan's mean intensity
    gamma: float = math.log(1.25)  # exponent exp(U(-g, g))
    noise: float = 0.0          # additive Gaussian noise, std U(0, noise) per sample (0: off)

    def __post_init__(self):
        if not 0.0 < self.crop <= 1.0:
            raise ValueError(f"crop must be in (0, 1], got {self.crop}")
        for field in ("rotation", "shift", "brightness", "contrast", "gamma", "noise"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")


GEOMETRY_ONLY = Augment(brightness=0.0, contrast=0.0, gamma=0.0)


def _seed_to_entropy(seed):
    if isinstance(seed, str):
        return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little")
    if isinstance(seed, (tuple, list)):
        return [_seed_to_entropy(s) for s in seed]
    if isinstance(seed, (int, np.integer)) and seed >= 0:
        return int(seed)
    raise ValueError(f"seed must be a non-negative int, a str (e.g. the scan name) or a tuple of those, got {seed!r}")


def add_gaussian_noise(image, std: float, seed) -> np.ndarray:
    """image + N(0, std^2) per pixel, clipped to [0, 1]; float32, same shape.

    std is in the [0, 1] intensity scale. seed: int, str (hashed with SHA-256, so a scan name
    gives the same noise on any machine) or a tuple of those, e.g. (seed, name).
    Clipping makes the realised std smaller than ``std`` where the image is near 0 or 1.
    """
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}")
    image = np.asarray(image, dtype=np.float32)
    if std == 0:
        return image.copy()
    rng = np.random.default_rng(np.random.SeedSequence(_seed_to_entropy(seed)))
    noisy = image + rng.normal(0.0, std, size=image.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def fit_to_size(image, size, policy: str = "resize", mask: bool = False) -> np.ndarray:
    """Fit a (H, W) or (H, W, C) array to size=(h, w) (see module docstring for the policies).

    mask=True uses nearest neighbour and keeps the dtype; images come back float32.
    """
    if policy not in ("resize", "pad"):
        raise ValueError(f"policy must be 'resize' or 'pad', got {policy!r}")
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be two positive ints, got {size}")
    arr = np.asarray(image)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected a (H, W) or (H, W, C) array, got shape {np.shape(image)}")
    out = _fit_batch(arr[None], (h, w), policy, mask)[0]
    return out[..., 0] if squeeze else out


def _fit_batch(arr, size, policy, mask):
    """fit_to_size for a batch (N, H, W, C) of equal-sized arrays."""
    h, w = size
    H, W = arr.shape[1:3]
    if policy == "resize":
        th, tw = h, w
    else:
        scale = min(h / H, w / W)
        th, tw = max(1, min(h, round(H * scale))), max(1, min(w, round(W * scale)))
    if (th, tw) == (H, W):
        out = arr if mask else arr.astype(np.float32)
    elif mask:
        out = tf.image.resize(arr, (th, tw), method="nearest").numpy().astype(arr.dtype)
    else:
        out = tf.image.resize(arr.astype(np.float32), (th, tw), method="bilinear", antialias=True).numpy()
    if not mask:
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if (th, tw) != (h, w):
        top, left = (h - th) // 2, (w - tw) // 2
        out = np.pad(out, ((0, 0), (top, h - th - top), (left, w - tw - left), (0, 0)))
    return out


def _fit_all(arrays, size, policy, mask):
    """Fit a list of (H, W) arrays of any sizes; one resize call per distinct shape."""
    size = tuple(int(s) for s in size)
    out = [None] * len(arrays)
    by_shape = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape, []).append(i)
    for rows in by_shape.values():
        fitted = _fit_batch(np.stack([arrays[i] for i in rows])[..., None], size, policy, mask)
        for i, f in zip(rows, fitted):
            out[i] = f
    return np.stack(out)


def _affine(seed, height, width, aug: Augment):
    """8-parameter output->input map of ImageProjectiveTransformV3 for one random draw."""
    seeds = tf.random.experimental.stateless_split(seed, num=7)
    u = [tf.random.stateless_uniform([], seeds[i], -1.0, 1.0) for i in range(6)]
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    theta = u[0] * (aug.rotation * math.pi / 180.0)
    tx, ty = u[1] * aug.shift * wf, u[2] * aug.shift * hf
    s = 1.0 - (u[3] + 1.0) / 2.0 * (1.0 - aug.crop)           # crop side fraction in [crop, 1]
    cx = (wf - 1.0) / 2.0 + u[4] * (1.0 - s) / 2.0 * wf      # crop centre inside the image
    cy = (hf - 1.0) / 2.0 + u[5] * (1.0 - s) / 2.0 * hf
    flip = tf.random.stateless_uniform([], seeds[6]) < (0.5 if aug.flip else 0.0)
    f = tf.where(flip, -1.0, 1.0)
    # forward: p_out = F(R (p_in - c)/s + centre + t) (+ flip offset); inverse below.
    x0 = (wf - 1.0) / 2.0
    y0 = (hf - 1.0) / 2.0
    cos, sin = tf.cos(theta), tf.sin(theta)
    # q = flip(p_out) - t - centre ; p_in = s R^T q + c ; flip(x) = f x + (1 - f)/2 (W - 1)
    qx0 = (1.0 - f) / 2.0 * (wf - 1.0) - tx - x0
    qy0 = -ty - y0
    a0, a1 = s * cos * f, s * sin
    b0, b1 = -s * sin * f, s * cos
    a2 = s * (cos * qx0 + sin * qy0) + cx
    b2 = s * (-sin * qx0 + cos * qy0) + cy
    return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])


def _augment(seed, x, y, mean, aug: Augment):
    """Jointly warp x (H, W, 1) and y (H, W, 1) or one-hot (H, W, C) then change x's intensity
    (contrast about ``mean``, the scan's precomputed mean); stateless, element-wise ops only
    after the warp."""
    height, width = tf.shape(x)[0], tf.shape(x)[1]
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    stack = tf.concat([x, y], axis=-1)[None]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=stack, transforms=_affine(seeds[0], height, width, aug)[None],
        output_shape=tf.stack([height, width]), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")[0]
    x = warped[..., :1]
    if y.shape[-1] == 1:
        y = tf.cast(warped[..., 1:] >= 0.5, tf.float32)
    else:
        y = tf.one_hot(tf.argmax(warped[..., 1:], axis=-1), y.shape[-1], dtype=tf.float32)
    if aug.gamma > 0:
        x = tf.pow(x, tf.exp(tf.random.stateless_uniform([], seeds[1], -aug.gamma, aug.gamma)))
    if aug.contrast > 0:
        factor = tf.random.stateless_uniform([], seeds[2], 1.0 - aug.contrast, 1.0 + aug.contrast)
        x = (x - mean) * factor + mean
    if aug.brightness > 0:
        x = x + tf.random.stateless_uniform([], seeds[3], -aug.brightness, aug.brightness)
    if aug.noise > 0:
        std = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(
            seeds[4], 1), 0.0, aug.noise)
        x = x + tf.random.stateless_normal(tf.shape(x), seeds[4], stddev=std)
    return tf.clip_by_value(x, 0.0, 1.0), y


def _labels(masks, n_labels: int):
    """Masks as the uint8 labels the pipeline stores: {0, 1} (non-zero = fluid) for
    n_labels == 1, else the class ids, checked to lie in 0..n_labels-1."""
    if int(n_labels) != n_labels or n_labels < 1:
        raise ValueError(f"n_labels must be a positive integer, got {n_labels!r}")
    if n_labels == 1:
        return [(m != 0).astype(np.uint8) for m in masks]
    for i, m in enumerate(masks):
        bad = np.unique(m[(m < 0) | (m >= n_labels)])
        if bad.size:
            raise ValueError(f"masks[{i}] holds class ids {bad[:5].tolist()} outside "
                             f"0..{n_labels - 1} (n_labels={n_labels})")
    return [m.astype(np.uint8) for m in masks]


def _target(labels, n_labels: int):
    """Stored uint8 labels (..., 1) -> the float32 target: as is for one channel, one-hot
    (..., n_labels) otherwise."""
    if n_labels == 1:
        return tf.cast(labels, tf.float32)
    return tf.one_hot(tf.cast(labels[..., 0], tf.int32), n_labels, dtype=tf.float32)


def _stack(arrays, what):
    if isinstance(arrays, np.ndarray) and arrays.ndim in (3, 4):
        arrays = list(arrays)
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError(f"no {what} given")
    for i, a in enumerate(arrays):
        if a.ndim == 3 and a.shape[-1] == 1:
            arrays[i] = a[..., 0]
        elif a.ndim != 2:
            raise ValueError(f"{what}[{i}] has shape {a.shape}; expected (H, W) or (H, W, 1)")
    return arrays


def make_dataset(images, masks, image_size=(512, 512), batch_size: int = 2, training: bool = False,
                 augment=True, noise_std: float = 0.0, seed: int = 0, shuffle=None,
                 drop_remainder: bool = False, policy: str = "resize", names=None,
                 n_labels: int = 1) -> tf.data.Dataset:
    """tf.data.Dataset of (x (B, h, w, 1) float32 [0, 1], y (B, h, w, n_labels) float32 {0, 1}).

    images / masks: sequences of (H, W) arrays (sizes may differ), images float in [0, 1],
    masks integer labels (n_labels 1: non-zero = fluid; else class ids, y one-hot).
    training=True applies ``augment`` (True for the default ``Augment()``, False for none, or
    an ``Augment``; its ``noise`` adds Gaussian noise). noise_std > 0 (training=False only)
    builds the seeded noisy test condition.
    shuffle: None -> same as training. masks=None yields x only. names: scan names; when
    given, the noisy test condition seeds each scan with (seed, name) (as
    oct_seg.evaluate does), else with (seed, index).
    """
    images = _stack(images, "images")
    if masks is not None:
        masks = _stack(masks, "masks")
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        for i, (a, b) in enumerate(zip(images, masks)):
            if a.shape != b.shape:
                raise ValueError(f"image {i} has shape {a.shape} but its mask {b.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if training and noise_std > 0:
        raise ValueError("noise_std is the noisy test condition (training=False); for noisy "
                         "training samples pass augment=Augment(noise=...)")
    if augment is True:
        augment = Augment()
    elif augment is False or augment is None:
        augment = None
    elif not isinstance(augment, Augment):
        raise TypeError(f"augment must be True, False or an Augment, got {type(augment).__name__}")
    for i, a in enumerate(images):
        if not (np.issubdtype(a.dtype, np.floating) and a.size and 0.0 <= a.min() and a.max() <= 1.0):
            raise ValueError(f"images[{i}] must be float in [0, 1] (use oct_seg.data.read_image)")
    if names is not None and len(names) != len(images):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    if not training and noise_std > 0:
        keys = [str(n) for n in names] if names is not None else range(len(images))
        images = [add_gaussian_noise(a, noise_std, (seed, k)) for k, a in zip(keys, images)]
    if policy not in ("resize", "pad"):
        raise ValueError(f"policy must be 'resize' or 'pad', got {policy!r}")
    x = _fit_all(images, image_size, policy, mask=False)
    means = x.mean(axis=(1, 2, 3), dtype=np.float64).astype(np.float32)
    tensors = (x, means)
    if masks is not None:
        y = _fit_all(_labels(masks, n_labels), image_size, policy, mask=True)
        tensors = (x, means, y)
    ds = tf.data.Dataset.from_tensor_slices(tensors).enumerate()
    if shuffle is None:
        shuffle = training
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if training and augment is not None:
        rand = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def apply(item, draw):
            index, data = item
            element_seed = tf.stack([draw, index])
            if masks is None:
                return _augment(element_seed, data[0], tf.zeros_like(data[0]), data[1], augment)[0]
            x_aug, y_aug = _augment(element_seed, data[0], _target(data[2], n_labels), data[1], augment)
            return x_aug, y_aug

        ds = tf.data.Dataset.zip(ds, rand).map(apply, num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        def plain(index, data):
            if masks is None:
                return data[0]
            return data[0], _target(data[2], n_labels)

        ds = ds.map(plain, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


def _pad_to_canvas(arrays, canvas):
    """Zero-pad (H, W) arrays, centred, to canvas (h, w) >= their size; one stacked array."""
    h, w = canvas
    out = []
    for a in arrays:
        top, left = (h - a.shape[0]) // 2, (w - a.shape[1]) // 2
        out.append(np.pad(a, ((top, h - a.shape[0] - top), (left, w - a.shape[1] - left))))
    return np.stack(out)[..., None]


def _crop_patch(seed, x, y, patch, foreground: float):
    """Crop a (ph, pw) patch of x (H, W, 1) and y (H, W, 1) or one-hot (H, W, C) jointly;
    stateless.

    With probability ``foreground`` (and if y holds fluid) the patch is placed so that one
    fluid pixel, drawn uniformly from all fluid pixels, lands at a uniformly random position
    inside it (then the patch is shifted back inside the canvas); otherwise its position is
    uniform over the canvas.
    """
    ph, pw = patch
    height, width = tf.shape(x)[0], tf.shape(x)[1]
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    channels = y.shape[-1]
    is_fluid = y[..., 0] > 0.5 if channels == 1 else y[..., 0] < 0.5  # one-hot: not background
    fluid = tf.cast(tf.where(is_fluid), tf.int32)                    # (N, 2) row, col
    n = tf.shape(fluid)[0]
    use_fg = (tf.random.stateless_uniform([], seeds[0]) < foreground) & (n > 0)
    pick = tf.gather(tf.concat([fluid, tf.zeros((1, 2), tf.int32)], 0),
                     tf.random.stateless_uniform([], seeds[1], 0, tf.maximum(n, 1), tf.int32))
    at = tf.random.stateless_uniform([2], seeds[2], 0, 2 ** 30, tf.int32) % tf.stack([ph, pw])
    free = tf.stack([height - ph, width - pw]) + 1
    uniform = tf.random.stateless_uniform([2], seeds[3], 0, 2 ** 30, tf.int32) % free
    corner = tf.where(use_fg, tf.clip_by_value(pick - at, 0, free - 1), uniform)
    x = tf.slice(x, tf.concat([corner, [0]], 0), [ph, pw, 1])
    y = tf.slice(y, tf.concat([corner, [0]], 0), [ph, pw, channels])
    return tf.ensure_shape(x, (ph, pw, 1)), tf.ensure_shape(y, (ph, pw, channels))


def make_patch_dataset(images, masks, patch_size=(256, 768), batch_size: int = 4,
                       augment=True, foreground: float = 0.5,
                       seed: int = 0, n_labels: int = 1) -> tf.data.Dataset:
    """Endless-epoch training set of native-resolution patches: x (B, ph, pw, 1), y
    (B, ph, pw, n_labels) (one-hot class ids for n_labels > 1, as make_dataset).

    The B-scans are never resized, so a pixel keeps the scanner's spacing (a 1-pixel cyst
    stays one pixel). Per scan and epoch: the whole scan (zero-padded, centred, to a common
    canvas of max(H, ph) x max(W, pw)) is warped and its intensity changed by ``augment``
    (``Augment``, as ``make_dataset``), then a ``patch_size`` patch is cut from it; with
    probability ``foreground`` the patch is centred near a random fluid pixel (nnU-Net's
    foreground oversampling: on Duke DME fluid is ~0.9 % of the pixels and a uniform
    256 x 768 strip of a 496 x 768 scan misses it on ~35 % of the fluid scans), otherwise
    placed uniformly. One epoch = one patch per scan, shuffled. Augmentation, cropping and
    noise draws are stateless, seeded by (seed, epoch draw, scan index) as in make_dataset.

    images: sequence of float (H, W) in [0, 1] (sizes may differ); masks: (H, W) integer
    labels (n_labels 1: non-zero = fluid; else class ids; "fluid" for the foreground
    placement is then any class but 0). patch_size (ph, pw): the network's input size during
    training (multiples of its size multiple). The default (256, 768) is a full-width strip
    of a Spectralis B-scan: the network sees both lateral ends, so it can learn where the
    graders' central annotation window lies.
    """
    images, masks = _stack(images, "images"), _stack(masks, "masks")
    if len(masks) != len(images):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    for i, (a, b) in enumerate(zip(images, masks)):
        if a.shape != b.shape:
            raise ValueError(f"image {i} has shape {a.shape} but its mask {b.shape}")
        if not (np.issubdtype(a.dtype, np.floating) and a.size and 0.0 <= a.min() and a.max() <= 1.0):
            raise ValueError(f"images[{i}] must be float in [0, 1] (use oct_seg.data.read_image)")
    ph, pw = (int(s) for s in patch_size)
    if ph < 1 or pw < 1:
        raise ValueError(f"patch_size must be two positive ints, got {patch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= foreground <= 1.0:
        raise ValueError(f"foreground must be a probability in [0, 1], got {foreground}")
    if augment is True:
        augment = Augment()
    elif augment is False or augment is None:
        augment = Augment(rotation=0, shift=0, crop=1.0, flip=False, brightness=0, contrast=0,
                          gamma=0)
    elif not isinstance(augment, Augment):
        raise TypeError(f"augment must be True, False or an Augment, got {type(augment).__name__}")
    canvas = (max(ph, max(a.shape[0] for a in images)), max(pw, max(a.shape[1] for a in images)))
    x = _pad_to_canvas([a.astype(np.float32) for a in images], canvas)
    y = _pad_to_canvas(_labels(masks, n_labels), canvas)
    means = np.array([a.mean(dtype=np.float64) for a in images], np.float32)
    ds = tf.data.Dataset.from_tensor_slices((x, means, y)).enumerate()
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    rand = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def sample(item, draw):
        index, (image, mean, mask) = item
        seeds = tf.random.experimental.stateless_split(tf.stack([draw, index]), num=2)
        image, mask = _augment(seeds[0], image, _target(mask, n_labels), mean, augment)
        return _crop_patch(seeds[1], image, mask, (ph, pw), foreground)

    ds = tf.data.Dataset.zip(ds, rand).map(sample, num_parallel_calls=AUTOTUNE,
                                           deterministic=True)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
