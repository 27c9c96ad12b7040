"""Pretrained models that ship with the package: a name -> network, weights and metadata.

keras-hub's preset idea, for trained fluid models. A preset is a folder (shipped ones live in
oct_seg/preset_files/NAME/) holding
  network.json   the network: Keras serialization of the float32 functional model, batch
                 norm folded into the convolutions (oct_seg.batchnorm_folding: same outputs,
                 ~30 % less CPU in inference)
  weights.npz    its weights in float16, in `model.weights` order (half the bytes of float32;
                 the model card states the measured Dice change, which is none)
  preset.json    metadata: description, network and builder arguments, training data and
                 command, cross-validation scores, threshold, input expectations
  MODEL_CARD.md  the model card (data and licence, recipe, scores, intended use)
  SHA256SUMS     sha256 of each file above (`sha256sum -c SHA256SUMS` checks them by hand)

`from_preset(name)` verifies every checksum before it reads anything, so a missing, truncated or
altered file is a one-line ValueError naming it, never a model with wrong weights. Names that
are not shipped presets are read as a preset folder: a clinic packages its own trained model
with `save_preset` (or `oct-seg presets make`) and loads it the same way.

Listing (`list_presets`, `oct-seg presets`) reads only JSON: it imports no TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "preset_files"
NETWORK, WEIGHTS, METADATA, CARD, SUMS = ("network.json", "weights.npz", "preset.json",
                                          "MODEL_CARD.md", "SHA256SUMS")
FILES = (NETWORK, WEIGHTS, METADATA, CARD)
# preset.json fields that every preset states (the model card and `oct-seg presets` use them)
REQUIRED_METADATA = ("name", "description", "network", "trained_on", "threshold", "input")


def shipped_names() -> list[str]:
    """Names of the presets inside the package (folders of oct_seg/preset_files/)."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / METADATA).is_file())


def is_preset(name_or_path) -> bool:
    """True for a shipped preset's name (when no file of that name exists) or a preset folder
    (one holding preset.json). Model loading (oct_seg.loading) asks this first."""
    path = Path(name_or_path)
    if path.is_dir():
        return (path / METADATA).is_file()
    return not path.exists() and str(name_or_path) in shipped_names()


