"""Export: SavedModel round trip in a process that never imports oct_seg, ONNX, LiteRT."""
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from oct_seg.export import export_model, probe_input
from oct_seg.models.transunet import build_transunet
from oct_seg.models.unet import build_unet
from oct_seg.models.unet3plus import build_unet3plus
from oct_seg.loading import load_model
from oct_seg.predict import predict_files

CHECK = Path(__file__).with_name("export_check.py")


@pytest.fixture(scope="module")
def any_size_unet():
    keras.utils.set_random_seed(0)
    return build_unet(input_size=(None, None, 1), filter_num=[4, 8], name="tiny_unet")


@pytest.fixture(scope="module")
def saved_unet(any_size_unet, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "unet_sm"
    assert export_model(any_size_unet, out) == out
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()  # a normal folder, not mkdtemp's 0700
    return out


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_savedmodel_reloads_without_oct_seg(saved_unet, any_size_unet, tmp_path):
    info = json.loads((saved_unet / "oct_seg.json").read_text())
    assert info["input_shape"] == [None, None, 1] and info["multiple"] == 2
    x = np.random.default_rng(3).random((2, 24, 40, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(any_size_unet(x)))
    run = subprocess.run([sys.executable, str(CHECK), str(saved_unet), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["max_abs_diff"] < 1e-5 and report["same_masks"]
    assert report["oct_seg_imported"] is False and report["output_shape"] == [2, 24, 40, 1]


def test_predict_with_savedmodel_equals_keras(saved_unet, any_size_unet, tmp_path):
    img = (np.random.default_rng(1).random((30, 42)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "b.png")
    a = predict_files(any_size_unet, [tmp_path / "b.png"], tmp_path / "k", progress=False)
    b = predict_files(saved_unet, [tmp_path / "b.png"], tmp_path / "s", progress=False)
    assert a.loc[0, "fluid_pixels"] == b.loc[0, "fluid_pixels"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "k/masks/b.png")),
                                  np.asarray(Image.open(tmp_path / "s/masks/b.png")))
    with pytest.raises(ValueError, match="runs in the precision it was exported with"):
        predict_files(saved_unet, [tmp_path / "b.png"], tmp_path / "p", progress=False,
                      precision="mixed_bfloat16")
    assert not (tmp_path / "p").exists()


def test_fixed_size_transunet_export(tmp_path):
    net = build_transunet(input_size=(32, 32, 1), filter_num=[4, 8], embed_dim=8, num_mlp=16,
                          num_heads=1, num_transformer=1, patch_size=(2, 2), name="tiny_tu")
    net.save(tmp_path / "tu.keras")
    out = export_model(tmp_path / "tu.keras", tmp_path / "tu_sm")  # verifies < 1e-5 inside
    info = json.loads((out / "oct_seg.json").read_text())
    assert info["input_shape"] == [32, 32, 1]
    wrapped = load_model(out)
    x = probe_input(info)
    np.testing.assert_allclose(wrapped(x), net(x), atol=1e-5)


def test_onnx_export(any_size_unet, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path = export_model(any_size_unet, tmp_path / "onnx", format="onnx")
    assert path == tmp_path / "onnx" / "model.onnx"
    session = ort.InferenceSession(str(path))
    x = np.random.default_rng(2).random((1, 16, 24, 1), dtype=np.float32)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(any_size_unet(x)), atol=1e-5)


def test_onnx_export_transformer_gelu(tmp_path):
    """TransUNet's exact GELU becomes Erfc, which tf2onnx cannot convert; export rewrites it."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    keras.utils.set_random_seed(1)
    net = build_transunet(input_size=(16, 16, 1), filter_num=[4, 8], embed_dim=8, num_mlp=16,
                          num_heads=1, num_transformer=1, patch_size=(2, 2), name="tu_onnx")
    path = export_model(net, tmp_path / "onnx", format="onnx")
    session = ort.InferenceSession(str(path))
    x = np.random.default_rng(5).random((2, 16, 16, 1), dtype=np.float32)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(net(x)), atol=1e-5)


def test_litert_export(any_size_unet, tmp_path):
    import tensorflow as tf

    path = export_model(any_size_unet, tmp_path / "lite", format="litert")
    assert path.name == "model.tflite"
    interpreter = tf.lite.Interpreter(model_path=str(path))
    x = np.random.default_rng(4).random((1, 16, 24, 1), dtype=np.float32)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(any_size_unet(x)), atol=1e-5)


def test_export_errors(any_size_unet, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown export format 'pt'"):
        export_model(any_size_unet, tmp_path / "x", format="pt")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    with pytest.raises(ValueError, match="ONNX export needs .*tf2onnx.*--format savedmodel"):
        export_model(any_size_unet, tmp_path / "x", format="onnx")
    assert not (tmp_path / "x").exists()


def test_verify_rejects_a_wrong_output_shape(any_size_unet):
    """The check after export compares shapes first: (1, N, H, W, 1) would broadcast against
    the Keras (N, H, W, 1) and pass a value-only comparison. A CI run once got a
    (1, 1, 16, 24, 1) "ONNX output": np.asarray over the list that onnxruntime's run(None)
    returns (one array per graph output) adds that leading axis; the graph itself gave
    (N, H, W, 1) in every case tried (issue 13)."""
    from oct_seg.export import export_info, verify_export

    info = export_info(any_size_unet)

    def keras_run(x):
        return keras.ops.convert_to_numpy(any_size_unet(x))

    verify_export(any_size_unet, info, keras_run, "probe")  # same model: passes
    with pytest.raises(ValueError, match=r"returns shape \(1, 2, 64, 64, 1\), the Keras model"):
        verify_export(any_size_unet, info, lambda x: keras_run(x)[None], "probe")
    with pytest.raises(ValueError, match=r"returns 2 outputs, the Keras model 1"):
        verify_export(any_size_unet, info, lambda x: [keras_run(x)] * 2, "probe")


@pytest.mark.xfail(strict=False, reason=(
    "after tests/test_distribute.py in the same process, keras' ONNX exporter gives the first "
    "deep-supervision head a leading axis, (1, N, H, W, 1); verify_export refuses that model. "
    "Passes alone and after the other test files; root cause not found yet (2026-11-30)"))
def test_onnx_export_of_a_deep_supervision_model(tmp_path):
    """Every output is compared: the check stacked the Keras heads into one (3, N, H, W, 1)
    array against the last ONNX output only, so a deep-supervision model never exported."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    keras.utils.set_random_seed(2)
    net = build_unet3plus(input_size=(None, None, 1), filter_num_down=[4, 8, 16],
                          filter_num_skip=[4, 4], filter_num_aggregate=8,
                          deep_supervision=True, name="u3_ds")
    path = export_model(net, tmp_path / "onnx", format="onnx")
    session = ort.InferenceSession(str(path))
    x = np.random.default_rng(6).random((1, 16, 24, 1), dtype=np.float32)
    got = session.run(None, {session.get_inputs()[0].name: x})
    want = [keras.ops.convert_to_numpy(y) for y in net(x)]
    assert [g.shape for g in got] == [w.shape for w in want] == [(1, 16, 24, 1)] * 3
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
    assert np.asarray(got[-1:]).shape == (1, 1, 16, 24, 1)  # the shape of the issue
