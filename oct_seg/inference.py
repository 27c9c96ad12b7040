"""Any-size inference: probability maps at the B-scan's own H x W for every oct_seg network.

A network states its input requirement in its `SizeCheck` layer (oct_seg.models.blocks):
`multiple` (H, W must be multiples of it) and optionally `fixed_size` (H, W it accepts).
`predict_image` meets the requirement by reflect-padding or by resizing, predicts, and undoes
the padding / resizing, so a 496 x 768 Spectralis B-scan gives a 496 x 768 map.
"""
import weakref

import keras
import numpy as np

from oct_seg.models.blocks import SizeCheck

_ANY_SIZE_TWINS = weakref.WeakKeyDictionary()


def _walk_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)


def input_requirements(model, multiple=None):
    """Return (multiple: int, fixed_hw: (H, W) or None) read from the model's SizeCheck layer.

    A model without SizeCheck (not built by oct_seg, e.g. keras-unet-collection's) whose input
    has a fixed height and width returns (1, (H, W)): images are resized to it. Otherwise pass
    `multiple` explicitly; it is then returned with fixed_hw None. Raises ValueError when
    neither is available.
    """
    checks = [layer for layer in _walk_layers(model) if isinstance(layer, SizeCheck)]
    if checks:
        return checks[0].multiple, checks[0].fixed_size
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else ()
    if multiple is None and len(shape) == 4 and None not in shape[1:3]:
        return 1, (int(shape[1]), int(shape[2]))
    if multiple is None:
        raise ValueError(f"model {model.name!r} has no SizeCheck layer (it was not built by "
                         "oct_seg); pass multiple=... (e.g. 16 for a 5-level U-Net)")
    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"multiple must be a positive integer; got {multiple!r}")
    return int(multiple), None