def preset_dir(name_or_path) -> Path:
    """The folder of a shipped preset name or a preset folder; ValueError naming the shipped
    presets for anything else."""
    path = Path(name_or_path)
    if path.is_dir() and (path / METADATA).is_file():
        return path
    if not path.exists() and str(name_or_path) in shipped_names():
        return SHIPPED / str(name_or_path)
    raise ValueError(f"{name_or_path}: not a preset name or preset folder; shipped presets: "
                     f"{', '.join(shipped_names()) or 'none'}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_preset(name_or_path) -> Path:
    """Check every file of a preset against its SHA256SUMS; return the folder.

    ValueError (one line, naming the file) for a missing SHA256SUMS, a file it does not list,
    a listed file that is missing, or a checksum that differs (an altered or truncated file).
    """
    folder = preset_dir(name_or_path)
    sums_file = folder / SUMS
    if not sums_file.is_file():
        raise ValueError(f"{sums_file}: missing; the preset cannot be verified")
    expected = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, _, file = line.partition("  ")
            expected[file.strip()] = digest.strip()
    for file in FILES:
        if file not in expected:
            raise ValueError(f"{sums_file}: lists no checksum for {file}")
        path = folder / file
        if not path.is_file():
            raise ValueError(f"{path}: missing from preset {folder.name!r}")
        if _sha256(path) != expected[file]:
            raise ValueError(f"{path}: checksum differs from {SUMS} (altered or truncated "
                             f"file); reinstall oct_seg or rebuild the preset")
    return folder


def preset_metadata(name_or_path) -> dict:
    """preset.json of a preset (not verified: for listing; loading verifies)."""
    return json.loads((preset_dir(name_or_path) / METADATA).read_text())


def list_presets() -> list[dict]:
    """One row per shipped preset: name, description, network, parameters, weights MB, the
    cross-validation Dice it states (and over how many folds) and whether its checksums
    hold."""
    rows = []
    for name in shipped_names():
        meta = preset_metadata(name)
        try:
            verify_preset(name)
            status = "ok"
        except ValueError as err:
            status = f"BROKEN: {err}"
        rows.append({"name": name, "description": meta["description"],
                     "network": meta["network"]["name"], "parameters": meta.get("parameters"),
                     "weights_mb": round((SHIPPED / name / WEIGHTS).stat().st_size / 1e6, 2)
                     if (SHIPPED / name / WEIGHTS).is_file() else None,
                     "cv_pooled_dice": meta.get("cross_validation", {}).get("pooled_dice"),
                     "cv_folds": meta.get("cross_validation", {}).get("folds_finished"),
                     "status": status, "folder": str(SHIPPED / name)})
    return rows


def from_preset(name_or_path):
    """The preset's float32 Keras model (weights from float16), after verify_preset.

    >>> model = oct_seg.from_preset("duke_dme_fluid")   # (B, H, W, 1) in [0, 1] -> fluid prob.
    """
    import keras
    import numpy as np

    import oct_seg.models  # noqa: F401  registers the custom layers the network names

    folder = verify_preset(name_or_path)
    model = keras.saving.deserialize_keras_object(json.loads((folder / NETWORK).read_text()))
    stored = np.load(folder / WEIGHTS)
    arrays = [stored[f"w{i:04d}"] for i in range(len(stored.files))]
    shapes = [tuple(w.shape) for w in model.weights]
    if [a.shape for a in arrays] != shapes:
        raise ValueError(f"{folder / WEIGHTS}: {len(arrays)} arrays do not match the "
                         f"{len(shapes)} weights of {folder / NETWORK}")
    model.set_weights([a.astype(w.dtype) for a, w in zip(arrays, model.weights)])
    return model


def save_preset(model, out_dir, metadata: dict, card: str, overwrite: bool = False) -> Path:
    """Write `model` (run in float32, batch norm folded) as a preset folder: network.json,
    weights.npz (float16), preset.json (`metadata` + parameter count), MODEL_CARD.md (`card`)
    and SHA256SUMS.

    The metadata is checked (REQUIRED_METADATA) and the folder written atomically, so a
    failure leaves nothing half-written. Returns the folder.
    """
    import keras
    import numpy as np

    from oct_seg.batchnorm_folding import fold_batch_norm
    from oct_seg.io import atomic_dir
    from oct_seg.precision import with_precision

    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"preset metadata lacks {', '.join(missing)}")
    model = fold_batch_norm(with_precision(model, "float32"))
    metadata = {**metadata, "parameters": int(model.count_params()),
                "weights_dtype": "float16", "batch_norm": "folded into the convolutions"}
    with atomic_dir(out_dir, overwrite=overwrite) as folder:
        folder = Path(folder)
        (folder / NETWORK).write_text(
            json.dumps(keras.saving.serialize_keras_object(model), indent=1) + "\n")
        # np.savez stores uncompressed members with a fixed zip time stamp: the same weights
        # give the same bytes, so a rebuilt preset has the same checksums
        np.savez(folder / WEIGHTS, **{f"w{i:04d}": np.asarray(w.numpy(), dtype=np.float16)
                                      for i, w in enumerate(model.weights)})
        (folder / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        (folder / CARD).write_text(card)
        (folder / SUMS).write_text("".join(f"{_sha256(folder / f)}  {f}\n" for f in FILES))
    return Path(out_dir)


def preset_from_run(run_dir, out_dir, name: str, description: str, card: str, input_note: str,
                    extra: dict | None = None, overwrite: bool = False) -> Path:
    """A preset from a finished deployment run (`oct-seg train --folds 1`, RUN/final): its
    model plus metadata read from the run (network and resolved recipe, data folder and its
    subjects / B-scans, the exact command, package versions). `extra` (e.g. the
    cross_validation scores of the same recipe) is merged into preset.json.
    """
    import shlex

    from oct_seg.data.readers import read_dataset
    from oct_seg.loading import load_model
    from oct_seg.rundir import RunDir

    run = RunDir(run_dir)
    final = run.fold(0, 1)
    if not (run.config.is_file() and final.finished):
        raise ValueError(f"{run_dir}: not a finished deployment run (no config.json and "
                         "final/fold.json; train it with `oct-seg train --folds 1`)")
    record, trained = run.read_record(), final.read_trained()
    config = record["config"]
    data_dir = Path(record["data_dir"])
    trained_on = {"data_folder": data_dir.name}
    if data_dir.is_dir():
        index = read_dataset(data_dir).index
        trained_on.update(subjects=int(index["subject"].nunique()), b_scans=int(len(index)),
                          subject_ids=sorted(map(str, index["subject"].unique())))
    metadata = {
        "name": name, "description": description,
        "network": {"name": config["model"],
                    "kwargs": {**trained["recipe"]["model_kwargs"], **config["model_kwargs"]}},
        "trained_on": trained_on,
        "threshold": config["threshold"],
        "input": input_note,
        "training": {"command": shlex.join(["oct-seg", *record["argv"][1:]]),
                     "config": config, "recipe": trained["recipe"],
                     "epochs_run": trained["epochs_run"], "versions": record["versions"],
                     "created": record["created"]},
        **(extra or {}),
    }
    return save_preset(load_model(final.model), out_dir, metadata, card, overwrite=overwrite)
