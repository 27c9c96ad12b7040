"""Strategy choice, chief detection, and 2 logical CPU devices == 1 device (real losses)."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from oct_seg import distribute
from oct_seg.data.phantom import make_phantom
from oct_seg.losses import get_loss
from oct_seg.metrics import DiceCoefficient
from oct_seg.models.unet import build_unet

TWO = ["/CPU:0", "/CPU:1"]


@pytest.mark.parametrize("tf_config, chief", [
    (None, True),
    ({"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["h:0"], "worker": ["h:1"]}, "task": {"type": "worker", "index": 0}},
     False),
    ({"cluster": {"chief": ["h:0"], "worker": ["h:1"]}, "task": {"type": "chief", "index": 0}},
     True),
])
def test_is_chief(monkeypatch, tf_config, chief):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert distribute.is_chief() is chief


def test_bad_tf_config_and_devices(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.is_chief()
    with pytest.raises(ValueError, match="empty"):
        distribute.get_strategy(devices=[])


def test_strategy_choice_and_cpu_split(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.get_strategy().num_replicas_in_sync == 1  # no GPU here
    assert distribute.get_strategy(TWO).num_replicas_in_sync == 2
    assert distribute.configure_cpu_devices(2) == TWO  # conftest already split: no-op
    with pytest.raises(RuntimeError, match="already initialised"):
        distribute.configure_cpu_devices(3)


def _batch(n=4, size=32):
    pairs = [make_phantom(np.random.default_rng([5, i]), size, size) for i in range(n)]
    x = np.stack([p[0] for p in pairs])[..., None].astype("float32")
    y = np.stack([p[1] for p in pairs])[..., None].astype("float32")
    return x, y


def _one_step(strategy, loss_name, weights, x, y):
    """evaluate -> (loss, dice) then one SGD step on the whole batch -> new weights."""
    with strategy.scope():
        model = build_unet(input_size=(32, 32, 1), filter_num=[4, 8], stack_num_down=1,
                           stack_num_up=1, batch_norm=False)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss=get_loss(loss_name),
                      metrics=[DiceCoefficient(name="dice")])
    ev = model.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    hist = model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return ev, hist.history["loss"][0], model.get_weights()


@pytest.mark.parametrize("loss_name", ["combined", "dice"])
def test_two_devices_equal_one_device(loss_name):
    x, y = _batch()
    keras.utils.set_random_seed(1)
    ref = build_unet(input_size=(32, 32, 1), filter_num=[4, 8], stack_num_down=1,
                     stack_num_up=1, batch_norm=False)
    weights = ref.get_weights()
    direct = float(keras.ops.mean(get_loss(loss_name)(y, ref(x))))  # plain call, no strategy
    ev1, l1, w1 = _one_step(tf.distribute.get_strategy(), loss_name, weights, x, y)
    ev2, l2, w2 = _one_step(distribute.get_strategy(TWO), loss_name, weights, x, y)
    assert ev1["loss"] == pytest.approx(direct, rel=1e-5)
    assert ev2["loss"] == pytest.approx(direct, rel=1e-5)  # not x2: no replica-count scaling
    assert ev2["dice"] == pytest.approx(ev1["dice"], rel=1e-5)
    assert l2 == pytest.approx(l1, rel=1e-5)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(w1, weights))
    assert moved > 1e-4  # the step did change the weights
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_train_on_two_logical_devices(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    from oct_seg.data.phantom import write_phantom_dataset
    from oct_seg.training import train
    data = write_phantom_dataset(tmp_path / "data", n_subjects=4, per_subject=2, height=48,
                                 width=64, seed=0)
    summary = train(data, tmp_path / "run", model="unet",
                    model_kwargs={"filter_num": [4, 8], "stack_num_down": 1, "stack_num_up": 1},
                    image_size=(32, 32), epochs=1, batch_size=2, n_folds=2, folds=[0],
                    noise_std=0.0, strategy=distribute.get_strategy(TWO), verbose=0)
    trained = json.loads((tmp_path / "run" / "fold_0" / "trained.json").read_text())
    assert trained["replicas"] == 2 and trained["global_batch"] == 4
    assert trained["steps_per_epoch"] == 1  # 4 training scans / global batch 4
    assert list(summary.columns[-1:]) == ["fold_0"]
