"""Transformer layers against independent numpy references and hand-computed cases."""
import numpy as np
import pytest
import keras
from scipy.special import erf

from oct_seg.models.transformer import (PatchEmbedding, PatchExpanding, PatchMerging,
                                        PositionEmbedding, SwinTransformerBlock,
                                        TransformerEncoderBlock, WindowAttention,
                                        shifted_window_mask, window_partition, window_reverse)

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype("float32")


# ---------------------------------------------------------------- numpy references
def np_layer_norm(x, layer):
    gamma, beta = (w.numpy() for w in (layer.gamma, layer.beta))
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta


def np_dense(x, layer):
    y = x @ layer.kernel.numpy()
    return y + layer.bias.numpy() if layer.bias is not None else y


def np_gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_mlp(x, mlp):
    return np_dense(np_gelu(np_dense(x, mlp.fc1)), mlp.fc2)


def np_windows(x, ws):
    """(h, w, C) -> list of windows (ws*ws, C), row-major window order, by explicit loops."""
    h, w, _ = x.shape
    return [x[i:i + ws, j:j + ws].reshape(ws * ws, -1)
            for i in range(0, h, ws) for j in range(0, w, ws)]


def np_window_attention(win, layer, allowed=None):
    """win (N, C) one window; allowed (N, N) bool. Explicit per-head loop and (dy, dx) bias."""
    n, c = win.shape
    heads = layer.num_heads
    d = c // heads
    ws = layer.window_size
    table = layer.bias_table.numpy()
    qkv = np_dense(win, layer.qkv)
    q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    out = np.zeros((n, c), "float64")
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        logits = q[:, sl] @ k[:, sl].T / np.sqrt(d)
        for a in range(n):
            for b in range(n):
                dy = a // ws - b // ws + ws - 1
                dx = a % ws - b % ws + ws - 1
                logits[a, b] += table[dy * (2 * ws - 1) + dx, hd]
        if allowed is not None:
            logits = np.where(allowed, logits, -np.inf)
        out[:, sl] = np_softmax(logits) @ v[:, sl]
    return np_dense(out, layer.proj)


def np_swin_block(x, block):
    """x (h, w, C) -> (h, w, C), the Swin block written with loops and a wrap-based mask."""
    h, w, c = x.shape
    ws, s = block.window_size, block.shift_size
    y = np.roll(np_layer_norm(x, block.norm1), (-s, -s), axis=(0, 1))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # a rolled token came across the wrap iff its rolled index is >= size - shift
    wrapped = np.stack([rows >= h - s if s else rows < 0, cols >= w - s if s else cols < 0], -1)
    out = np.zeros_like(y)
    for k, (win, wr) in enumerate(zip(np_windows(y, ws), np_windows(wrapped, ws))):
        allowed = (wr[:, None, :] == wr[None, :, :]).all(-1)
        i, j = divmod(k, w // ws)
        out[i * ws:(i + 1) * ws, j * ws:(j + 1) * ws] = np_window_attention(
            win, block.attn, allowed).reshape(ws, ws, c)
    x = x + np.roll(out, (s, s), axis=(0, 1))
    return x + np_mlp(np_layer_norm(x, block.norm2), block.mlp)


def build(layer, shape):
    """Run the layer once on a symbolic input of `shape` (batch excluded) to build it."""
    layer(keras.Input(shape))
    return layer


# ---------------------------------------------------------------- window helpers
def test_window_partition_matches_loops_and_reverses():
    x = rand(2, 6, 8, 3)
    win = np.asarray(window_partition(x, 2))
    assert win.shape == (2 * 12, 2, 2, 3)
    expected = [wi.reshape(2, 2, 3) for b in range(2) for wi in np_windows(x[b], 2)]
    np.testing.assert_array_equal(win, np.stack(expected))
    np.testing.assert_array_equal(np.asarray(window_reverse(win, 2, 6, 8)), x)


def test_shift_mask_hand_case():
    # 4 x 4 grid, 2 x 2 windows, shift 1: rolled row/col 3 came across the wrap.
    mask = np.asarray(shifted_window_mask(4, 4, 2, 1))
    full = np.ones((4, 4), bool)
    eye = np.eye(4, dtype=bool)
    # window (0,1): tokens (0,2) (0,3) (1,2) (1,3); column 3 wrapped -> {0, 2} and {1, 3}
    cols = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], bool)
    # window (1,0): tokens (2,0) (2,1) (3,0) (3,1); row 3 wrapped -> {0, 1} and {2, 3}
    rows = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool)
    np.testing.assert_array_equal(mask, np.stack([full, cols, rows, eye]))