def _as_batch(image, channels):
    """(H, W) | (H, W, C) | (N, H, W) | (N, H, W, C) -> float32 (N, H, W, C), is_single."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif image.dtype == bool:
        image = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
        if image.size and (np.nanmin(image) < -1e-3 or np.nanmax(image) > 1 + 1e-3):
            raise ValueError(f"float images must be in [0, 1]; got values in "
                             f"[{np.nanmin(image):g}, {np.nanmax(image):g}] (divide by 255 for "
                             "8-bit data, or pass the uint8 array)")
    else:
        raise TypeError(f"image must be uint8 (scaled by 1/255) or float in [0, 1]; "
                        f"got dtype {image.dtype}")
    if image.ndim == 2:
        return image[None, :, :, None], True
    if image.ndim == 3 and image.shape[-1] == channels:
        return image[None], True
    if image.ndim == 3:
        return image[..., None], False
    if image.ndim == 4 and image.shape[-1] == channels:
        return image, False
    raise ValueError(f"image must be (H, W), (H, W, {channels}), (N, H, W) or "
                     f"(N, H, W, {channels}); got shape {image.shape}")


def _any_size_twin(model):
    """The same network with an (None, None, C) input, sharing the current weights."""
    twin = _ANY_SIZE_TWINS.get(model)
    if twin is None:
        config = model.get_config()
        for layer in config["layers"]:
            if layer["class_name"] == "InputLayer":
                shape = list(layer["config"]["batch_shape"])
                layer["config"]["batch_shape"] = [shape[0], None, None] + shape[3:]
        twin = model.__class__.from_config(config)
        _ANY_SIZE_TWINS[model] = twin
    twin.set_weights(model.get_weights())
    return twin


def _resize(x, hw):
    return keras.ops.convert_to_numpy(
        keras.ops.image.resize(x, tuple(hw), interpolation="bilinear", antialias=True))


def predict_image(model, image, batch_size=1, mode="auto", multiple=None, tta=False):
    """Probability map of an OCT B-scan (or a batch) at its own height and width.

    model: a Keras model, or a sequence of models (an ensemble, e.g. the fold models of a
    cross-validation run): their probability maps are averaged (each model meets its own
    input requirement).
    tta: also predict the left-right mirrored B-scan and average it, mirrored back, with the
    direct prediction (test-time augmentation; 2x the time). Left-right is the one flip that
    keeps an OCT B-scan anatomically plausible (the retina stays on top); the networks are
    trained with it (oct_seg.data.pipeline.Augment.flip).

    image: (H, W), (H, W, C), (N, H, W) or (N, H, W, C); float in [0, 1] or uint8 (divided by
    255). C is the model's input channels (1 for grey B-scans).
    mode: how to meet the model's input requirement (see input_requirements):
      "pad"    reflect-pad H, W up to the next multiple (centred), predict, crop back. A model
               built with a static input size is run through an any-size copy of itself.
      "resize" bilinear-resize to the model's size (its fixed_size, else its static input
               H, W), predict, resize the probabilities back bilinearly.
      "auto"   (default) "resize" for fixed-size networks and networks built with a static
               input size (they were trained on images of that size, e.g. the (512, 512)
               resized B-scans of oct_seg.data.pipeline), otherwise "pad".
    multiple: only for models without a SizeCheck layer.
    For a deep-supervision model (several outputs) the last (final) output is used.
    Returns float32 (H, W, n_labels) for one image, (N, H, W, n_labels) for a batch.
    """
    if mode not in ("auto", "pad", "resize"):
        raise ValueError(f"mode must be 'auto', 'pad' or 'resize'; got {mode!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("model is an empty sequence; pass a model or a list of models")
    channels = {tuple(m.inputs[0].shape)[-1] for m in models}
    if len(channels) > 1:
        raise ValueError(f"the models of an ensemble take different input channels {channels}")
    x, single = _as_batch(image, channels.pop())
    total = 0.0
    for net in models:
        for flip in ((False, True) if tta else (False,)):
            if flip:
                total = total + _predict_batch(net, x[:, :, ::-1], batch_size, mode,
                                               multiple)[:, :, ::-1]
            else:
                total = total + _predict_batch(net, x, batch_size, mode, multiple)
    y = (total / (len(models) * (2 if tta else 1))).astype(np.float32)
    return y[0] if single else y


def _predict_batch(model, x, batch_size, mode, multiple):
    """(N, H, W, n_labels) probabilities of one model for a float32 batch x (N, H, W, C)."""
    mult, fixed = input_requirements(model, multiple)
    in_shape = tuple(model.inputs[0].shape)
    x = np.ascontiguousarray(x)
    h, w = x.shape[1:3]
    static = None if None in in_shape[1:3] else tuple(in_shape[1:3])
    target = fixed or static
    if mode == "pad" and fixed is not None:
        raise ValueError(f"model {model.name!r} only accepts {fixed[0]} x {fixed[1]} inputs; "
                         "use mode='resize' or 'auto'")
    if mode == "resize" and target is None:
        raise ValueError(f"model {model.name!r} accepts any size (multiple of {mult}); it has no "
                         "size to resize to: use mode='pad' or 'auto'")
    use_resize = mode == "resize" or (mode == "auto" and target is not None)
    net = model
    if use_resize:
        if (h, w) != target:
            x = _resize(x, target)
    else:
        ph, pw = (-h) % mult, (-w) % mult
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                   mode="reflect" if max(ph, pw) < min(h, w) else "symmetric")
        if static is not None and x.shape[1:3] != static:
            net = _any_size_twin(model)
    outs = []
    for start in range(0, len(x), int(batch_size)):
        # predict_on_batch runs Keras' compiled predict function: graph mode lets TensorFlow
        # fuse convolution + batch norm + activation, ~25 % less CPU than an eager call on
        # a U-Net (bench/clinic.py), with the same probabilities
        y = net.predict_on_batch(x[start:start + int(batch_size)])
        if isinstance(y, (list, tuple)):
            y = y[-1]
        outs.append(np.asarray(y, dtype=np.float32))
    y = np.concatenate(outs, axis=0)
    if use_resize:
        if y.shape[1:3] != (h, w):
            # bilinear weights are a convex combination: clip the float round-off only
            y = np.clip(_resize(y, (h, w)), y.min(), y.max())
    else:
        top, left = ph // 2, pw // 2
        y = y[:, top:top + h, left:left + w]
    return y

