"""Losses and metrics under MirroredStrategy on the 2 logical CPUs made by conftest.py.

The global batch (4 images) is split 2 + 2 over the replicas by model.fit / model.evaluate.
Expected values come from one device: the loss of the whole batch and the gradient of that
loss from a GradientTape, i.e. the SGD update of one step. (model.train_on_batch is not used:
under MirroredStrategy Keras 3.15 feeds the whole batch to every replica there.)
"""
import numpy as np
import pytest
import tensorflow as tf
import keras

from oct_seg.distribute import get_strategy
from oct_seg.losses import CombinedLoss, DiceLoss
from oct_seg.metrics import DiceCoefficient, JaccardIndex

LR = 0.5


@pytest.fixture(scope="module")
def strategy():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs the 2 logical CPU devices configured by tests/conftest.py")
    return get_strategy(["/CPU:0", "/CPU:1"])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 1)).astype("float32")
    # very different fluid amounts on the two replicas' halves, so that per-replica
    # whole-batch statistics would differ from the global ones
    fractions = np.array([0.05, 0.1, 0.6, 0.8])[:, None, None, None]
    y = (rng.random((4, 8, 8, 1)) < fractions).astype("float32")
    return x, y


def tiny_model():
    inp = keras.Input((8, 8, 1))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid",
                              kernel_initializer=keras.initializers.RandomNormal(0, 0.5, seed=1),
                              bias_initializer=keras.initializers.Constant(-0.5))(inp)
    return keras.Model(inp, out)


def one_device_reference(loss, x, y):
    model = tiny_model()
    weights = model.get_weights()
    with tf.GradientTape() as tape:
        value = loss(y, model(x))
    grads = tape.gradient(value, model.trainable_variables)
    updated = [w - LR * g.numpy() for w, g in zip(weights, grads)]
    return float(value), weights, updated, model(x).numpy()


def distributed_run(strategy, make_loss, x, y, weights):
    with strategy.scope():
        model = tiny_model()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(LR), loss=make_loss(),
                      metrics=[DiceCoefficient(), JaccardIndex()])
    # one step: its logged loss and metrics are those of the weights before the update
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return {k: v[0] for k, v in history.history.items()}, model.get_weights()


LOSS_FACTORIES = {
    "dice_per_image": lambda: DiceLoss(),
    "dice_batch": lambda: DiceLoss(per_image=False),
    "combined_per_image": lambda: CombinedLoss(alpha=0.3, pos_weight=5.0),
    "combined_batch": lambda: CombinedLoss(alpha=0.3, pos_weight=5.0, per_image=False),
}


@pytest.mark.parametrize("name", sorted(LOSS_FACTORIES))
def test_two_replicas_match_one_device(strategy, data, name):
    x, y = data
    make_loss = LOSS_FACTORIES[name]
    value, weights, updated, prob = one_device_reference(make_loss(), x, y)
    logs, after = distributed_run(strategy, make_loss, x, y, weights)
    np.testing.assert_allclose(logs["loss"], value, rtol=1e-5)
    step = max(np.abs(u - w).max() for u, w in zip(updated, weights))
    assert step > 1e-3  # the SGD step is large enough for the comparison to mean something
    for got, want in zip(after, updated):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * step)
    # the metrics are the global scores of the 4 images, not a per-replica average
    t, p = y > 0.5, prob > 0.5
    tp, fp, fn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum()
    assert logs["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-5)
    assert logs["jaccard"] == pytest.approx(tp / (tp + fp + fn), rel=1e-5)


def test_batch_form_differs_from_mean_of_replica_halves(data):
    """Guards the test above: without the cross-replica sum, the batch form would differ."""
    x, y = data
    prob = tiny_model()(x)
    loss = DiceLoss(per_image=False)
    halves = (float(loss(y[:2], prob[:2])) + float(loss(y[2:], prob[2:]))) / 2
    assert abs(halves - float(loss(y, prob))) > 1e-3


class _ScalarDice(keras.losses.Loss):
    """Whole-batch Dice returned as one scalar: the trap the per-image output avoids."""

    def call(self, y_true, y_pred):
        tp = keras.ops.sum(y_true * y_pred)
        return 1 - (2 * tp + 1) / (keras.ops.sum(y_true) + keras.ops.sum(y_pred) + 1)


def test_scalar_loss_is_scaled_by_the_replica_count(strategy, data):
    x, y = data
    with strategy.scope():
        model = tiny_model()
        model.compile(loss=_ScalarDice())
    distributed = model.evaluate(x, y, batch_size=4, verbose=0)
    prob = model(x)
    halves = [float(_ScalarDice()(y[:2], prob[:2])), float(_ScalarDice()(y[2:], prob[2:]))]
    assert distributed == pytest.approx(2 * np.mean(halves), rel=1e-5)