@pytest.mark.parametrize("h, w, ws, s", [(8, 12, 4, 2), (6, 6, 3, 1), (4, 8, 2, 1)])
def test_shift_mask_blocks_exactly_cross_region_pairs(h, w, ws, s):
    mask = np.asarray(shifted_window_mask(h, w, ws, s))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    wrapped = np.stack([rows >= h - s, cols >= w - s], -1)
    expected = [(wr[:, None] == wr[None, :]).all(-1) for wr in np_windows(wrapped, ws)]
    np.testing.assert_array_equal(mask, np.stack(expected))


# ---------------------------------------------------------------- embeddings
def test_patch_embedding_is_patchwise_linear():
    layer = build(PatchEmbedding((2, 3), 5), (4, 6, 2))
    x = rand(1, 4, 6, 2)
    y = np.asarray(layer(x))
    assert y.shape == (1, 2, 2, 5)
    kernel, bias = layer.proj.kernel.numpy(), layer.proj.bias.numpy()
    for i in range(2):
        for j in range(2):
            patch = x[0, 2 * i:2 * i + 2, 3 * j:3 * j + 3]
            ref = np.einsum("abc,abcd->d", patch, kernel) + bias
            np.testing.assert_allclose(y[0, i, j], ref, atol=1e-5)


def test_position_embedding_identity_at_build_size_and_bilinear_elsewhere():
    layer = build(PositionEmbedding(), (2, 2, 3))
    table = layer.embedding.numpy()
    x = rand(2, 2, 2, 3)
    np.testing.assert_array_equal(np.asarray(layer(x)), x + table)
    # 2 -> 4 with half-pixel centres: sample points -0.25, 0.25, 0.75, 1.25 (clamped)
    weights = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    expected = np.einsum("ia,jb,abc->ijc", weights, weights, table)
    z = np.zeros((1, 4, 4, 3), "float32")
    np.testing.assert_allclose(np.asarray(layer(z))[0], expected, atol=1e-6)


def test_position_embedding_dynamic_grid():
    inp = keras.Input((None, None, 3))
    layer = PositionEmbedding(grid_size=(2, 2))
    model = keras.Model(inp, layer(inp))
    x = rand(1, 2, 2, 3)
    np.testing.assert_allclose(np.asarray(model(x)), x + layer.embedding.numpy(), atol=1e-6)
    assert model(np.zeros((1, 3, 5, 3), "float32")).shape == (1, 3, 5, 3)
    with pytest.raises(ValueError, match="grid_size"):
        PositionEmbedding()(keras.Input((None, None, 3)))


# ---------------------------------------------------------------- attention blocks
def test_transformer_encoder_block_matches_numpy():
    block = build(TransformerEncoderBlock(num_heads=2, num_mlp=12, key_dim=3), (2, 3, 4))
    x = rand(2, 2, 3, 4)
    y = np.asarray(block(x))
    attn = block.attn
    wq, bq = attn._query_dense.kernel.numpy(), attn._query_dense.bias.numpy()
    wk, bk = attn._key_dense.kernel.numpy(), attn._key_dense.bias.numpy()
    wv, bv = attn._value_dense.kernel.numpy(), attn._value_dense.bias.numpy()
    wo, bo = attn._output_dense.kernel.numpy(), attn._output_dense.bias.numpy()
    for b in range(2):
        seq = x[b].reshape(6, 4)
        n1 = np_layer_norm(seq, block.norm1)
        out = np.zeros((6, 4))
        for hd in range(2):
            q = n1 @ wq[:, hd] + bq[hd]
            k = n1 @ wk[:, hd] + bk[hd]
            v = n1 @ wv[:, hd] + bv[hd]
            out += np_softmax(q @ k.T / np.sqrt(3)) @ v @ wo[hd]
        seq = seq + out + bo
        seq = seq + np_mlp(np_layer_norm(seq, block.norm2), block.mlp)
        np.testing.assert_allclose(y[b], seq.reshape(2, 3, 4), atol=1e-4)
    # sequences (B, N, C) are accepted too, with the same result
    np.testing.assert_allclose(np.asarray(block(x.reshape(2, 6, 4))), y.reshape(2, 6, 4),
                               atol=1e-5)


