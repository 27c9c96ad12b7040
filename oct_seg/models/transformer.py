"""Transformer layers for TransUNet and Swin-UNet.

All token layers work on *token grids* of shape (B, h, w, C) (channels last), never on flat
sequences, so the grid size is read at call time and a network built from them accepts any
input size its SizeCheck allows. Shapes below: B batch, h x w token grid, C channels.

Layers (all registered in package "oct_seg", complete get_config):
  PatchEmbedding        (B, H, W, Cin) -> (B, H/ph, W/pw, embed_dim); Conv2D kernel = stride = patch.
  PositionEmbedding     learned (gh, gw, C) table for the build-time grid, bilinearly resized
                        (half-pixel centres, like ViT fine-tuning at another resolution) when the
                        call-time grid differs; identity at the build grid.
  TransformerEncoderBlock  pre-LN ViT block: x + MHA(LN(x)); x + MLP(LN(x)).
  WindowAttention       multi-head self-attention inside windows with a learned relative
                        position bias ((2ws-1)^2, heads) and an optional boolean window mask.
  SwinTransformerBlock  (shifted) window attention + MLP, pre-LN, residuals; the shift mask is
                        computed from the dynamic grid size inside call.
  PatchMerging          (B, h, w, C) -> (B, h/2, w/2, out_dim): 2x2 neighbours concatenated,
                        LayerNorm, linear (default out_dim = 2C), as in Swin.
  PatchExpanding        (B, h, w, C) -> (B, rh*h, rw*w, out_dim): linear to rh*rw*out_dim,
                        depth-to-space, LayerNorm (default out_dim = C // 2).
Functions: window_partition, window_reverse, shifted_window_mask (used in call()).
"""
import numpy as np
import keras
import tensorflow as tf
from keras import layers, ops

_PACKAGE = "oct_seg"


def _pair(value, what):
    """(a, b) from an int or a 2-sequence of positive ints."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}") from None
    if a < 1 or b < 1:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return a, b


def _positive_int(value, what):
    """int(value) for a positive integer (not bool), else ValueError naming `what`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}")
    return int(value)


def _activation(name):
    """Activation function from a Keras name, case-insensitive ("GELU" -> keras gelu)."""
    if name is None:
        return keras.activations.linear
    try:
        return keras.activations.get(str(name).lower())
    except (ValueError, TypeError):
        raise ValueError(
            f"unknown mlp_activation {name!r}; use a keras.activations name such as 'GELU', "
            "'ReLU', 'swish'") from None


