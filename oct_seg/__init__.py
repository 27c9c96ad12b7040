"""oct_seg: fluid segmentation in retinal OCT B-scans (Keras 3).

Public entry points: the six builders (`build_unet`, ..., `build_transunet`), `build_model`
and `MODELS`, the losses and metrics, `predict_image`, `train` / `cross_validate`,
`evaluate_model`, `predict_files`, `export_model`, the pretrained presets (`from_preset`,
`list_presets`, `save_preset`) and mixed precision (`precision_scope`,
`with_precision`). The `oct-seg` command wraps them.

The names load on first use (PEP 562): `import oct_seg` imports neither TensorFlow nor Keras,
so `oct-seg --help` answers at once; the first public name used imports TensorFlow with its
C++ start-up notices silenced (`oct_seg._tf_import`).
"""
import importlib

from oct_seg._version import __version__  # noqa: F401  (public: oct_seg.__version__)

# public name -> the module that defines it
_HOMES = {
    "oct_seg.models.registry": ("MODELS", "PRESETS", "build_model"),
    "oct_seg.models.unet": ("build_unet", "unet_base"),
    "oct_seg.models.att_unet": ("build_att_unet", "att_unet_base"),
    "oct_seg.models.r2_unet": ("build_r2_unet", "r2_unet_base"),
    "oct_seg.models.unet3plus": ("build_unet3plus", "unet3plus_base"),
    "oct_seg.models.transunet": ("build_transunet", "transunet_base"),
    "oct_seg.models.swin_unet": ("build_swin_unet", "swin_unet_base"),
    "oct_seg.inference": ("predict_image", "input_requirements"),
    "oct_seg.losses": ("LOSSES", "get_loss", "DiceLoss", "TverskyLoss", "FocalTverskyLoss",
                       "WeightedBCE", "CombinedLoss"),
    "oct_seg.metrics": ("DiceCoefficient", "JaccardIndex", "case_scores", "score_table",
                        "summarize_scores"),
    "oct_seg.training": ("TrainConfig", "train", "cross_validate", "train_final"),
    "oct_seg.evaluate": ("evaluate_model", "evaluate_folder"),
    "oct_seg.predict": ("predict_files",),
    "oct_seg.loading": ("load_model",),
    "oct_seg.presets": ("from_preset", "list_presets", "save_preset"),
    "oct_seg.export": ("export_model",),
    "oct_seg.precision": ("PRECISIONS", "precision_scope", "with_precision"),
    "oct_seg.rundir": ("RunDir",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
# subpackages and modules that import TensorFlow, loaded quietly when reached through the root
# (`from oct_seg import reporting`); `import oct_seg.reporting` skips the root and its silencing
_ROOMS = ("data", "models", "losses", "metrics", "inference", "distribute", "precision",
          "training", "evaluate", "predict", "export", "demo", "reporting", "presets")

__all__ = list(_HOME_OF)


def __getattr__(name):
    if name not in _HOME_OF and name not in _ROOMS:
        raise AttributeError(f"module 'oct_seg' has no attribute {name!r}")
    from oct_seg._tf_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    importlib.import_module("oct_seg.models")  # registers every custom layer for loading
    if name in _ROOMS:
        return importlib.import_module(f"oct_seg.{name}")  # binds oct_seg.<name> as well
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
