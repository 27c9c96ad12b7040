"""U-Net: shared model tests plus U-Net specific structure checks."""
import keras
import numpy as np
import pytest
from model_tester import ModelTester

from oct_seg.models.unet import build_unet


class TestUNet(ModelTester):
    builder = staticmethod(build_unet)
    kwargs = dict(filter_num=[4, 8, 16], stack_num_down=1, stack_num_up=1)


def test_unet_levels_and_options():
    # 4 levels -> 8x downsampling: 64 fits, 68 does not; strided conv + transposed conv
    model = build_unet((64, 64, 1), [2, 4, 4, 8], pool=False, unpool=False, batch_norm=True)
    assert model.name == "unet" and model.output_shape == (None, 64, 64, 1)
    with pytest.raises(ValueError, match="divisible by 8; got 68 x 64"):
        build_unet((68, 64, 1), [2, 4, 4, 8])
    for bad in (dict(pool="median"), dict(unpool="cubic")):
        with pytest.raises(ValueError, match="pool"):
            build_unet((64, 64, 1), [2, 4], **bad)


def test_unet_single_conv_param_count_by_hand():
    # 2 levels, 1 conv per stack, filters [2, 4], no BN, bilinear up, 1 label. Hand count:
    # down0 3x3 1->2: 9*1*2+2 = 20; down1 3x3 2->4: 9*2*4+4 = 76;
    # up0 conv_before_concat 3x3 4->2: 9*4*2+2 = 74; after concat (2+2 ch) 3x3 4->2: 74;
    # head 1x1 2->1: 3. Total 247.
    model = build_unet((8, 8, 1), [2, 4], stack_num_down=1, stack_num_up=1)
    assert model.count_params() == 247
    assert np.isfinite(model.predict(np.zeros((1, 8, 8, 1)), verbose=0)).all()


def test_get_activation_names_and_errors():
    from oct_seg.models.blocks import get_activation

    x = np.array([[-2.0, 0.5]], "float32")
    assert np.allclose(get_activation("ReLU")()(x), [[0.0, 0.5]])
    assert np.allclose(get_activation("relu")()(x), [[0.0, 0.5]])
    assert np.allclose(get_activation("LeakyReLU")()(x), [[-0.6, 0.5]])  # keras slope 0.3
    assert np.allclose(get_activation("ELU")()(x), [[np.exp(-2.0) - 1, 0.5]], atol=1e-6)
    assert get_activation(keras.layers.ReLU) is keras.layers.ReLU
    with pytest.raises(ValueError, match="ReLU, LeakyReLU, PReLU, ELU, GELU"):
        get_activation("Snake")
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("eval('1')")


def test_output_head_options():
    from oct_seg.models.blocks import output_head

    inp = keras.Input((4, 4, 3))
    with pytest.raises(ValueError, match="Sigmoid"):
        output_head(inp, 1, "Softmax")
    with pytest.raises(ValueError, match="output_activation"):
        output_head(inp, 2, "Tanh")
    multi = keras.Model(inp, output_head(inp, 3, "Sigmoid", name="ml"))  # multi-label
    y = multi.predict(np.random.default_rng(0).random((1, 4, 4, 3)), verbose=0)
    assert y.shape == (1, 4, 4, 3) and not np.allclose(y.sum(-1), 1)
