"""The names the command line offers, readable without importing TensorFlow or Keras.

The registries hold the objects behind these names (``oct_seg.models.registry.MODELS`` /
``PRESETS``, ``oct_seg.losses.LOSSES``, ``oct_seg.export.FORMATS``, ``oct_seg.precision``);
importing them loads TensorFlow (~6 s), which ``oct-seg --help`` and argument errors must not
wait for. tests/test_names.py checks that every tuple here equals its registry, in order.
"""
MODEL_NAMES = ("unet", "att_unet", "r2_unet", "unet3plus", "transunet", "swin_unet")
PRESET_NAMES = ("transunet_paper", "transunet_cpu")
LOSS_NAMES = ("dice", "focal_tversky", "wbce", "tversky", "combined")
EXPORT_FORMATS = ("savedmodel", "onnx", "litert")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# no registry behind these two: this is their home (oct_seg.etdrs, oct_seg.report use them)
EYES = ("OD", "OS")               # right eye, left eye
REPORT_FORMATS = ("png", "pdf")   # the one-page volume report