def window_partition(x, window_size):
    """(B, h, w, C) -> (B * nW, ws, ws, C), windows in row-major order; ws must divide h, w."""
    shape = ops.shape(x)
    h, w, c = shape[1], shape[2], x.shape[-1]
    ws = window_size
    x = ops.reshape(x, (-1, h // ws, ws, w // ws, ws, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, ws, ws, c))


def window_reverse(windows, window_size, h, w):
    """Inverse of window_partition: (B * nW, ws, ws, C) -> (B, h, w, C)."""
    ws = window_size
    c = windows.shape[-1]
    x = ops.reshape(windows, (-1, h // ws, w // ws, ws, ws, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, h, w, c))


def shifted_window_mask(h, w, window_size, shift_size):
    """Boolean (nW, ws*ws, ws*ws): True where two tokens of a window of the *rolled* grid
    (rolled by -shift_size on both axes) may attend, i.e. they come from the same region of the
    original grid (the Swin 3 x 3 region labelling: rows < h-ws, h-ws..h-s-1, >= h-s; same for
    columns). h, w may be dynamic scalars."""
    ws, s = window_size, shift_size

    def labels(n):
        i = ops.arange(n)
        return ops.cast(i >= n - ws, "int32") + ops.cast(i >= n - s, "int32")

    region = 3 * labels(h)[:, None] + labels(w)[None, :]
    region = window_partition(region[None, :, :, None], ws)
    region = ops.reshape(region, (-1, ws * ws))
    return ops.equal(region[:, :, None], region[:, None, :])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PatchEmbedding(layers.Layer):
    """Non-overlapping patches -> embed_dim tokens: Conv2D(kernel = stride = patch_size).

    (B, H, W, Cin) -> (B, H/ph, W/pw, embed_dim). H, W must be multiples of the patch (the
    builders' SizeCheck guarantees it). normalize=True adds a LayerNorm (Swin style); its
    projection bias then starts uniform in +-1/sqrt(ph*pw*Cin) (PyTorch's Conv2d default, as in
    the Swin-UNet reference) instead of Keras' zeros: with zeros, an exactly uniform image region
    (the augmentation's zero fill, a black border) gives tokens with zero variance across
    channels, every LayerNorm on them multiplies the gradient by 1/sqrt(epsilon) = 316, and
    after the ~14 norms of a 3-level Swin-UNet the gradient overflows to inf (3 of 5 Duke folds
    went NaN in their first epoch)."""

    def __init__(self, patch_size, embed_dim, normalize=False, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = _pair(patch_size, "patch_size")
        self.embed_dim = int(embed_dim)
        self.normalize = bool(normalize)
        self.proj = layers.Conv2D(self.embed_dim, self.patch_size, strides=self.patch_size,
                                  padding="valid", name="proj",
                                  dtype=self.dtype_policy)
        self.norm = layers.LayerNormalization(epsilon=1e-5, name="norm",
                                              dtype=self.dtype_policy) if normalize else None

    def build(self, input_shape):
        self.proj.build(input_shape)
        if self.norm is not None:
            self.norm.build(tuple(input_shape[:-1]) + (self.embed_dim,))
            bound = (self.patch_size[0] * self.patch_size[1] * int(input_shape[-1])) ** -0.5
            self.proj.bias.assign(
                keras.initializers.RandomUniform(-bound, bound)(self.proj.bias.shape))

    def call(self, x):
        x = self.proj(x)
        return self.norm(x) if self.norm is not None else x

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        ph, pw = self.patch_size
        return (b, None if h is None else h // ph, None if w is None else w // pw, self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=list(self.patch_size), embed_dim=self.embed_dim,
                      normalize=self.normalize)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionEmbedding(layers.Layer):
    """Adds a learned position embedding to a token grid (B, h, w, C).

    The table has shape (gh, gw, C) for grid_size = (gh, gw) (default: the build-time grid,
    which must then be static). When the call-time grid differs, the table is resized
    bilinearly (half-pixel centres) to (h, w); at the build grid the table is used as is."""

    def __init__(self, grid_size=None, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = None if grid_size is None else _pair(grid_size, "grid_size")

    def build(self, input_shape):
        if self.grid_size is None:
            if input_shape[1] is None or input_shape[2] is None:
                raise ValueError(
                    "PositionEmbedding needs grid_size=(gh, gw) when the token grid is dynamic "
                    f"(input shape {tuple(input_shape)})")
            self.grid_size = (int(input_shape[1]), int(input_shape[2]))
        self.embedding = self.add_weight(
            name="embedding", shape=self.grid_size + (int(input_shape[-1]),),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, x):
        static_hw = tuple(x.shape[1:3])
        table = self.embedding
        if static_hw != self.grid_size:  # resize returns float32 whatever the input dtype
            table = tf.image.resize(table, tf.shape(x)[1:3], method="bilinear")
        return x + ops.cast(table, x.dtype)[None]

    def get_config(self):
        config = super().get_config()
        config.update(grid_size=None if self.grid_size is None else list(self.grid_size))
        return config


class _MLP(layers.Layer):
    """Dense(num_mlp) -> activation -> dropout -> Dense(C) -> dropout (built inside blocks)."""

    def __init__(self, num_mlp, activation="GELU", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_mlp = int(num_mlp)
        self.activation_name = activation
        self.act = _activation(activation)
        self.fc1 = layers.Dense(self.num_mlp, name="fc1", dtype=self.dtype_policy)
        self.drop = layers.Dropout(dropout, dtype=self.dtype_policy)
        self.fc2 = None

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2 = layers.Dense(int(input_shape[-1]), name="fc2", dtype=self.dtype_policy)
        self.fc2.build(tuple(input_shape[:-1]) + (self.num_mlp,))

    def call(self, x, training=None):
        x = self.drop(self.act(self.fc1(x)), training=training)
        return self.drop(self.fc2(x), training=training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TransformerEncoderBlock(layers.Layer):
    """Pre-LN ViT encoder block on (B, h, w, C) grids or (B, N, C) sequences (same shape out).

    y = x + Dropout(MHA(LN(x), LN(x)));  out = y + MLP(LN(y)), MLP = Dense(num_mlp) ->
    mlp_activation -> Dense(C). key_dim defaults to C // num_heads (standard ViT); the
    keras-unet-collection TransUNet uses key_dim = C per head."""

    def __init__(self, num_heads, num_mlp, key_dim=None, mlp_activation="GELU", dropout=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.num_mlp = int(num_mlp)
        self.key_dim = None if key_dim is None else int(key_dim)
        self.mlp_activation = mlp_activation
        self.dropout = float(dropout)
        if self.num_heads < 1 or self.num_mlp < 1:
            raise ValueError(f"num_heads and num_mlp must be >= 1, got {num_heads}, {num_mlp}")
        self.norm1 = layers.LayerNormalization(epsilon=1e-6, name="norm1", dtype=self.dtype_policy)
        self.norm2 = layers.LayerNormalization(epsilon=1e-6, name="norm2", dtype=self.dtype_policy)
        self.drop = layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.mlp = _MLP(self.num_mlp, mlp_activation, self.dropout, name="mlp",
                        dtype=self.dtype_policy)
        self.attn = None

    def build(self, input_shape):
        dim = int(input_shape[-1])
        key_dim = self.key_dim
        if key_dim is None:
            if dim % self.num_heads:
                raise ValueError(f"embedding dim {dim} is not divisible by num_heads "
                                 f"{self.num_heads}; pick num_heads dividing {dim} or key_dim")
            key_dim = dim // self.num_heads
        seq_shape = (input_shape[0], None, dim)
        self.attn = layers.MultiHeadAttention(self.num_heads, key_dim, dropout=self.dropout,
                                              name="attn", dtype=self.dtype_policy)
        self.attn.build(seq_shape, seq_shape)
        for sub in (self.norm1, self.norm2, self.mlp):
            sub.build(seq_shape)

    def call(self, x, training=None):
        grid = len(x.shape) == 4
        if grid:
            shape = ops.shape(x)
            x = ops.reshape(x, (shape[0], -1, x.shape[-1]))
        y = self.norm1(x)
        x = x + self.drop(self.attn(y, y, training=training), training=training)
        x = x + self.mlp(self.norm2(x), training=training)
        if grid:
            x = ops.reshape(x, (shape[0], shape[1], shape[2], x.shape[-1]))
        return x

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, num_mlp=self.num_mlp, key_dim=self.key_dim,
                      mlp_activation=self.mlp_activation, dropout=self.dropout)
        return config


def relative_position_index(window_size):
    """(N, N) int index into the ((2ws-1)^2) bias table, N = ws*ws: entry [i, j] encodes the
    displacement (row_i - row_j, col_i - col_j) of query i and key j."""
    ws = window_size
    rows, cols = np.divmod(np.arange(ws * ws), ws)
    d_row = rows[:, None] - rows[None, :] + ws - 1
    d_col = cols[:, None] - cols[None, :] + ws - 1
    return (d_row * (2 * ws - 1) + d_col).astype("int32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WindowAttention(layers.Layer):
    """Multi-head self-attention within windows with a relative position bias.

    call(x, attn_mask=None): x (B*nW, N, C) with N = window_size**2; attn_mask boolean
    (nW, N, N), True = allowed. softmax(q k^T / sqrt(C/heads) + bias) v, then a linear
    projection. The bias table ((2ws-1)^2, num_heads) is learned."""

    def __init__(self, num_heads, window_size, qkv_bias=True, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.window_size = int(window_size)
        self.qkv_bias = bool(qkv_bias)
        self.dropout = float(dropout)
        self.index = relative_position_index(self.window_size)
        self.drop = layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.qkv = None
        self.proj = None

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if dim % self.num_heads:
            raise ValueError(f"window attention dim {dim} is not divisible by num_heads "
                             f"{self.num_heads}")
        ws = self.window_size
        self.bias_table = self.add_weight(
            name="relative_position_bias", shape=((2 * ws - 1) ** 2, self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.qkv = layers.Dense(3 * dim, use_bias=self.qkv_bias, name="qkv",
                                dtype=self.dtype_policy)
        self.qkv.build(input_shape)
        self.proj = layers.Dense(dim, name="proj", dtype=self.dtype_policy)
        self.proj.build(input_shape)

    def call(self, x, attn_mask=None, training=None):
        n, c = self.window_size ** 2, x.shape[-1]
        heads = self.num_heads
        qkv = ops.reshape(self.qkv(x), (-1, n, 3, heads, c // heads))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, B', heads, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (c // heads) ** -0.5
        bias = ops.take(self.bias_table, ops.reshape(self.index, (-1,)), axis=0)
        bias = ops.transpose(ops.reshape(bias, (n, n, heads)), (2, 0, 1))
        logits = logits + ops.cast(bias, logits.dtype)[None]
        if attn_mask is not None:
            n_windows = ops.shape(attn_mask)[0]
            logits = ops.reshape(logits, (-1, n_windows, heads, n, n))
            neg = ops.cast(-1e9, logits.dtype)
            logits = ops.where(attn_mask[None, :, None], logits, neg)
            logits = ops.reshape(logits, (-1, heads, n, n))
        weights = self.drop(ops.softmax(logits, axis=-1), training=training)
        out = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))
        return self.proj(ops.reshape(out, (-1, n, c)))

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, window_size=self.window_size,
                      qkv_bias=self.qkv_bias, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SwinTransformerBlock(layers.Layer):
    """Swin block on a token grid (B, h, w, C) -> same shape.

    y = x + roll_back(WindowAttention(windows(roll(LN(x), -shift)), shift mask));
    out = y + MLP(LN(y)). window_size must divide h and w (checked by the builders' SizeCheck);
    shift_size = 0 gives plain window attention, 0 < shift_size < window_size the shifted
    variant. Grid size is read at call time, so any admissible grid works."""

    def __init__(self, num_heads, window_size, shift_size=0, num_mlp=512,
                 mlp_activation="GELU", qkv_bias=True, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.window_size = int(window_size)
        self.shift_size = int(shift_size)
        self.num_mlp = int(num_mlp)
        self.mlp_activation = mlp_activation
        self.qkv_bias = bool(qkv_bias)
        self.dropout = float(dropout)
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f"shift_size must be in [0, window_size={self.window_size}), "
                             f"got {shift_size}")
        self.norm1 = layers.LayerNormalization(epsilon=1e-5, name="norm1", dtype=self.dtype_policy)
        self.norm2 = layers.LayerNormalization(epsilon=1e-5, name="norm2", dtype=self.dtype_policy)
        self.attn = WindowAttention(self.num_heads, self.window_size, self.qkv_bias,
                                    self.dropout, name="attn", dtype=self.dtype_policy)
        self.mlp = _MLP(self.num_mlp, mlp_activation, self.dropout, name="mlp",
                        dtype=self.dtype_policy)
        self.drop = layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.attn.build((None, self.window_size ** 2, int(input_shape[-1])))

    def call(self, x, training=None):
        shape = ops.shape(x)
        h, w, c = shape[1], shape[2], x.shape[-1]
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x)
        if s:
            y = ops.roll(y, shift=(-s, -s), axis=(1, 2))
        windows = ops.reshape(window_partition(y, ws), (-1, ws * ws, c))
        mask = shifted_window_mask(h, w, ws, s) if s else None
        windows = self.attn(windows, attn_mask=mask, training=training)
        y = window_reverse(ops.reshape(windows, (-1, ws, ws, c)), ws, h, w)
        if s:
            y = ops.roll(y, shift=(s, s), axis=(1, 2))
        x = x + self.drop(y, training=training)
        return x + self.mlp(self.norm2(x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, window_size=self.window_size,
                      shift_size=self.shift_size, num_mlp=self.num_mlp,
                      mlp_activation=self.mlp_activation, qkv_bias=self.qkv_bias,
                      dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PatchMerging(layers.Layer):
    """Swin downsampling: (B, h, w, C) -> (B, h/2, w/2, out_dim), default out_dim = 2C.

    Channels of the 2x2 neighbourhood are concatenated in the order x[0::2, 0::2],
    x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] (4C), layer-normalised and projected
    without bias. h and w must be even."""

    def __init__(self, out_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.out_dim = None if out_dim is None else int(out_dim)
        self.norm = layers.LayerNormalization(epsilon=1e-5, name="norm", dtype=self.dtype_policy)
        self.reduction = None

    def build(self, input_shape):
        dim = int(input_shape[-1])
        out_dim = self.out_dim or 2 * dim
        self.norm.build((None, None, None, 4 * dim))
        self.reduction = layers.Dense(out_dim, use_bias=False, name="reduction",
                                      dtype=self.dtype_policy)
        self.reduction.build((None, None, None, 4 * dim))

    def call(self, x):
        shape = ops.shape(x)
        c = x.shape[-1]
        x = ops.reshape(x, (-1, shape[1] // 2, 2, shape[2] // 2, 2, c))
        # axes (B, i, a, j, b, C) -> (B, i, j, b, a, C): channel block index = 2*b + a
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))
        x = ops.reshape(x, (-1, shape[1] // 2, shape[2] // 2, 4 * c))
        return self.reduction(self.norm(x))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        half = lambda n: None if n is None else n // 2  # noqa: E731
        return (b, half(h), half(w), self.out_dim or 2 * c)

    def get_config(self):
        config = super().get_config()
        config.update(out_dim=self.out_dim)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PatchExpanding(layers.Layer):
    """Swin upsampling: (B, h, w, C) -> (B, rh*h, rw*w, out_dim), default out_dim = C // 2.

    Linear (no bias) to rh*rw*out_dim channels, depth-to-space (output pixel (rh*i + a,
    rw*j + b) takes channel block a*rw + b of token (i, j)), then LayerNorm."""

    def __init__(self, rate=2, out_dim=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _pair(rate, "rate")
        self.out_dim = None if out_dim is None else int(out_dim)
        self.norm = layers.LayerNormalization(epsilon=1e-5, name="norm", dtype=self.dtype_policy)
        self.expand = None

    def _out_dim(self, dim):
        out_dim = self.out_dim or dim // 2
        if out_dim < 1:
            raise ValueError(f"PatchExpanding: output dim must be >= 1 (input dim {dim})")
        return out_dim

    def build(self, input_shape):
        out_dim = self._out_dim(int(input_shape[-1]))
        rh, rw = self.rate
        self.expand = layers.Dense(rh * rw * out_dim, use_bias=False, name="expand",
                                   dtype=self.dtype_policy)
        self.expand.build(input_shape)
        self.norm.build((None, None, None, out_dim))

    def call(self, x):
        shape = ops.shape(x)
        rh, rw = self.rate
        out_dim = self._out_dim(x.shape[-1])
        x = ops.reshape(self.expand(x), (-1, shape[1], shape[2], rh, rw, out_dim))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        x = ops.reshape(x, (-1, shape[1] * rh, shape[2] * rw, out_dim))
        return self.norm(x)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        rh, rw = self.rate
        return (b, None if h is None else h * rh, None if w is None else w * rw,
                self._out_dim(c))

    def get_config(self):
        config = super().get_config()
        config.update(rate=list(self.rate), out_dim=self.out_dim)
        return config
