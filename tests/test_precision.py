"""Mixed precision: the scope, the float32 -> bfloat16 copy of every network, training in it."""
import keras
import numpy as np
import pytest

from oct_seg.loading import load_model
from oct_seg.models.registry import build_model
from oct_seg.precision import check_precision, precision_scope, with_precision
from oct_seg.reporting import network_kwargs

QUICK_NETS = network_kwargs("QUICK")


def test_check_precision_and_scope_restores_policy():
    assert check_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision must be one of float32"):
        check_precision("bfloat16")
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError):
        with precision_scope("mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == before == "float32"


@pytest.mark.parametrize("name", sorted(QUICK_NETS))
def test_bfloat16_copy_of_every_network(name, tmp_path):
    """Any-size float32 net -> bf16 copy: same weights, bf16 compute inside, float32
    probabilities within bf16 round-off of the float32 ones, at a size other than any
    built grid (TransUNet's position table is resized at run time). Saved and loaded in a
    float32 session it gives the same outputs: the transformer blocks' inner layers (norms,
    attention, MLP) once took the session's float32 policy on loading, and every TransUNet
    trained in mixed_bfloat16 failed to load (bf16 + float32 in the residual add)."""
    keras.utils.set_random_seed(0)
    model = build_model(name, input_size=(None, None, 1), **QUICK_NETS[name])
    x = np.random.default_rng(1).random((2, 64, 96, 1)).astype("float32")
    reference = np.asarray(model(x, training=False))
    mixed = with_precision(model, "mixed_bfloat16")
    assert mixed is not model and model.layers[1].dtype_policy.name == "float32"
    convs = [la for la in mixed.layers if isinstance(la, keras.layers.Conv2D)]
    assert convs[0].compute_dtype == "bfloat16" and convs[0].variable_dtype == "float32"
    assert all(np.array_equal(a, b) for a, b in zip(mixed.get_weights(), model.get_weights()))
    out = mixed(x, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"  # the sigmoid head
    # bfloat16 keeps 8 significand bits (relative step 2^-8 = 0.4 %); errors add up per layer
    assert np.abs(np.asarray(out) - reference).max() < 0.05
    assert np.abs(np.asarray(out) - reference).max() > 0  # it did compute in bf16
    assert with_precision(mixed, "mixed_bfloat16") is mixed
    assert with_precision(model, "float32") is model
    mixed.save(tmp_path / "mixed.keras")
    assert keras.config.dtype_policy().name == "float32"
    loaded = load_model(tmp_path / "mixed.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), np.asarray(out))


def test_train_in_mixed_bfloat16_saves_a_bf16_model(tmp_path):
    from oct_seg.data.phantom import write_phantom_dataset
    from oct_seg.loading import load_model
    from oct_seg.training import TrainConfig, train

    data = write_phantom_dataset(tmp_path / "data", n_subjects=2, per_subject=2, height=32,
                                 width=32, seed=0)
    cfg = TrainConfig(model="unet", model_kwargs={"filter_num": [4, 8]}, image_size=(32, 32),
                      epochs=1, batch_size=2, n_folds=2, folds=[0], precision="mixed_bfloat16")
    assert TrainConfig.from_dict(cfg.to_dict()).precision == "mixed_bfloat16"
    summary = train(data, tmp_path / "run", cfg, verbose=0)
    assert len(summary)
    model = load_model(tmp_path / "run" / "fold_0" / "model.keras")
    convs = [la for la in model.layers if isinstance(la, keras.layers.Conv2D)]
    assert convs[0].compute_dtype == "bfloat16"
    assert np.isfinite(np.asarray(model(np.zeros((1, 32, 32, 1), "float32")))).all()
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")
