"""Any-size inference (oct_seg.inference) and the size machinery of oct_seg.models.blocks."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from oct_seg.inference import input_requirements, predict_image
from oct_seg.models.blocks import SizeCheck, UpsampleBilinear
from oct_seg.models.unet import build_unet


def _pointwise_model(multiple=8, fixed_size=None, input_hw=(None, None)):
    """sigmoid(2 * x - 1) per pixel, behind a SizeCheck: output = known function of input."""
    inp = keras.Input((*input_hw, 1))
    x = SizeCheck(multiple, fixed_size)(inp)
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    out = conv(x)
    conv.set_weights([np.full((1, 1, 1, 1), 2.0, "float32"), np.array([-1.0], "float32")])
    return keras.Model(inp, out)


def _sig(x):
    return 1 / (1 + np.exp(-(2 * x - 1)))


def test_size_check_message_and_config():
    with pytest.raises(ValueError) as err:
        build_unet((100, 100, 1), [2, 2, 2, 2, 2])
    assert ("unet with 5 levels needs height and width divisible by 16; got 100 x 100 "
            "(nearest valid to 100: 96 or 112)") in str(err.value)
    with pytest.raises(ValueError, match="needs a 32 x 48 input; got 64 x 48"):
        SizeCheck(1, (32, 48))(keras.Input((64, 48, 1)))
    layer = SizeCheck(4, (32, 48), context="x")
    clone = SizeCheck.from_config(layer.get_config())
    assert (clone.multiple, clone.fixed_size, clone.context) == (4, (32, 48), "x")


def test_size_check_runtime_for_dynamic_shapes():
    layer = SizeCheck(8, context="net")
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 1))])
    assert fn(tf.zeros((1, 16, 24, 1))).shape == (1, 16, 24, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="divisible by 8"):
        fn(tf.zeros((1, 20, 24, 1)))
    fixed = tf.function(SizeCheck(1, (16, 24), context="vit"),
                        input_signature=[tf.TensorSpec((None, None, None, 1))])
    assert fixed(tf.zeros((2, 16, 24, 1))).shape == (2, 16, 24, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="vit needs a 16 x 24 input"):
        fixed(tf.zeros((1, 16, 32, 1)))


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upsample_dynamic_shape_matches_tf_resize(tmp_path, mode):
    inp = keras.Input((None, None, 2))
    model = keras.Model(inp, UpsampleBilinear(4, mode)(inp))
    assert model.output_shape == (None, None, None, 2)
    x = np.random.default_rng(0).random((2, 5, 7, 2)).astype("float32")
    want = tf.image.resize(x, (20, 28), method=mode).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=1e-6)
    if mode == "nearest":
        np.testing.assert_array_equal(want, x.repeat(4, axis=1).repeat(4, axis=2))
    model.export(str(tmp_path / "up"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "up"))
    np.testing.assert_allclose(served.serve(x).numpy(), want, atol=1e-6)


def test_input_requirements():
    assert input_requirements(build_unet((None, None, 1), [2, 2, 2])) == (4, None)
    assert input_requirements(_pointwise_model(2, (32, 48))) == (2, (32, 48))
    inp = keras.Input((None, None, 1))
    plain = keras.Model(inp, keras.layers.Conv2D(1, 1)(inp))
    with pytest.raises(ValueError, match="no SizeCheck"):
        input_requirements(plain)
    assert input_requirements(plain, multiple=8) == (8, None)


def test_foreign_model_with_fixed_input_is_resized_to_it():
    # e.g. keras-unet-collection's unet_2d((256, 384, 1), ...): no SizeCheck, fixed H x W
    inp = keras.Input((16, 24, 1))
    fixed = keras.Model(inp, keras.layers.Lambda(lambda t: t)(inp))
    assert input_requirements(fixed) == (1, (16, 24))
    image = np.zeros((32, 48), "float32")
    image[:16, :24] = 1.0    # top-left quarter: a 2x resize keeps it exact away from the edge
    prob = predict_image(fixed, image)[..., 0]
    assert prob.shape == (32, 48)
    assert prob[:12, :20].min() > 0.99 and prob[20:, 28:].max() < 0.01


def test_pad_path_is_aligned():
    # a per-pixel model gives f(image) exactly only if padding and cropping line up
    image = np.random.default_rng(1).random((37, 53)).astype("float32")
    prob = predict_image(_pointwise_model(8), image)
    assert prob.shape == (37, 53, 1)
    np.testing.assert_allclose(prob[..., 0], _sig(image), atol=1e-6)
    # a static-size any-size net (built at 64 x 64) with mode="pad" runs at native size too
    static = _pointwise_model(8, input_hw=(64, 64))
    np.testing.assert_allclose(predict_image(static, image, mode="pad")[..., 0], _sig(image),
                               atol=1e-6)


def test_resize_path_for_fixed_size():
    # linear ramp: bilinear resizing is exact away from the borders
    h, w = 50, 70
    ramp = np.tile(np.linspace(0.1, 0.9, w, dtype="float32"), (h, 1))
    prob = predict_image(_pointwise_model(1, (32, 48)), ramp)
    assert prob.shape == (h, w, 1)
    np.testing.assert_allclose(prob[4:-4, 4:-4, 0], _sig(ramp)[4:-4, 4:-4], atol=2e-3)
    with pytest.raises(ValueError, match="mode='resize'"):
        predict_image(_pointwise_model(1, (32, 48)), ramp, mode="pad")
    with pytest.raises(ValueError, match="mode='pad'"):
        predict_image(_pointwise_model(8), ramp, mode="resize")


def test_input_forms_and_dtypes():
    model = _pointwise_model(8)
    rng = np.random.default_rng(2)
    img8 = rng.integers(0, 256, (3, 20, 30), dtype=np.uint8)
    batch = predict_image(model, img8, batch_size=2)
    assert batch.shape == (3, 20, 30, 1) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[..., 0], _sig(img8 / 255.0), atol=1e-6)
    assert predict_image(model, img8[0][..., None]).shape == (20, 30, 1)
    assert predict_image(model, img8[..., None]).shape == (3, 20, 30, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predict_image(model, img8.astype("float32"))
    with pytest.raises(ValueError, match="shape"):
        predict_image(model, np.zeros((2, 3, 20, 30, 1), "float32"))


def test_real_bscan_keeps_its_size(duke_dir):
    from PIL import Image

    path = sorted((duke_dir / "images").glob("*.png"))[0]
    image = np.asarray(Image.open(path).convert("L"))
    model = build_unet((None, None, 1), [2, 4, 4, 4, 4], stack_num_down=1, stack_num_up=1)
    prob = predict_image(model, image)
    assert prob.shape == image.shape + (1,)
    assert image.shape == (496, 768)


def _shift_model(multiple=8):
    """Output at column j = sigmoid(input at column j + 1): not mirror-symmetric."""
    inp = keras.Input((None, None, 1))
    x = SizeCheck(multiple)(inp)
    conv = keras.layers.Conv2D(1, (1, 3), padding="same", activation="sigmoid")
    out = conv(x)
    kernel = np.zeros((1, 3, 1, 1), "float32")
    kernel[0, 2, 0, 0] = 1.0
    conv.set_weights([kernel, np.zeros(1, "float32")])
    return keras.Model(inp, out)


def test_ensemble_averages_the_models():
    image = np.random.default_rng(3).random((24, 40)).astype("float32")
    a, b = _pointwise_model(8), _shift_model(8)
    expected = (predict_image(a, image) + predict_image(b, image)) / 2
    np.testing.assert_allclose(predict_image([a, b], image), expected, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        predict_image([], image)


def test_flip_tta_mirrors_back():
    # by hand: the shift model reads column j+1; mirrored it reads column j-1 (zero padded)
    image = np.random.default_rng(4).random((16, 24)).astype("float32")
    right = np.pad(image, ((0, 0), (0, 1)))[:, 1:]
    left = np.pad(image, ((0, 0), (1, 0)))[:, :-1]
    expected = (1 / (1 + np.exp(-right)) + 1 / (1 + np.exp(-left))) / 2
    prob = predict_image(_shift_model(8), image, tta=True)
    np.testing.assert_allclose(prob[..., 0], expected, atol=1e-6)
    # a mirror-symmetric (pointwise) model is unchanged by TTA
    np.testing.assert_allclose(predict_image(_pointwise_model(8), image, tta=True)[..., 0],
                               _sig(image), atol=1e-6)
