"""oct_seg: fluid segmentation in retinal OCT B-scans (Keras 3).

Public entry points: the six builders (`build_unet`, ..., `build_transunet`), `build_model`
and `MODELS`, the losses and metrics, `predict_image`, `train` / `cross_validate`,
`evaluate_model`, `predict_files`, `export_model` and mixed precision (`precision_scope`,
`with_precision`). The `oct-seg` command wraps them.
"""

from oct_seg._version import __version__  # noqa: F401  (public: oct_seg.__version__)

from oct_seg._tf_import import import_tensorflow_quietly

import_tensorflow_quietly()

from oct_seg.models.att_unet import att_unet_base, build_att_unet
from oct_seg.models.r2_unet import build_r2_unet, r2_unet_base
from oct_seg.models.registry import MODELS, PRESETS, build_model
from oct_seg.models.swin_unet import build_swin_unet, swin_unet_base
from oct_seg.models.transunet import build_transunet, transunet_base
from oct_seg.models.unet import build_unet, unet_base
from oct_seg.models.unet3plus import build_unet3plus, unet3plus_base
from oct_seg import models  # noqa: F401  (registers custom layers)
from oct_seg.inference import input_requirements, predict_image
from oct_seg.losses import (LOSSES, CombinedLoss, DiceLoss, FocalTverskyLoss, TverskyLoss,
                            WeightedBCE, get_loss)
from oct_seg.metrics import (DiceCoefficient, JaccardIndex, case_scores, score_table,
                             summarize_scores)
from oct_seg.training import TrainConfig, cross_validate, train, train_final
from oct_seg.evaluate import evaluate_folder, evaluate_model
from oct_seg.loading import load_model
from oct_seg.predict import predict_files
from oct_seg.export import export_model
from oct_seg.precision import PRECISIONS, precision_scope, with_precision

__all__ = [
    "MODELS", "PRESETS", "build_model",
    "build_unet", "build_att_unet", "build_r2_unet", "build_unet3plus", "build_transunet",
    "build_swin_unet", "unet_base", "att_unet_base", "r2_unet_base", "unet3plus_base",
    "transunet_base", "swin_unet_base",
    "predict_image", "input_requirements",
    "LOSSES", "get_loss", "DiceLoss", "TverskyLoss", "FocalTverskyLoss", "WeightedBCE",
    "CombinedLoss", "DiceCoefficient", "JaccardIndex", "case_scores", "score_table",
    "summarize_scores",
    "TrainConfig", "train", "cross_validate", "train_final", "evaluate_model", "evaluate_folder",
    "predict_files", "load_model", "export_model",
    "PRECISIONS", "precision_scope", "with_precision",
]
