"""Numeric precision of training and inference: float32 (default) or Keras mixed precision.

PRECISIONS:
  "float32"         every layer computes and stores in float32 (the reference numerics).
  "mixed_bfloat16"  layers compute in bfloat16, weights stay float32, the output activation
                    stays float32. On CPUs with AVX512_BF16 (this project's AMD EPYC) oneDNN
                    runs bfloat16 convolutions at ~2x the float32 rate: 1.6x training and
                    1.8x inference images per CPU-second (BENCHMARKS.md); on NVIDIA Ampere or
                    newer GPUs, the tensor-core path.
  "mixed_float16"   float16 compute for GPUs with float16 tensor cores (Volta, Turing);
                    Keras' compile() wraps the optimizer in a LossScaleOptimizer. On CPU it
                    is slower than float32.
Mixed precision changes the numerics: compare validation Dice on your data before relying on
it (bench/README.md, "Findings", reports the check on Duke DME).
"""
from __future__ import annotations

import contextlib

import keras

from oct_seg.names import PRECISIONS  # the home of the names: readable without Keras


def check_precision(precision) -> str:
    """The precision name, or ValueError listing the valid ones."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


@contextlib.contextmanager
def precision_scope(precision):
    """Layers created inside compute in `precision` (Keras' global dtype policy, restored on
    exit): `with precision_scope("mixed_bfloat16"): model = build_transunet()`."""
    check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def with_precision(model, precision):
    """A copy of a functional Keras model that computes in `precision`, with the same weights
    (rebuilt from its config; output layers keep their own dtype, e.g. the float32 head).
    Returns `model` itself when it already computes in `precision`. Exported SavedModels
    (TFSMLayer) run in the precision they were exported with: ValueError."""
    check_precision(precision)
    config = model.get_config()
    if not isinstance(config, dict) or "layers" not in config:
        raise ValueError(f"model {model.name!r} is not a functional model; build it inside "
                         f"precision_scope({precision!r}) instead")
    outputs = config["output_layers"]  # [name, 0, 0], or a list of them for several outputs
    outputs = {entry[0] for entry in ([outputs] if isinstance(outputs[0], str) else outputs)}
    layer_configs = [c for c in config["layers"]
                     if c["class_name"] != "InputLayer" and c["name"] not in outputs]
    if any(c["class_name"] == "TFSMLayer" for c in config["layers"]):
        raise ValueError(f"model {model.name!r} wraps an exported SavedModel, which runs in the "
                         "precision it was exported with; export from a model built or trained "
                         f"in {precision}")
    if all(model.get_layer(c["name"]).dtype_policy.name == precision for c in layer_configs):
        return model
    for c in layer_configs:
        c["config"].pop("dtype", None)  # -> the scope's policy, for the layer and its sublayers
    with precision_scope(precision):
        clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    return clone
