"""Pretrained presets (oct_seg.presets): save / load round trip, checksums, the CLI, and the
shipped duke_dme_fluid model on a real B-scan."""
import json
import subprocess
import sys

import numpy as np
import pytest

import oct_seg
from oct_seg import presets
from oct_seg.loading import load_model


@pytest.fixture(scope="module")
def tiny_net():
    model = oct_seg.build_unet(input_size=(None, None, 1), filter_num=[4, 8], n_labels=1,
                               batch_norm=True)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.weights])
    return model


META = dict(name="tiny", description="a test preset", network={"name": "unet"},
            trained_on={"data_folder": "none"}, threshold=0.5, input="any")


def test_round_trip_stores_float16_weights(tiny_net, tmp_path):
    folder = presets.save_preset(tiny_net, tmp_path / "tiny", META, "# card\n")
    stored = np.load(folder / presets.WEIGHTS)
    assert {stored[k].dtype for k in stored.files} == {np.dtype("float16")}
    loaded = oct_seg.from_preset(folder)
    for got, original in zip(loaded.get_weights(), tiny_net.get_weights()):
        np.testing.assert_array_equal(got, original.astype(np.float16).astype(np.float32))
    x = np.random.default_rng(1).random((1, 32, 48, 1), dtype=np.float32)
    reference = oct_seg.build_unet(input_size=(None, None, 1), filter_num=[4, 8], batch_norm=True)
    reference.set_weights([w.astype(np.float16).astype(np.float32)
                           for w in tiny_net.get_weights()])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), reference.predict(x, verbose=0),
                               atol=1e-6)
    meta = json.loads((folder / presets.METADATA).read_text())
    assert meta["parameters"] == tiny_net.count_params() and meta["weights_dtype"] == "float16"
    # the model loaders take a preset folder wherever they take a model file
    assert load_model(folder).count_params() == tiny_net.count_params()


def test_checksums_catch_altered_missing_and_unlisted_files(tiny_net, tmp_path):
    folder = presets.save_preset(tiny_net, tmp_path / "p", META, "# card\n")
    assert presets.verify_preset(folder) == folder
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
    assert meta["network"] == {"name": "unet", "kwargs": {"filter_num": [4, 8],
                                                          "batch_norm": True}}
    assert meta["trained_on"] == {"data_folder": "data", "subjects": 2, "b_scans": 4,
                                  "subject_ids": ["phantom01", "phantom02"]}
    assert meta["training"]["command"].startswith("oct-seg train --data ")
    assert meta["cross_validation"] == {"pooled_dice": 0.5}
    assert (tmp_path / "tiny" / presets.CARD).read_text() == "# Tiny\n"
    run_model = load_model(tmp_path / "run" / "final" / "model.keras")
    np.testing.assert_allclose(
        np.concatenate([w.ravel() for w in oct_seg.from_preset(tmp_path / "tiny").get_weights()]),
        np.concatenate([w.ravel() for w in run_model.get_weights()]), rtol=1e-3, atol=1e-4)
    broken = subprocess.run([*make[:-1], tmp_path / "tiny2", "--run", tmp_path / "data"],
                            capture_output=True, text=True)
    assert broken.returncode != 0 and "not a finished deployment run" in broken.stderr
    assert not (tmp_path / "tiny2").exists()
