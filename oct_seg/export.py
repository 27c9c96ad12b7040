"""Export a trained model for deployment: TensorFlow SavedModel, ONNX or LiteRT (.tflite).

Every export goes into a folder (written to a temporary folder and renamed at the end) that
also holds `oct_seg.json`: input shape, the size rule of the network (H, W multiple of
`multiple`, or `fixed_size`), number of labels and the output kind (probabilities), so that a
deployment can pad / resize B-scans the same way `oct_seg.inference.predict_image` does. A
multi-class model exported from its file in a run folder also gets ``classes`` (the fluid
class names of channels 1, 2, ...; oct_seg.loading.model_classes), which predict reads back.

    savedmodel  OUT/ is the SavedModel (`serve` endpoint, float32 (None, H, W, 1) with H, W None
                for any-size networks); loads with plain `tf.saved_model.load(OUT)`.
    onnx        OUT/model.onnx via keras' exporter (needs tf2onnx + onnx); TensorFlow's Erfc
                (exact GELU in the transformers) is rewritten as 1 - Erf, which tf2onnx
                1.17 does not do.
    litert      OUT/model.tflite via keras' exporter (the TFLite converter in TensorFlow).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import numpy as np

from oct_seg._version import __version__
from oct_seg.io import atomic_dir
from oct_seg.loading import EXPORT_INFO, load_model, model_classes, ordered_outputs

FORMATS = {"savedmodel": "tf_saved_model", "onnx": "onnx", "litert": "litert"}
ARTIFACT = {"savedmodel": None, "onnx": "model.onnx", "litert": "model.tflite"}
ONNX_PACKAGES = "tf2onnx==1.17.0 onnx==1.23.2 (and onnxruntime==1.32.0 to run the model)"
TOLERANCE = 1e-5


def export_info(model) -> dict:
    """The model facts a deployment needs, as written to oct_seg.json."""
    from oct_seg.inference import input_requirements

    multiple, fixed = input_requirements(model)
    shape = list(model.input_shape[1:])
    return dict(oct_seg_version=__version__, model_name=model.name,
                input_shape=shape, input_dtype="float32", input_range=[0.0, 1.0],
                multiple=int(multiple), fixed_size=list(fixed) if fixed else None,
                n_labels=int(model.outputs[-1].shape[-1]), output="probabilities",
                endpoint="serve")


def probe_input(info: dict, seed=0) -> np.ndarray:
    """A random float32 batch (2, H, W, 1) that fits the exported signature."""
    h, w, _ = info["input_shape"]
    m = info["multiple"]
    side = m * math.ceil(64 / m)
    shape = (2, h or side, w or side, 1)
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def export_model(model_or_path, out_dir, format="savedmodel", overwrite=False,
                 verify=True) -> Path:
    """Export a keras.Model or model file to `out_dir` -> path of the artifact.

    format: "savedmodel" (returns out_dir), "onnx" (out_dir/model.onnx) or "litert"
    (out_dir/model.tflite). verify: reload the SavedModel and compare with the Keras model on a
    random probe (max abs diff < 1e-5), raising ValueError when it differs.
    """
    import keras

    if format not in FORMATS:
        raise ValueError(f"unknown export format '{format}'; use one of {sorted(FORMATS)}")
    if format == "onnx":
        _require_onnx()
    model = load_model(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path
    info = export_info(model)
    classes = model_classes(model_or_path) if isinstance(model_or_path, (str, Path)) else ()
    if classes:
        info["classes"] = list(classes)
    spec = keras.InputSpec(shape=(None, *info["input_shape"]), dtype="float32")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        target = tmp / ARTIFACT[format] if ARTIFACT[format] else tmp
        try:
            with _quiet_tf2onnx(format):
                model.export(str(target), format=FORMATS[format], input_signature=[spec],
                             verbose=False)
        except Exception as err:
            raise ValueError(f"{format} export of model '{model.name}' failed "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:300]})") from err
        if format == "onnx":
            _replace_erfc(target)
        (tmp / EXPORT_INFO).write_text(json.dumps(dict(info, format=format), indent=2))
        if verify and format == "savedmodel":
            verify_export(model, info, _saved_model_runner(tmp), "SavedModel")
        if verify and format == "onnx":
            verify_export(model, info, _onnx_runner(target), "ONNX model")
    return out_dir / ARTIFACT[format] if ARTIFACT[format] else out_dir


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as err:
        raise ValueError(f"ONNX export needs the packages tf2onnx and onnx ({err}); install "
                         f"them with `pip install {ONNX_PACKAGES}`, or export a SavedModel "
                         "(--format savedmodel) and convert it with `python -m tf2onnx.convert "
                         "--saved-model DIR --output model.onnx`") from err


@contextlib.contextmanager
def _quiet_tf2onnx(format):
    """tf2onnx logs 'Erfc is not supported' errors for an op _replace_erfc then fixes;
    real failures still raise (and the exported graph is checked)."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    if format == "onnx":
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _replace_erfc(path: Path):
    """tf2onnx 1.17 leaves TensorFlow's Erfc (exact GELU of the transformer MLPs) as an
    invalid ONNX node; rewrite each as the exact identity erfc(x) = 1 - erf(x)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    nodes, changed = [], False
    for node in model.graph.node:
        if node.op_type != "Erfc":
            nodes.append(node)
            continue
        changed = True
        out, one, erf = node.output[0], f"{node.output[0]}__one", f"{node.output[0]}__erf"
        nodes += [helper.make_node("Constant", [], [one], name=f"{node.name}__one",
                                   value=numpy_helper.from_array(np.array(1.0, np.float32))),
                  helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}__erf"),
                  helper.make_node("Sub", [one, erf], [out], name=f"{node.name}__sub")]
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def _saved_model_runner(folder: Path):
    import keras

    return keras.layers.TFSMLayer(str(folder), call_endpoint="serve")


def _onnx_runner(path: Path):
    """onnxruntime session as a function (all graph outputs, in order), or None when
    onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def verify_export(model, info: dict, run, what: str):
    """Compare every output of the exported artifact with the Keras model's on a random
    probe batch: the same number of outputs, each of the same shape (no broadcasting), and
    values within TOLERANCE. Outputs are compared one by one (loading.ordered_outputs):
    np.asarray over the list of a multi-output model stacked the deep-supervision heads on
    the Keras side while the ONNX side kept only the last, so such models never exported."""
    import keras

    if run is None:
        return
    probe = probe_input(info)

    def arrays(outputs):
        return [np.asarray(keras.ops.convert_to_numpy(o)) for o in ordered_outputs(outputs)]

    want, got = arrays(model(probe, training=False)), arrays(run(probe))
    if len(got) != len(want):
        raise ValueError(f"exported {what} returns {len(got)} outputs, the Keras model "
                         f"{len(want)}")
    for k, (g, w) in enumerate(zip(got, want)):
        which = f" (output {k})" if len(want) > 1 else ""
        if g.shape != w.shape:  # no broadcasting: a wrong output shape is a broken export
            raise ValueError(f"exported {what} returns shape {g.shape}{which}, the Keras model "
                             f"{w.shape}")
        diff = float(np.max(np.abs(g - w)))
        if not diff < TOLERANCE:
            raise ValueError(f"exported {what} differs from the Keras model by {diff:.3g}"
                             f"{which} (tolerance {TOLERANCE})")
