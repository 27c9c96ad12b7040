"""Convolutional building blocks shared by every oct_seg network.

All tensors are channels-last, (B, H, W, C). Blocks are functions that add named Keras layers
to a functional graph; the few custom layers (`SizeCheck`, `UpsampleBilinear`) are registered
so that saved models reload without custom_objects.

Structure follows keras-unet-collection 0.1.13 (layer_utils.py) so that parameter counts match
the networks compared by Darooei et al. 2023; the code is independent and never uses `eval`.
"""
import keras
import tensorflow as tf
from keras import layers

# name (lower case) -> factory(name=...) returning a fresh Keras layer.
_ACTIVATIONS = {
    "relu": lambda name=None: layers.ReLU(name=name),
    "leakyrelu": lambda name=None: layers.LeakyReLU(name=name),
    # shared_axes=(1, 2): one slope per channel, so the layer works for any H, W
    # (keras-unet-collection uses one slope per pixel, which needs a fixed input size).
    "prelu": lambda name=None: layers.PReLU(shared_axes=(1, 2), name=name),
    "elu": lambda name=None: layers.ELU(name=name),
    "gelu": lambda name=None: layers.Activation("gelu", name=name),
    "silu": lambda name=None: layers.Activation("silu", name=name),
    "swish": lambda name=None: layers.Activation("silu", name=name),
    "tanh": lambda name=None: layers.Activation("tanh", name=name),
    "sigmoid": lambda name=None: layers.Activation("sigmoid", name=name),
    "softmax": lambda name=None: layers.Softmax(name=name),
}
ACTIVATION_NAMES = ("ReLU", "LeakyReLU", "PReLU", "ELU", "GELU", "SiLU", "Swish", "Tanh",
                    "Sigmoid", "Softmax")

POOL_OPTIONS = (True, False, "max", "ave")
UNPOOL_OPTIONS = (True, False, "bilinear", "nearest")


def get_activation(name_or_callable):
    """Return a factory `f(name=None) -> keras Layer` for an activation.

    `name_or_callable` is one of ACTIVATION_NAMES (case-insensitive, e.g. "ReLU" or "relu") or a
    callable such as a Keras layer class (called as `f(name=...)`). Unknown names raise
    ValueError listing the valid names.
    """
    if callable(name_or_callable):
        return name_or_callable
    if isinstance(name_or_callable, str):
        factory = _ACTIVATIONS.get(name_or_callable.lower())
        if factory is not None:
            return factory
    raise ValueError(
        f"unknown activation {name_or_callable!r}; use one of {', '.join(ACTIVATION_NAMES)} "
        "(case-insensitive) or a callable returning a Keras layer"
    )


def check_pool(pool):
    """Raise ValueError unless `pool` is True, False, "max" or "ave"."""
    if not any(pool is p if isinstance(p, bool) else pool == p for p in POOL_OPTIONS):
        raise ValueError(f"pool must be True/'max' (max pooling), 'ave' (average pooling) or "
                         f"False (strided convolution); got {pool!r}")


def check_unpool(unpool):
    """Raise ValueError unless `unpool` is True, False, "bilinear" or "nearest"."""
    if not any(unpool is p if isinstance(p, bool) else unpool == p for p in UNPOOL_OPTIONS):
        raise ValueError(f"unpool must be True/'bilinear', 'nearest' or False (transposed "
                         f"convolution); got {unpool!r}")


