"""Load trained models from disk: Keras files, exported SavedModel folders and run folders.

EXPORT_INFO is the sidecar that ``oct_seg.export`` writes beside every export (input shape, size
rule, labels); loading a SavedModel reads it to restore the size check of the original net.
"""
from __future__ import annotations

import json
from pathlib import Path

EXPORT_INFO = "oct_seg.json"


def load_model(path):
    """Load a .keras / .h5 model file, an exported SavedModel folder or a pretrained preset
    (a shipped name such as "duke_dme_fluid", or a preset folder: oct_seg.presets) -> keras.Model.

    SavedModels (from `oct-seg export`) are wrapped in a Keras model around their `serve`
    endpoint, with the SizeCheck layer restored from the exported `oct_seg.json`, so that
    oct_seg.inference.predict_image pads / resizes them like the original model.
    Raises FileNotFoundError / ValueError naming the path and the problem.
    """
    import keras

    # register every oct_seg layer, loss and metric a saved model may name
    import oct_seg.losses  # noqa: F401
    import oct_seg.metrics  # noqa: F401
    import oct_seg.models.registry  # noqa: F401
    from oct_seg.presets import from_preset, is_preset

    if is_preset(path):
        return from_preset(path)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: model not found (nor a preset name: `oct-seg presets` "
                                "lists them)")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ValueError(f"{path}: folder is not a SavedModel (no saved_model.pb); give a "
                             ".keras file or a folder written by `oct-seg export`")
        return _wrap_saved_model(path)
    if path.suffix.lower() not in (".keras", ".h5"):
        raise ValueError(f"{path}: not a model file; give a .keras file or a SavedModel folder")
    if path.suffix.lower() == ".keras":
        _check_keras_archive(path)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a loadable Keras model ({reason[:200]})") from err


def _check_keras_archive(path: Path) -> None:
    """ValueError for a .keras file that is not a Keras archive (a zip holding config.json):
    Keras itself answers "File not found" for a file that is there."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a loadable Keras model (not a .keras zip archive)")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ValueError(f"{path}: not a loadable Keras model (the zip archive holds no "
                             "config.json)")


def load_models(path) -> list:
    """The model(s) at ``path`` as a list: one for a model file or SavedModel folder, every
    finished fold's model for a training run folder (oct_seg.rundir: a cross-validation run
    gives its fold ensemble, a final run its one model). Pass the list to
    oct_seg.inference.predict_image to average the members' probabilities.
    """
    from oct_seg.rundir import RunDir

    path = Path(path)
    run = RunDir(path)
    if not (path.is_dir() and run.config.is_file()):
        return [load_model(path)]
    folds = [fold for fold in run.finished_folds() if fold.model.is_file()]
    if not folds:
        raise ValueError(f"{path}: training run with no finished fold model yet (no "
                         "fold_K/fold.json with model.keras); finish or resume it first")
    return [load_model(fold.model) for fold in folds]


def model_classes(path) -> tuple:
    """Names of the fluid classes a trained multi-class model segments, read from its
    training record (the ``classes`` of a fold's trained.json recipe): for a run folder, or a
    model file inside one (RUN_DIR/<fold>/model.keras); for an exported folder from its
    oct_seg.json. () when there is no record or the model is binary."""
    from oct_seg.rundir import FoldDir, RunDir

    path = Path(path)
    if (path / EXPORT_INFO).is_file():
        return tuple(_read_export_info(path).get("classes", ()))
    run = RunDir(path)
    if path.is_dir() and run.config.is_file():
        folds = run.finished_folds()
    else:
        folds = [FoldDir(path.parent)]
    for fold in folds:
        if fold.trained.is_file():
            return tuple(fold.read_trained().get("recipe", {}).get("classes", ()))
    return ()


def _read_export_info(path) -> dict:
    """The oct_seg.json sidecar of an exported SavedModel folder (defaults when it has none:
    any size, multiple 1, endpoint "serve")."""
    info_file = Path(path) / EXPORT_INFO
    if not info_file.is_file():
        return {"multiple": 1, "fixed_size": None, "endpoint": "serve"}
    return json.loads(info_file.read_text())


def _wrap_saved_model(path: Path):
    import keras

    from oct_seg.models.blocks import SizeCheck

    info = _read_export_info(path)
    h, w = (info.get("input_shape") or [None, None])[:2]
    # a signature with static H, W only takes that size: predict_image resizes to it
    fixed = tuple(info["fixed_size"]) if info.get("fixed_size") else ((h, w) if h and w else None)
    try:
        core = keras.layers.TFSMLayer(str(path), call_endpoint=info.get("endpoint", "serve"))
    except Exception as err:
        raise ValueError(f"{path}: cannot load the SavedModel ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''})") from err
    shape = (fixed[0], fixed[1], 1) if fixed else (None, None, 1)
    inputs = keras.Input(shape)
    checked = SizeCheck(multiple=int(info.get("multiple", 1)), fixed_size=fixed,
                        context=f"exported model {path.name}")(inputs)
    outputs = ordered_outputs(core(checked))[-1]  # the last output is the final one
    return keras.Model(inputs, outputs, name=f"savedmodel_{path.name}")


def ordered_outputs(outputs) -> list:
    """A model's or an exported graph's outputs as a list in output order: a list / tuple
    as it is, a SavedModel signature's dict {"output_0": ..., "output_K": ...} by index, a
    single tensor as [it]. Compare outputs through this, never through np.asarray of the
    whole: over a list it adds a leading axis ((1, 1, H, W, 1) for one output of a batch of
    one) and stacks the heads of a deep-supervision model."""
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs, key=lambda k: int(k.rsplit("_", 1)[-1]))]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]
