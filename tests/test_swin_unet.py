"""Swin-UNet: shared model tests, defaults, size rule, window locality and shifting."""
import numpy as np
import pytest
from model_tester import ModelTester

from oct_seg.models.blocks import SizeCheck
from oct_seg.models.swin_unet import build_swin_unet, size_multiple
from oct_seg.models.transformer import PatchMerging, SwinTransformerBlock

TINY = dict(filter_num_begin=8, depth=2, stack_num_down=2, stack_num_up=1, patch_size=(4, 4),
            num_heads=2, window_size=[4, 2], num_mlp=16)  # input multiple 16


class TestSwinUNet(ModelTester):
    builder = staticmethod(build_swin_unet)
    kwargs = TINY
    filter_arg = "filter_num_begin"


def layers_of(model, cls):
    return [layer for layer in model.layers if isinstance(layer, cls)]


def test_default_config():
    model = build_swin_unet()
    assert model.input_shape == (None, 512, 512, 1)
    assert model.output_shape == (None, 512, 512, 1)
    assert layers_of(model, SizeCheck)[0].multiple == 64
    blocks = layers_of(model, SwinTransformerBlock)
    assert len(blocks) == 4 * 2 + 3 * 2  # depth 4: 2 blocks per encoder and decoder level
    heads = {b.name: (b.num_heads, b.window_size, b.shift_size, b.num_mlp) for b in blocks}
    assert heads["swin_unet_down0_swin0"] == (4, 4, 0, 512)
    assert heads["swin_unet_down0_swin1"] == (4, 4, 2, 512)
    assert heads["swin_unet_down3_swin1"] == (8, 2, 1, 512)
    assert heads["swin_unet_up0_swin1"] == (4, 4, 2, 512)
    assert [m.output.shape[1:] for m in layers_of(model, PatchMerging)] == [
        (64, 64, 128), (32, 32, 256), (16, 16, 512)]


@pytest.mark.parametrize("patch, windows, expected", [
    ((4, 4), [4, 2, 2, 2], 64),  # 16, 16, 32, 64
    ((4, 4), [7, 7], 56),  # 28, 56
    ((2, 3), [2], 12),  # 4 and 6 per axis; one multiple for both: lcm 12
    ((1, 1), [3, 3, 3], 12),  # 3, 6, 12
])
def test_size_multiple(patch, windows, expected):
    assert size_multiple(patch, windows) == expected


def test_any_size_model():
    model = build_swin_unet((None, None, 1), **TINY)
    for hw in [(32, 96), (64, 32)]:
        y = np.asarray(model(np.random.default_rng(0).random((1, *hw, 1)).astype("float32")))
        assert y.shape == (1, *hw, 1) and np.isfinite(y).all()


@pytest.mark.parametrize("shift_window", [False, True])
def test_windows_limit_mixing_and_shift_crosses_them(shift_window):
    # depth 1, patch 4, window 4: 8 x 8 tokens in 2 x 2 windows of 16 x 16 px. Without the
    # shift, pixel (0, 0) only influences its window (tokens 0..3); the shifted block mixes
    # tokens 2..5 of the same region, so token 5 (pixel 20) changes; token 7 never does.
    model = build_swin_unet((32, 32, 1), filter_num_begin=8, depth=1, stack_num_down=2,
                            stack_num_up=1, patch_size=(4, 4), num_heads=2, window_size=4,
                            num_mlp=16, shift_window=shift_window)
    x = np.random.default_rng(2).random((1, 32, 32, 1)).astype("float32")
    x2 = x.copy()
    x2[0, 0, 0, 0] += 1.0
    delta = np.abs(np.asarray(model(x2)) - np.asarray(model(x)))[0, :, :, 0]
    assert delta[:16, :16].max() > 1e-4
    assert delta[28:, 28:].max() < 1e-6  # token (7, 7)
    assert delta[16:, :].max() < 1e-6 if not shift_window else delta[20:24, 20:24].max() > 1e-6


@pytest.mark.parametrize("kwargs, match", [
    (dict(input_size=(40, 40, 1)), "divisible by 16"),
    (dict(num_heads=[2, 2, 2]), "num_heads"),
    (dict(filter_num_begin=6, num_heads=4), "not divisible by num_heads"),
    (dict(window_size=[4, 0]), "window_size"),
    (dict(patch_size=(0, 4)), "patch_size"),
    (dict(depth=0), "depth"),
    (dict(n_labels=1, output_activation="Softmax"), "Softmax"),
])
def test_bad_swin_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_swin_unet(**{"input_size": (64, 64, 1), **TINY, **kwargs})


def test_black_scan_gives_finite_small_gradients_at_init():
    """An all-black B-scan (as the augmentation's zero fill makes in part of every rotated scan)
    must not blow up the gradient: with a zero-initialised patch-embedding bias its tokens have
    zero variance and each LayerNorm multiplies the gradient by 1/sqrt(eps) = 316 (~1e37 after
    the 3-level net's norms, inf in Adam). Reference: the gradient on a random-noise scan."""
    import keras
    import tensorflow as tf

    from oct_seg.losses import DiceLoss

    keras.utils.set_random_seed(0)
    model = build_swin_unet(input_size=(64, 64, 1), filter_num_begin=16, depth=3,
                            num_heads=[2, 4, 4], window_size=[4, 2, 2], num_mlp=64,
                            patch_size=(4, 4))
    mask = np.zeros((1, 64, 64, 1), "float32")
    mask[0, 20:30, 20:40] = 1

    def largest_gradient(image):
        with tf.GradientTape() as tape:
            loss = DiceLoss(per_image=False)(mask, model(image, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        return max(float(np.max(np.abs(tf.convert_to_tensor(g)))) for g in grads if g is not None)

    noise = largest_gradient(np.random.default_rng(0).random((1, 64, 64, 1)).astype("float32"))
    black = largest_gradient(np.zeros((1, 64, 64, 1), "float32"))
    assert np.isfinite(black) and black < 100 * noise, (black, noise)
