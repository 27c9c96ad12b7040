"""UNet 3+: shared model tests plus full-scale skips and deep supervision."""
import keras
import numpy as np
import pytest
from model_tester import ModelTester

from oct_seg.inference import predict_image
from oct_seg.models.unet3plus import build_unet3plus, unet3plus_base


class TestUNet3Plus(ModelTester):
    builder = staticmethod(build_unet3plus)
    kwargs = dict(filter_num_down=[4, 8, 16], stack_num_down=1, stack_num_up=1)
    filter_arg = "filter_num_down"
    input_hw = (32, 32)


def test_every_decoder_sees_every_level():
    # Huang et al. 2020: decoder d concatenates all n levels (each filter_num_skip channels).
    inp = keras.Input((32, 32, 1))
    dec = unet3plus_base(inp, [2, 4, 8, 8], filter_num_skip=[3, 3, 3], filter_num_aggregate=5)
    assert [tuple(t.shape[1:]) for t in dec] == [(32, 32, 5), (16, 16, 5), (8, 8, 5), (4, 4, 8)]
    model = keras.Model(inp, dec)
    for i in range(3):
        concat = model.get_layer(f"unet3plus_concat_{i}")
        assert concat.output.shape[-1] == 4 * 3


def test_deep_supervision_outputs_and_fit():
    model = build_unet3plus((16, 16, 1), 1, [2, 4, 8], stack_num_down=1, deep_supervision=True)
    assert len(model.outputs) == 3
    assert all(tuple(o.shape) == (None, 16, 16, 1) for o in model.outputs)
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    model.compile("adam", loss=["binary_crossentropy"] * 3, jit_compile=False)
    losses = model.train_on_batch(x, [y] * 3)
    assert len(losses) == 4 and np.isfinite(losses).all()  # total + one per output
    final = model.predict(x, verbose=0)[-1]
    np.testing.assert_allclose(predict_image(model, x), final, atol=1e-6)


def test_bad_widths():
    with pytest.raises(ValueError, match="filter_num_skip"):
        build_unet3plus((32, 32, 1), 1, [2, 4, 8], filter_num_skip=[2])
    with pytest.raises(ValueError, match="filter_num_aggregate"):
        build_unet3plus((32, 32, 1), 1, [2, 4, 8], filter_num_aggregate=0)
