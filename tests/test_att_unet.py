"""Attention U-Net: shared model tests plus the attention gate against a numpy reference."""
import keras
import numpy as np
from model_tester import ModelTester

from oct_seg.models.att_unet import build_att_unet
from oct_seg.models.blocks import attention_gate


class TestAttUNet(ModelTester):
    builder = staticmethod(build_att_unet)
    kwargs = dict(filter_num=[4, 8, 16], stack_num_down=1, stack_num_up=1)


def test_attention_gate_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 3)).astype("float32")
    g = rng.standard_normal((1, 4, 5, 6)).astype("float32")
    xi, gi = keras.Input((4, 5, 3)), keras.Input((4, 5, 6))
    gate = keras.Model([xi, gi], attention_gate(xi, gi, 2, name="g"))
    w = {layer.name: layer.get_weights() for layer in gate.layers if layer.get_weights()}
    dense = lambda t, k, b: t @ k[0, 0] + b  # noqa: E731  (1x1 conv = per-pixel matmul)
    q = np.maximum(dense(x, *w["g_theta_x"]) + dense(g, *w["g_phi_g"]), 0)
    alpha = 1 / (1 + np.exp(-dense(q, *w["g_psi_f"])))
    np.testing.assert_allclose(gate.predict([x, g], verbose=0), x * alpha, rtol=1e-5, atol=1e-6)
    assert alpha.shape[-1] == 1 and 0 < alpha.min() and alpha.max() < 1
