"""Shared tests every oct_seg network passes (subclass per architecture).

Usage in tests/test_<net>.py:

    from model_tester import ModelTester

    class TestUNet(ModelTester):
        builder = staticmethod(build_unet)
        kwargs = dict(filter_num=[4, 8, 16], stack_num_down=1, stack_num_up=1)

Class attributes:
    builder           build_* function taking input_size, n_labels, output_activation and
                      the filter list argument named `filter_arg`
    kwargs            tiny configuration (a few thousand weights)
    input_hw          (H, W) used for building, fitting, saving
    anysize_hw        B-scan size predict_image must reproduce (Spectralis 496 x 768)
    filter_arg        name of the per-level filter list argument ("filter_num_down" for UNet 3+)
    supports_any_size True if the net can be built with input_size (None, None, C)
"""
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from oct_seg.inference import predict_image


def _blob_batch(hw, n=2, seed=0):
    """Images with a dark ellipse (fluid-like) on speckle, and its mask; float32 (n, H, W, 1)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[:h, :w]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        mask = ((yy - cy) / (0.2 * h)) ** 2 + ((xx - cx) / (0.25 * w)) ** 2 < 1
        image = np.clip(0.6 - 0.4 * mask + 0.1 * rng.standard_normal((h, w)), 0, 1)
        images.append(image)
        masks.append(mask)
    return (np.asarray(images, np.float32)[..., None], np.asarray(masks, np.float32)[..., None])


class ModelTester:
    builder = None
    kwargs = {}
    input_hw = (64, 64)
    anysize_hw = (496, 768)
    filter_arg = "filter_num"
    supports_any_size = True

    def make(self, **over):
        """Build the tiny network (seeded); `over` overrides kwargs / input_size."""
        keras.utils.set_random_seed(0)
        kw = {"input_size": (*self.input_hw, 1), **self.kwargs, **over}
        return type(self).builder(**kw)

    def test_forward_shape_and_range(self):
        x, _ = _blob_batch(self.input_hw)
        y = keras.ops.convert_to_numpy(self.make()(x, training=False))
        assert y.shape == (2, *self.input_hw, 1)
        assert y.dtype == np.float32
        assert np.all((y >= 0) & (y <= 1)) and np.isfinite(y).all()
        assert y.std() > 0, "constant output: the input does not reach the head"
        y3 = keras.ops.convert_to_numpy(
            self.make(n_labels=3, output_activation="Softmax")(x, training=False))
        assert y3.shape == (2, *self.input_hw, 3)
        np.testing.assert_allclose(y3.sum(-1), 1.0, atol=1e-5)
        logits = keras.ops.convert_to_numpy(
            self.make(output_activation=None)(x, training=False))
        # same seed, same weights: the sigmoid of the logits is the probability output
        np.testing.assert_allclose(1 / (1 + np.exp(-logits)), y, atol=1e-5)

    def test_training_reduces_loss(self):
        x, y = _blob_batch(self.input_hw)
        model = self.make()
        model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss=keras.losses.BinaryCrossentropy(), jit_compile=False)
        losses = [float(model.train_on_batch(x, y)) for _ in range(6)]
        assert np.isfinite(losses).all()
        assert losses[-1] < losses[0], f"loss did not decrease: {losses}"

    def test_keras_save_load_identical(self, tmp_path):
        x, _ = _blob_batch(self.input_hw, seed=1)
        model = self.make()
        path = tmp_path / "model.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # no custom_objects: layers are registered
        assert loaded.count_params() == model.count_params()
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(loaded(x, training=False)),
            keras.ops.convert_to_numpy(model(x, training=False)))

    def test_savedmodel_export_roundtrip(self, tmp_path):
        size = (None, None, 1) if self.supports_any_size else (*self.input_hw, 1)
        model = self.make(input_size=size)
        model.export(str(tmp_path / "export"), verbose=False)
        served = tf.saved_model.load(str(tmp_path / "export"))
        hws = [self.input_hw]
        if self.supports_any_size:
            hws.append((self.input_hw[0] * 2, self.input_hw[1]))
        for hw in hws:
            x, _ = _blob_batch(hw, seed=2)
            diff = np.abs(served.serve(x).numpy()
                          - keras.ops.convert_to_numpy(model(x, training=False)))
            assert diff.max() < 1e-5, (hw, diff.max())

    def test_anysize_predict_image(self):
        h, w = self.anysize_hw
        image = np.random.default_rng(3).random((h, w)).astype(np.float32)
        models = [self.make()]
        if self.supports_any_size:
            models.append(self.make(input_size=(None, None, 1)))
        for model in models:
            prob = predict_image(model, image)
            assert prob.shape == (h, w, 1) and prob.dtype == np.float32
            assert np.all((prob >= 0) & (prob <= 1))
        batch = predict_image(models[-1], np.stack([image[:, :w // 2], image[:, w // 2:]]),
                              batch_size=2)
        assert batch.shape == (2, h, w // 2, 1)

    def test_bad_config_raises(self):
        with pytest.raises(ValueError, match="n_labels"):
            self.make(n_labels=0)
        with pytest.raises(ValueError, match=self.filter_arg):
            self.make(**{self.filter_arg: []})
        if "activation" in inspect.signature(type(self).builder).parameters:
            with pytest.raises(ValueError, match="activation"):
                self.make(activation="NotAnActivation")

    def test_bad_input_size_raises(self):
        h, w = self.input_hw
        with pytest.raises(ValueError, match=f"{h + 2} x {w}"):
            self.make(input_size=(h + 2, w, 1))
