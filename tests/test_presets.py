"""Pretrained presets (oct_seg.presets): save / load round trip, checksums, the CLI, and the
shipped duke_dme_fluid model on a real B-scan."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import keras
import oct_seg
from oct_seg import presets
from oct_seg.batchnorm_folding import fold_batch_norm
from oct_seg.loading import load_model


@pytest.fixture(scope="module")
def tiny_net():
    model = oct_seg.build_unet(input_size=(None, None, 1), filter_num=[4, 8], n_labels=1,
                               batch_norm=True)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.weights])
    return _with_bn_statistics(model)


META = dict(name="tiny", description="a test preset", network={"name": "unet"},
            trained_on={"data_folder": "none"}, threshold=0.5, input="any")


def _with_bn_statistics(model, seed=2):
    """Random, non-trivial batch-norm statistics (positive variances), so folding matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.2, 3, n)])
    return model


def test_batch_norm_folding_keeps_the_outputs(tiny_net):
    model = tiny_net
    folded = fold_batch_norm(model)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds and kinds.count("Conv2D") == sum(
        type(layer).__name__ == "Conv2D" for layer in model.layers)
    x = np.random.default_rng(1).random((2, 32, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(folded.predict_on_batch(x), model.predict_on_batch(x),
                               atol=1e-4)  # float32 round-off through gains up to ~4
    # one conv by hand: kernel * gamma / sqrt(var + eps), bias (0 - mean) * that + beta
    conv, bn = model.get_layer("unet_down0_0"), model.get_layer("unet_down0_0_bn")
    gamma, beta, mean, var = bn.get_weights()
    s = gamma / np.sqrt(var + bn.epsilon)
    kernel, bias = folded.get_layer("unet_down0_0").get_weights()
    np.testing.assert_allclose(kernel, conv.get_weights()[0] * s, rtol=1e-6)
    np.testing.assert_allclose(bias, beta - mean * s, rtol=1e-5, atol=1e-7)
    plain = oct_seg.build_unet(input_size=(None, None, 1), filter_num=[4, 8])
    assert fold_batch_norm(plain) is plain  # nothing to fold


def test_round_trip_stores_float16_weights(tiny_net, tmp_path):
    model = tiny_net
    folder = presets.save_preset(model, tmp_path / "tiny", META, "# card\n")
    stored = np.load(folder / presets.WEIGHTS)
    assert {stored[k].dtype for k in stored.files} == {np.dtype("float16")}
    loaded = oct_seg.from_preset(folder)
    reference = fold_batch_norm(model)
    for got, original in zip(loaded.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, original.astype(np.float16).astype(np.float32))
    x = np.random.default_rng(1).random((1, 32, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=0.05)  # float16 weights, random gains up to ~4
    meta = json.loads((folder / presets.METADATA).read_text())
    assert meta["parameters"] == reference.count_params() and meta["weights_dtype"] == "float16"
    # the model loaders take a preset folder wherever they take a model file
    assert load_model(folder).count_params() == reference.count_params()


def test_checksums_catch_altered_missing_and_unlisted_files(tiny_net, tmp_path):
    folder = presets.save_preset(tiny_net, tmp_path / "p", META, "# card\n")
    assert presets.verify_preset(folder) == folder
    time.sleep(1.1)  # a rebuild of the same model has the same bytes (no time stamps inside)
    again = presets.save_preset(tiny_net, tmp_path / "p2", META, "# card\n")
    assert (again / presets.SUMS).read_text() == (folder / presets.SUMS).read_text()
    data = bytearray((folder / presets.WEIGHTS).read_bytes())
    data[-20] ^= 0xFF
    (folder / presets.WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights.npz: checksum differs"):
        oct_seg.from_preset(folder)
    folder = presets.save_preset(tiny_net, tmp_path / "q", META, "# card\n")
    (folder / presets.CARD).unlink()
    with pytest.raises(ValueError, match=r"MODEL_CARD.md: missing from preset 'q'"):
        presets.verify_preset(folder)
    sums = folder / presets.SUMS
    sums.write_text("".join(l + "\n" for l in sums.read_text().splitlines()
                            if not l.endswith(presets.NETWORK)))
    with pytest.raises(ValueError, match="lists no checksum for network.json"):
        presets.verify_preset(folder)
    sums.unlink()
    with pytest.raises(ValueError, match="SHA256SUMS: missing"):
        presets.verify_preset(folder)


def test_bad_names_and_metadata(tiny_net, tmp_path):
    with pytest.raises(ValueError, match="no_such_preset: not a preset name or preset folder; "
                                         "shipped presets: duke_dme_fluid"):
        oct_seg.from_preset("no_such_preset")
    with pytest.raises(FileNotFoundError, match="nor a preset name"):
        load_model("no_such_preset")
    with pytest.raises(ValueError, match="lacks threshold, input"):
        presets.save_preset(tiny_net, tmp_path / "m", {k: META[k] for k in list(META)[:4]}, "")
    assert not (tmp_path / "m").exists()  # checked before anything is written


def test_presets_make_packages_a_deployment_run(tmp_path):
    from oct_seg.data.phantom import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "data", n_subjects=2, per_subject=2, height=48,
                                 width=64, seed=0)
    cli = [sys.executable, "-m", "oct_seg"]
    subprocess.run([*cli, "train", "--data", data, "--folds", "1", "--epochs", "1",
                    "--patch-size", "32", "48", "--batch-size", "2", "--model-kwargs",
                    '{"filter_num": [4, 8]}', "--out", tmp_path / "run"], check=True,
                   capture_output=True)
    (tmp_path / "card.md").write_text("# Tiny\n")
    (tmp_path / "cv.json").write_text('{"cross_validation": {"pooled_dice": 0.5}}')
    make = [*cli, "presets", "make", "--run", tmp_path / "run", "--name", "tiny", "--card",
            tmp_path / "card.md", "--input", "phantoms", "--metadata", tmp_path / "cv.json",
            "--out", tmp_path / "tiny"]
    subprocess.run(make, check=True, capture_output=True)
    meta = presets.preset_metadata(tmp_path / "tiny")
    assert meta["network"] == {"name": "unet", "kwargs": {
        "filter_num": [4, 8], "batch_norm": True, "activation": "LeakyReLU"}}
    assert meta["trained_on"] == {"data_folder": "data", "subjects": 2, "b_scans": 4,
                                  "subject_ids": ["phantom01", "phantom02"]}
    assert meta["training"]["command"].startswith("oct-seg train --data ")
    assert meta["cross_validation"] == {"pooled_dice": 0.5}
    assert (tmp_path / "tiny" / presets.CARD).read_text() == "# Tiny\n"
    run_model = load_model(tmp_path / "run" / "final" / "model.keras")
    x = np.random.default_rng(0).random((2, 48, 64, 1), dtype=np.float32)
    np.testing.assert_allclose(oct_seg.from_preset(tmp_path / "tiny").predict_on_batch(x),
                               run_model.predict_on_batch(x), atol=5e-3)
    broken = subprocess.run([*make[:-1], tmp_path / "tiny2", "--run", tmp_path / "data"],
                            capture_output=True, text=True)
    assert broken.returncode != 0 and "not a finished deployment run" in broken.stderr
    assert not (tmp_path / "tiny2").exists()


# ------------------------------------------------------------------ the shipped duke_dme_fluid
SHIPPED = "duke_dme_fluid"
SCAN = "subject03_annot05"  # a Duke B-scan with fluid (in the preset's training data)
MASK_SHA256 = "6280cd066f040e491dc40e55533522b6b0e340fbb2f57910d518ce68fec10d2e"  # sha256 of the uint8 0/1 mask of SCAN at threshold 0.5


@pytest.fixture(scope="module")
def shipped():
    return oct_seg.from_preset(SHIPPED)


def test_shipped_preset_is_listed_verified_and_small():
    (row,) = presets.list_presets()
    assert (row["name"], row["status"], row["network"]) == (SHIPPED, "ok", "unet")
    assert row["weights_mb"] < 5
    meta = presets.preset_metadata(SHIPPED)
    assert meta["trained_on"]["subjects"] == 8 and meta["trained_on"]["b_scans"] == 88
    assert "--deterministic" in meta["training"]["command"]
    folds = meta["cross_validation"]["folds"]
    assert folds and all(0 <= f["pooled_dice"] <= 1 for f in folds)
    out = subprocess.run([sys.executable, "-m", "oct_seg", "presets"], capture_output=True,
                         text=True, check=True).stdout
    assert f"{SHIPPED}: " in out and "checksums: ok" in out


def test_shipped_preset_mask_on_a_real_bscan(shipped, duke_dir):
    import hashlib

    from PIL import Image

    from oct_seg.metrics import case_scores

    image = np.asarray(Image.open(duke_dir / "images" / f"{SCAN}.png"), np.float32) / 255
    truth = np.asarray(Image.open(duke_dir / "masks" / f"{SCAN}.png")) > 0
    mask = (np.squeeze(oct_seg.predict_image(shipped, image)) > 0.5).astype(np.uint8)
    assert mask.shape == image.shape
    assert hashlib.sha256(mask.tobytes()).hexdigest() == MASK_SHA256
    assert case_scores(truth, mask)["dice"] > 0.6  # a training scan: the model fits it


def test_shipped_preset_predicts_by_name_and_exports(shipped, duke_dir, tmp_path):
    from PIL import Image

    from oct_seg.export import export_model
    from oct_seg.predict import predict_files

    predict_files(SHIPPED, [duke_dir / "images" / f"{SCAN}.png"], tmp_path / "pred",
                  progress=False)
    by_name = np.asarray(Image.open(tmp_path / "pred" / "masks" / f"{SCAN}.png")) > 0
    export_model(SHIPPED, tmp_path / "saved")  # verifies the export's outputs against Keras
    predict_files(tmp_path / "saved", [duke_dir / "images" / f"{SCAN}.png"],
                  tmp_path / "pred_saved", progress=False)
    exported = np.asarray(Image.open(tmp_path / "pred_saved" / "masks" / f"{SCAN}.png")) > 0
    assert by_name.any() and np.count_nonzero(by_name != exported) <= 5
