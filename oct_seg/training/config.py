"""TrainConfig: every option of a training run, checked on creation, stored in config.json."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from oct_seg.models.registry import MODELS, PRESETS
from oct_seg.precision import check_precision

# fields that may change between calls on one run dir (which folds to run); every other field
# is part of the run's identity, and a call with a different value is refused
NOT_IDENTITY = ("folds",)


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run (JSON round trip: to_dict / from_dict).

    batch_size is per replica (global = batch_size x replicas). image_size (h, w) is the
    training size: scans are resized to it; scores are computed back at original size.
    folds: which fold indices to run (None = all); val_fraction: held-out share of subjects
    when n_folds == 1. noise_std: std of the additive Gaussian noise of the noisy test
    condition (images in [0, 1]; 0 = no noisy condition). deterministic: TF op determinism.
    bn_momentum: if set, the momentum of every BatchNormalization layer (None = the builder's
    0.99). Short runs need it lower (e.g. 0.9): after ~200 steps a 0.99 moving variance still
    carries ~15 % of its initial 1.0, so inference-mode outputs differ from training mode.
    precision: "float32", "mixed_bfloat16" or "mixed_float16" (oct_seg.precision); the saved
    model keeps it.
    """

    model: str = "unet"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    loss: str = "combined"
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    image_size: tuple = (256, 256)
    epochs: int = 50
    batch_size: int = 4
    learning_rate: float = 1e-3
    seed: int = 0
    n_folds: int = 5
    folds: list | None = None
    val_fraction: float = 0.2
    patience: int = 10
    noise_std: float = 0.1
    augment: bool = True
    deterministic: bool = False
    threshold: float = 0.5
    bn_momentum: float | None = None
    precision: str = "float32"

    def __post_init__(self):
        size = tuple(int(s) for s in np.atleast_1d(self.image_size))
        if len(size) == 1:
            size = size * 2
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"image_size must be (height, width) >= 8, got {self.image_size!r}")
        self.image_size = size
        for name in ("epochs", "batch_size", "n_folds"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
            setattr(self, name, int(getattr(self, name)))
        if self.model not in MODELS and self.model not in PRESETS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)} "
                             f"or a preset {sorted(PRESETS)}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if float(self.noise_std) < 0 or float(self.learning_rate) <= 0:
            raise ValueError("noise_std must be >= 0 and learning_rate > 0")
        if self.folds is not None:
            folds = sorted({int(k) for k in np.atleast_1d(self.folds)})
            if not folds or folds[0] < 0 or folds[-1] >= self.n_folds:
                raise ValueError(f"folds must be indices in 0..{self.n_folds - 1}, "
                                 f"got {self.folds!r}")
            self.folds = folds
        self.model_kwargs = dict(self.model_kwargs or {})
        self.loss_kwargs = dict(self.loss_kwargs or {})
        self.seed, self.patience = int(self.seed), int(self.patience)
        self.learning_rate, self.val_fraction = float(self.learning_rate), float(self.val_fraction)
        self.noise_std, self.threshold = float(self.noise_std), float(self.threshold)
        if self.bn_momentum is not None:
            self.bn_momentum = float(self.bn_momentum)
            if not 0.0 < self.bn_momentum < 1.0:
                raise ValueError(f"bn_momentum must be in (0, 1) or None, got {self.bn_momentum}")
        check_precision(self.precision)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of to_dict; also accepts a whole config.json ({"config": {...}, ...})."""
        d = d.get("config", d)
        check_field_names(d, "TrainConfig fields")
        return cls(**d)

    @classmethod
    def from_json(cls, path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def check_field_names(names, what: str) -> None:
    """ValueError listing the names that are not TrainConfig fields (``what`` names them)."""
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(names) - valid
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; valid: {sorted(valid)}")


def identity(config: dict) -> dict:
    """The fields of a TrainConfig dict that must match to resume a run."""
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}