def test_window_attention_matches_numpy_with_mask():
    layer = build(WindowAttention(num_heads=2, window_size=2), (4, 6))
    layer.bias_table.assign(rand(9, 2))  # non-trivial bias so its indexing is tested
    x = rand(3, 4, 6)
    mask = np.stack([np.ones((4, 4), bool), np.eye(4, dtype=bool), RNG.random((4, 4)) < 0.5])
    mask |= np.eye(4, dtype=bool)
    y = np.asarray(layer(x, attn_mask=mask))
    for k in range(3):
        np.testing.assert_allclose(y[k], np_window_attention(x[k], layer, mask[k]), atol=1e-4)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_matches_numpy(shift):
    block = build(SwinTransformerBlock(num_heads=2, window_size=4, shift_size=shift, num_mlp=8),
                  (8, 12, 4))
    block.attn.bias_table.assign(rand(49, 2))
    x = rand(2, 8, 12, 4)
    y = np.asarray(block(x))
    for b in range(2):
        np.testing.assert_allclose(y[b], np_swin_block(x[b], block), atol=1e-4)


def test_swin_block_dynamic_grid_in_model():
    inp = keras.Input((None, None, 4))
    block = SwinTransformerBlock(num_heads=2, window_size=2, shift_size=1, num_mlp=8)
    model = keras.Model(inp, block(inp))
    x = rand(1, 4, 6, 4)
    np.testing.assert_allclose(np.asarray(model(x))[0], np_swin_block(x[0], block), atol=1e-4)


# ---------------------------------------------------------------- merging / expanding
def test_patch_merging_matches_numpy():
    layer = build(PatchMerging(), (4, 6, 3))
    x = rand(2, 4, 6, 3)
    y = np.asarray(layer(x))
    assert y.shape == (2, 2, 3, 6)
    cat = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                          x[:, 1::2, 1::2]], -1)
    ref = np_layer_norm(cat, layer.norm) @ layer.reduction.kernel.numpy()
    np.testing.assert_allclose(y, ref, atol=1e-5)
    assert build(PatchMerging(out_dim=5), (4, 4, 3))(x[:, :, :4]).shape == (2, 2, 2, 5)


@pytest.mark.parametrize("rate, out_dim, expect_c", [(2, None, 3), ((2, 3), 4, 4)])
def test_patch_expanding_matches_numpy(rate, out_dim, expect_c):
    layer = build(PatchExpanding(rate, out_dim), (2, 3, 6))
    x = rand(1, 2, 3, 6)
    y = np.asarray(layer(x))
    rh, rw = (rate, rate) if isinstance(rate, int) else rate
    assert y.shape == (1, 2 * rh, 3 * rw, expect_c)
    lin = x[0] @ layer.expand.kernel.numpy()
    ref = np.zeros((2 * rh, 3 * rw, expect_c))
    for i in range(2):
        for j in range(3):
            for a in range(rh):
                for b in range(rw):
                    block = lin[i, j, (a * rw + b) * expect_c:(a * rw + b + 1) * expect_c]
                    ref[rh * i + a, rw * j + b] = block
    np.testing.assert_allclose(y[0], np_layer_norm(ref, layer.norm), atol=1e-5)


# ---------------------------------------------------------------- config / errors
LAYERS = [
    (lambda: PatchEmbedding((2, 2), 6, normalize=True), (4, 4, 3)),
    (lambda: PositionEmbedding(grid_size=(2, 2)), (2, 2, 3)),
    (lambda: TransformerEncoderBlock(2, 8, key_dim=5, mlp_activation="ReLU", dropout=0.1),
     (2, 2, 4)),
    (lambda: WindowAttention(2, 2, qkv_bias=False), (4, 4)),
    (lambda: SwinTransformerBlock(2, 2, 1, 8, mlp_activation="swish"), (4, 4, 4)),
    (lambda: PatchMerging(out_dim=7), (4, 4, 3)),
    (lambda: PatchExpanding((2, 1), out_dim=5), (2, 2, 4)),
]


@pytest.mark.parametrize("make, shape", LAYERS)
def test_config_round_trip(make, shape):
    layer = build(make(), shape)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    build(clone, shape)
    clone.set_weights(layer.get_weights())
    x = rand(2, *shape)
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)), atol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="shift_size"):
        SwinTransformerBlock(2, 4, shift_size=4)
    with pytest.raises(ValueError, match="mlp_activation"):
        TransformerEncoderBlock(2, 8, mlp_activation="nope")
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbedding(0, 4)
    with pytest.raises(ValueError, match="divisible"):
        build(WindowAttention(3, 2), (4, 4))