@keras.saving.register_keras_serializable(package="oct_seg")
class UpsampleBilinear(layers.Layer):
    """Upsample (B, H, W, C) -> (B, factor*H, factor*W, C) with tf.image.resize.

    Works with unknown (None) H and W, unlike keras.layers.UpSampling2D(interpolation=
    "bilinear") in Keras 3.14-3.15. interpolation: "bilinear" or "nearest" (half-pixel
    centres, identical to UpSampling2D for integer factors).
    """

    def __init__(self, factor=2, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer; got {factor!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest'; got {interpolation!r}")
        self.factor = int(factor)
        self.interpolation = interpolation

    def call(self, x):
        size = tf.shape(x)[1:3] * self.factor
        y = tf.image.resize(x, size, method=self.interpolation)
        return tf.cast(y, x.dtype)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h * self.factor,
                None if w is None else w * self.factor, c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor,
                "interpolation": self.interpolation}


def _nearest_valid(n, multiple):
    lower = (n // multiple) * multiple
    upper = lower + multiple
    return f"{lower} or {upper}" if lower >= multiple else f"{upper}"


@keras.saving.register_keras_serializable(package="oct_seg")
class SizeCheck(layers.Layer):
    """Identity layer that states and enforces a network's input-size requirement.

    multiple: H and W must be positive multiples of it (2**(levels-1) for a U-Net).
    fixed_size: (H, W) the network only accepts (transformers with learned position
        embeddings), or None.
    context: text naming the network in error messages, e.g. "unet with 5 levels".
    A static shape that does not fit raises ValueError when the layer is built or called; a
    dynamic shape gets a runtime tf.debugging check. `oct_seg.inference` reads the config to
    pad or resize arbitrary B-scans.
    """

    def __init__(self, multiple=1, fixed_size=None, context="this model", **kwargs):
        super().__init__(**kwargs)
        if int(multiple) != multiple or multiple < 1:
            raise ValueError(f"multiple must be a positive integer; got {multiple!r}")
        self.multiple = int(multiple)
        self.fixed_size = None if fixed_size is None else tuple(int(s) for s in fixed_size)
        self.context = str(context)

    def _problem(self, h, w):
        """Message if a known (static) h or w does not fit, else None; None dims are skipped."""
        if self.fixed_size is not None:
            if any(n is not None and n != f for n, f in zip((h, w), self.fixed_size)):
                return (f"{self.context} needs a {self.fixed_size[0]} x {self.fixed_size[1]} "
                        f"input; got {h} x {w} (resize the image, or use "
                        "oct_seg.inference.predict_image which does it)")
            return None
        bad = [n for n in (h, w) if n is not None and (n % self.multiple or n < self.multiple)]
        if bad:
            hints = "; ".join(f"nearest valid to {n}: {_nearest_valid(n, self.multiple)}"
                              for n in dict.fromkeys(bad))
            return (f"{self.context} needs height and width divisible by {self.multiple}; "
                    f"got {h} x {w} ({hints})")
        return None

    def build(self, input_shape):
        problem = self._problem(input_shape[1], input_shape[2])
        if problem:
            raise ValueError(problem)
        super().build(input_shape)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        problem = self._problem(h, w)
        if problem:
            raise ValueError(problem)
        if h is not None and w is not None:
            return x
        shape = tf.shape(x)
        if self.fixed_size is not None:
            fh, fw = self.fixed_size
            msg = f"{self.context} needs a {fh} x {fw} input"
            checks = [tf.debugging.assert_equal(shape[1:3], tf.constant([fh, fw], tf.int32),
                                                message=msg)]
        else:
            msg = (f"{self.context} needs height and width divisible by {self.multiple} "
                   "(pad the image, or use oct_seg.inference.predict_image which does it)")
            checks = [tf.debugging.assert_equal(shape[1:3] % self.multiple, 0, message=msg),
                      tf.debugging.assert_greater_equal(shape[1:3], self.multiple, message=msg)]
        with tf.control_dependencies(checks):
            return tf.identity(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple,
                "fixed_size": None if self.fixed_size is None else list(self.fixed_size),
                "context": self.context}


def validate_common(filter_num, n_labels, pool=True, unpool=True, activation="ReLU",
                    output_activation="Sigmoid", arg="filter_num"):
    """Raise ValueError for arguments every builder shares."""
    if not isinstance(filter_num, (list, tuple)) or len(filter_num) < 2:
        raise ValueError(f"{arg} must be a list of at least 2 positive ints (one per level, e.g. "
                         f"[64, 128, 256, 512, 1024]); got {filter_num!r}")
    if any(int(f) != f or f < 1 for f in filter_num):
        raise ValueError(f"{arg} entries must be positive integers; got {filter_num!r}")
    if int(n_labels) != n_labels or n_labels < 1:
        raise ValueError(f"n_labels must be a positive integer (1 = binary fluid mask); "
                         f"got {n_labels!r}")
    check_pool(pool)
    check_unpool(unpool)
    get_activation(activation)
    _output_activation(output_activation, n_labels)


def sized_input(input_size, multiple, context, name, advice):
    """Input layer of a builder, passed through the SizeCheck of its size multiple.

    input_size: (H, W, C), H and W int or None (any size); multiple: what H and W must be
    positive multiples of; context: the network as SizeCheck's messages name it; name: prefix
    of the two layers; advice: what a static size that does not fit can change instead (e.g.
    "this size allows at most 3 levels"). Returns (inputs, checked tensor). Raises ValueError
    before any layer is made, naming the size, the nearest valid ones and the advice.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (height, width, channels), e.g. (512, 512, 1) or "
                         f"(None, None, 1); got {input_size!r}")
    checker = SizeCheck(multiple, context=context, name=f"{name}_size_check")
    problem = checker._problem(*input_size[:2])
    if problem:
        raise ValueError(f"{problem}; {advice}, or use input_size=(None, None, {input_size[2]}) "
                         "for any-size input")
    inputs = keras.Input(shape=tuple(input_size), name=f"{name}_input")
    return inputs, checker(inputs)


def input_with_check(input_size, levels, context):
    """sized_input for a U-Net with `levels` resolution levels (multiple 2**(levels-1)); a size
    that does not fit is told how many levels it allows."""
    known = [n for n in input_size[:2] if n is not None]
    most = 1
    while known and all(n % 2 ** most == 0 and n >= 2 ** most for n in known):
        most += 1
    return sized_input(input_size, 2 ** (levels - 1), f"{context} with {levels} levels", context,
                       f"this size allows at most {most} levels")


def conv_stack(x, filters, stack_num=2, activation="ReLU", batch_norm=False, kernel_size=3,
               name="conv_stack"):
    """(Conv2D 'same' -> [BatchNorm] -> activation) x stack_num; keeps H, W.

    The convolution has no bias when batch_norm is True (the BN shift replaces it).
    """
    act = get_activation(activation)
    for i in range(stack_num):
        x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=not batch_norm,
                          name=f"{name}_{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_{i}_bn")(x)
        x = act(name=f"{name}_{i}_activation")(x)
    return x


def encode_step(x, filters, pool=True, pool_size=2, activation="ReLU", batch_norm=False,
                name="encode"):
    """Downsample H, W by `pool_size`.

    pool: True/"max" MaxPooling2D, "ave" AveragePooling2D, False strided Conv2D (kernel =
    stride = pool_size, `filters` channels, no bias with BN) -> [BN] -> activation.
    """
    check_pool(pool)
    if pool is True or pool == "max":
        return layers.MaxPooling2D(pool_size, name=f"{name}_maxpool")(x)
    if pool == "ave":
        return layers.AveragePooling2D(pool_size, name=f"{name}_avepool")(x)
    x = layers.Conv2D(filters, pool_size, strides=pool_size, padding="valid",
                      use_bias=not batch_norm, name=f"{name}_stride_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return get_activation(activation)(name=f"{name}_activation")(x)


def decode_step(x, filters, unpool=True, pool_size=2, activation="ReLU", batch_norm=False,
                kernel_size=3, name="decode"):
    """Upsample H, W by `pool_size`.

    unpool: True/"bilinear" or "nearest" -> UpsampleBilinear (no weights); False ->
    Conv2DTranspose(filters, kernel_size, stride pool_size, with bias as in
    keras-unet-collection) -> [BN] -> activation (activation=None skips it).
    """
    check_unpool(unpool)
    if unpool is not False:
        mode = "nearest" if unpool == "nearest" else "bilinear"
        return UpsampleBilinear(pool_size, mode, name=f"{name}_unpool")(x)
    x = layers.Conv2DTranspose(filters, kernel_size, strides=pool_size, padding="same",
                               name=f"{name}_trans_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if activation is not None:
        x = get_activation(activation)(name=f"{name}_activation")(x)
    return x


def _output_activation(output_activation, n_labels):
    """Layer factory for the head activation, or None for logits."""
    if output_activation is None or (isinstance(output_activation, str)
                                     and output_activation.lower() in ("linear", "none")):
        return None
    if isinstance(output_activation, str) and output_activation.lower() == "softmax":
        if n_labels == 1:
            raise ValueError("output_activation='Softmax' with n_labels=1 outputs a constant 1; "
                             "use 'Sigmoid' for a binary mask (or n_labels >= 2 with Softmax)")
        return lambda name=None: layers.Softmax(name=name, dtype="float32")
    if isinstance(output_activation, str) and output_activation.lower() == "sigmoid":
        return lambda name=None: layers.Activation("sigmoid", name=name, dtype="float32")
    raise ValueError(f"output_activation must be 'Sigmoid', 'Softmax' or None/'linear' (logits); "
                     f"got {output_activation!r}")


def output_head(x, n_labels=1, output_activation="Sigmoid", name="output", kernel_size=1):
    """Conv2D(n_labels, kernel_size) -> activation. Output (B, H, W, n_labels), float32.

    output_activation: "Sigmoid" (per-label probabilities; n_labels > 1 = multi-label),
    "Softmax" (classes sum to 1, needs n_labels >= 2), None or "linear" (logits).
    """
    if int(n_labels) != n_labels or n_labels < 1:
        raise ValueError(f"n_labels must be a positive integer; got {n_labels!r}")
    act = _output_activation(output_activation, n_labels)
    x = layers.Conv2D(n_labels, kernel_size, padding="same", name=name,
                      dtype="float32" if act is None else None)(x)
    if act is not None:
        x = act(name=f"{name}_activation")(x)
    return x


def attention_gate(x, g, channels, activation="ReLU", attention="add", name="att"):
    """Additive attention gate (Oktay et al. 2018) as in keras-unet-collection.

    x: skip features (B, H, W, Cx); g: gating (decoder) features at the same H, W.
    theta = Conv1x1(x), phi = Conv1x1(g) with `channels` filters; combined by `attention`
    ("add" = additive attention of the paper, "multiply"); `activation` (sigma_1, default
    ReLU); psi = Conv1x1 -> 1 channel -> sigmoid = coefficient alpha in [0, 1]; returns x * alpha.
    """
    if attention not in ("add", "multiply"):
        raise ValueError(f"attention must be 'add' or 'multiply'; got {attention!r}")
    theta = layers.Conv2D(channels, 1, name=f"{name}_theta_x")(x)
    phi = layers.Conv2D(channels, 1, name=f"{name}_phi_g")(g)
    combine = layers.Add if attention == "add" else layers.Multiply
    q = combine(name=f"{name}_{attention}")([theta, phi])
    q = get_activation(activation)(name=f"{name}_activation")(q)
    psi = layers.Conv2D(1, 1, name=f"{name}_psi_f")(q)
    alpha = layers.Activation("sigmoid", name=f"{name}_sigmoid")(psi)
    return layers.Multiply(name=f"{name}_masking")([x, alpha])


def recurrent_residual_block(x, filters, stack_num=2, recur_num=2, activation="ReLU",
                             batch_norm=False, kernel_size=3, name="rr"):
    """Recurrent-residual convolution unit of R2U-Net (Alom et al. 2018).

    A 1x1 conv projects x to `filters` channels (the residual path r). Then `stack_num`
    recurrent layers, each: h = act(BN(conv(m))); recur_num times h = act(BN(conv(h + m)));
    m = h. Returns m + r. As in keras-unet-collection each recurrence step has its own
    convolution weights (with bias, also under BN).
    """
    if int(recur_num) != recur_num or recur_num < 0:
        raise ValueError(f"recur_num must be an integer >= 0; got {recur_num!r}")
    act = get_activation(activation)
    skip = layers.Conv2D(filters, 1, name=f"{name}_conv")(x)
    main = skip
    for i in range(stack_num):
        h = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv{i}")(main)
        if batch_norm:
            h = layers.BatchNormalization(name=f"{name}_bn{i}")(h)
        h = act(name=f"{name}_activation{i}")(h)
        for j in range(recur_num):
            h = layers.Add(name=f"{name}_add{i}_{j}")([h, main])
            h = layers.Conv2D(filters, kernel_size, padding="same", name=f"{name}_conv{i}_{j}")(h)
            if batch_norm:
                h = layers.BatchNormalization(name=f"{name}_bn{i}_{j}")(h)
            h = act(name=f"{name}_activation{i}_{j}")(h)
        main = h
    return layers.Add(name=f"{name}_add")([main, skip])


def deep_supervision_head(x, n_labels, scale, unpool=True, output_activation="Sigmoid",
                          name="sup"):
    """UNet 3+ side output: Conv3x3 -> n_labels, upsample by `scale`, activation.

    Output (B, scale*H, scale*W, n_labels) at the input resolution of the network.
    """
    act = _output_activation(output_activation, n_labels)
    x = layers.Conv2D(n_labels, 3, padding="same", name=f"{name}_conv")(x)
    x = decode_step(x, n_labels, unpool, pool_size=scale, activation=None, batch_norm=False,
                    name=name)
    if act is not None:
        return act(name=f"{name}_activation")(x)
    return layers.Activation("linear", dtype="float32", name=f"{name}_logits")(x)
