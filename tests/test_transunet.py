"""TransUNet: shared model tests, the paper's Table 2 default, tokens, any size."""
import numpy as np
import pytest
from model_tester import ModelTester

from oct_seg.models.blocks import SizeCheck
from oct_seg.models.transformer import PatchEmbedding, PositionEmbedding, TransformerEncoderBlock
from oct_seg.models.transunet import build_transunet

TINY = dict(filter_num=[4, 8, 16], stack_num_down=1, stack_num_up=1, embed_dim=16, num_mlp=32,
            num_heads=2, num_transformer=1, patch_size=(2, 2))


class TestTransUNet(ModelTester):
    builder = staticmethod(build_transunet)
    kwargs = TINY


def layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def expected_params(filters, stack_down, stack_up, embed, mlp, heads, blocks, patch, grid,
                    in_ch=1, n_labels=1):
    """Parameter count of the documented architecture, from layer formulas."""
    def conv(cin, cout, k=3):
        return k * k * cin * cout + cout

    total, prev = 0, in_ch
    for f in filters:  # encoder
        for _ in range(stack_down):
            total, prev = total + conv(prev, f), f
    deep = filters[-1]
    e = embed
    total += patch * patch * deep * e + e + grid * grid * e  # patch + position embedding
    attention = 3 * (e * heads * e + heads * e) + heads * e * e + e  # key_dim = embed per head
    total += blocks * (4 * e + attention + e * mlp + mlp + mlp * e + e)
    total += 2 * e + e * deep + deep  # final LayerNorm, projection back to the deepest map
    for f in filters[-2::-1]:  # decoder
        total += conv(prev, f) + conv(2 * f, f) + (stack_up - 1) * conv(f, f)
        prev = f
    return total + filters[0] * n_labels + n_labels


def test_default_is_paper_table2():
    model = build_transunet()
    assert model.input_shape == (None, 512, 512, 1)
    assert model.output_shape == (None, 512, 512, 1)
    assert model.layers[-1].get_config()["activation"] == "sigmoid"
    (check,) = layers_of(model, SizeCheck)
    assert check.multiple == 64  # 2**4 poolings * 4 x 4 patches
    blocks = layers_of(model, TransformerEncoderBlock)
    assert [(b.num_heads, b.num_mlp, b.mlp_activation) for b in blocks] == [(2, 384, "GELU")] * 2
    (embed,) = layers_of(model, PatchEmbedding)
    assert embed.patch_size == (4, 4) and embed.embed_dim == 96
    assert embed.input.shape == (None, 32, 32, 1024)  # patches of the deepest CNN map
    (pos,) = layers_of(model, PositionEmbedding)
    assert pos.grid_size == (8, 8)  # 64 tokens at 512 x 512
    first = [layer.filters for layer in model.layers
             if layer.name.startswith("transunet_down") and layer.name.endswith("_0")]
    assert first == [64, 128, 256, 512, 1024]
    assert model.count_params() == expected_params([64, 128, 256, 512, 1024], 2, 2, 96, 384,
                                                   2, 2, 4, 8)


def test_tiny_param_count_formula():
    model = build_transunet((64, 64, 1), **TINY)
    assert model.count_params() == expected_params([4, 8, 16], 1, 1, 16, 32, 2, 1, 2, 8)


def test_patch_1x1_gives_one_token_per_deepest_cell():
    model = build_transunet((64, 64, 1), **{**TINY, "patch_size": (1, 1)})
    (embed,) = layers_of(model, PatchEmbedding)
    assert embed.output.shape == (None, 16, 16, 16)  # 16 x 16 cells of the 16 x 16 map
    assert "transunet_vit_upsample" not in [layer.name for layer in model.layers]
    assert layers_of(model, SizeCheck)[0].multiple == 4


def test_any_size_uses_interpolated_position_embedding():
    model = build_transunet((None, None, 1), **TINY)
    (pos,) = layers_of(model, PositionEmbedding)
    assert pos.grid_size == (64, 64)  # grid of a 512 x 512 input: 512 / (4 * 2)
    rng = np.random.default_rng(0)
    for hw in [(64, 96), (40, 8)]:
        y = np.asarray(model(rng.random((1, *hw, 1)).astype("float32")))
        assert y.shape == (1, *hw, 1) and np.isfinite(y).all()


def test_transformer_gives_global_context():
    # a 3-level CNN with one conv per level sees < 64 px; the attention sees the whole image
    model = build_transunet((128, 128, 1), **TINY)
    x = np.random.default_rng(1).random((1, 128, 128, 1)).astype("float32")
    x2 = x.copy()
    x2[0, -1, -1, 0] += 1.0
    delta = np.abs(np.asarray(model(x2)) - np.asarray(model(x)))[0, :8, :8]
    assert delta.max() > 1e-6


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch_size=(2, 4)), "square"),
    (dict(embed_dim=0), "embed_dim"),
    (dict(num_transformer=1.5), "num_transformer"),
    (dict(mlp_activation="nope"), "mlp_activation"),
    (dict(input_size=(68, 68, 1)), "divisible by 8"),
    (dict(input_size=(64, 64)), "input_size"),
])
def test_bad_transformer_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_transunet(**{"input_size": (64, 64, 1), **TINY, **kwargs})
