"""TrainConfig: every option of a training run, checked on creation, stored in config.json."""
from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import numpy as np

from oct_seg.inference import input_requirements
from oct_seg.losses import LOSSES, get_loss
from oct_seg.models.registry import MODELS, PRESETS, build_model
from oct_seg.precision import check_precision

# fields that may change between calls on one run dir (which folds to run); every other field
# is part of the run's identity, and a call with a different value is refused
NOT_IDENTITY = ("folds",)
CHECKPOINTS = ("last", "best")


def _size(value, name: str) -> tuple:
    """(height, width) from N or (H, W); both >= 8."""
    size = tuple(int(s) for s in np.atleast_1d(value))
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"{name} must be (height, width) >= 8, got {value!r}")
    return size


@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run (JSON round trip: to_dict / from_dict).

    Input size, two modes:
      native (default, ``image_size=None``): the network trains on ``patch_size`` patches
        cut from the B-scans at their own pixel spacing (``make_patch_dataset``; with
        probability ``foreground`` a patch is centred near fluid) and predicts whole
        B-scans at native size (padding), so a 2-pixel cyst stays 2 pixels. The default
        (256, 768) is a full-width strip of a 496 x 768 Spectralis B-scan.
      resize (``image_size=(h, w)``): the paper's choice, every B-scan stretched to h x w for
        training and prediction, probabilities resized back for scoring.
    The recipe's defaults (widths, batch norm, loss reduction and BCE weight, batch-norm
    momentum, output bias) are oct_seg.training.recipe's; model_kwargs / loss_kwargs
    override them.

    epochs: fixed length of the cosine schedule; one epoch = one patch per training scan;
    None: the recipe's for the model (recipe.epochs: 60, Swin-UNet 120), stored resolved.
    learning_rate: Adam's peak rate (after the warm-up epoch); None: the recipe's for the
    model (recipe.learning_rate: 1e-3, Swin-UNet 3e-4), stored resolved.
    checkpoint: "last" (default) keeps the model at the end of the schedule; "best" keeps the
    epoch with the best validation Dice and stops early after ``patience`` epochs without
    improvement. "last" is the honest default: choosing the epoch on the validation patients
    overstates their score, and a model trained on every patient (n_folds=1) has no
    validation set to choose with.
    batch_size is per replica (global = batch_size x replicas). folds: which fold indices to
    run (None = all). n_folds == 1 trains one deployment model on every subject (with
    checkpoint "best", a held-out share ``val_fraction`` of the subjects is kept aside to
    choose the epoch). noise_std: std of the additive Gaussian noise of the noisy test
    condition (images in [0, 1]; 0 = no noisy condition). augment: the pipeline's training
    augmentation (oct_seg.data.pipeline.Augment). augment_noise: additive Gaussian noise on
    the training samples, std drawn U(0, augment_noise) per sample (0, the default: none; a
    network trained without it marks no fluid on the noisy condition; needs augment).
    deterministic: TF op determinism.
    bn_momentum: "auto" (recipe.bn_momentum: ~one epoch of batches), a float, or None (the
    builder's 0.99). prior_bias: start the output bias at the fluid prior (recipe).
    precision: "float32", "mixed_bfloat16" or "mixed_float16" (oct_seg.precision); the saved
    model keeps it.
    """

    model: str = "unet"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    loss: str = "combined"
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    patch_size: tuple = (256, 768)
    image_size: tuple | None = None
    foreground: float = 0.5
    epochs: int | None = None
    batch_size: int = 4
    learning_rate: float | None = None
    seed: int = 0
    n_folds: int = 5
    folds: list | None = None
    checkpoint: str = "last"
    val_fraction: float = 0.2
    patience: int = 10
    noise_std: float = 0.1
    augment: bool = True
    augment_noise: float = 0.0
    deterministic: bool = False
    threshold: float = 0.5
    bn_momentum: float | str | None = "auto"
    prior_bias: bool = True
    precision: str = "float32"

    def __post_init__(self):
        self.patch_size = _size(self.patch_size, "patch_size")
        if self.image_size is not None:
            self.image_size = _size(self.image_size, "image_size")
        if not 0.0 <= float(self.foreground) <= 1.0:
            raise ValueError(f"foreground must be a probability in [0, 1], got {self.foreground!r}")
        self.foreground = float(self.foreground)
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {self.checkpoint!r}")
        if self.model not in MODELS and self.model not in PRESETS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(MODELS)} "
                             f"or a preset {sorted(PRESETS)}")
        from oct_seg.training import recipe
        if self.epochs is None:
            self.epochs = recipe.epochs(self.model)
        for name in ("epochs", "batch_size", "n_folds"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
            setattr(self, name, int(getattr(self, name)))
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {sorted(LOSSES)}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if self.learning_rate is None:
            self.learning_rate = recipe.learning_rate(self.model)
        if not float(self.learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not float(self.noise_std) >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}")
        if not float(self.augment_noise) >= 0:
            raise ValueError(f"augment_noise must be >= 0, got {self.augment_noise!r}")
        self.augment, self.augment_noise = bool(self.augment), float(self.augment_noise)
        if self.augment_noise > 0 and not self.augment:
            raise ValueError(f"augment_noise {self.augment_noise} needs augment=True")
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
        if self.bn_momentum is not None and self.bn_momentum != "auto":
            if isinstance(self.bn_momentum, str) or not 0.0 < float(self.bn_momentum) < 1.0:
                raise ValueError(f"bn_momentum must be in (0, 1), 'auto' or None, got "
                                 f"{self.bn_momentum!r}")
            self.bn_momentum = float(self.bn_momentum)
        self.prior_bias = bool(self.prior_bias)
        check_precision(self.precision)

    @property
    def native(self) -> bool:
        """True for native-resolution patch training (image_size None), False for resize."""
        return self.image_size is None

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


def check_buildable(config: TrainConfig) -> None:
    """ValueError unless the configured loss and network can be built and the network takes
    the training size: checked before a run writes anything, so that a bad argument fails
    before config.json is written (which would make the corrected command "a different
    configuration").

    Argument names are checked against the signatures (the message lists the valid ones);
    their values by building the loss and the network once, as training will (the recipe's
    kwargs with the user's on top; the build is symbolic, ~1 s, no pixel is computed); the
    training size (patch_size in native mode, image_size in resize mode) against the size
    rule the built network states (oct_seg.inference.input_requirements).
    """
    from oct_seg.training import recipe

    model, kwargs = config.model, recipe.network_kwargs(config.model, config.model_kwargs)
    builder = MODELS[PRESETS[model][0] if model in PRESETS else model]
    _check_names(builder, config.model_kwargs, f"model_kwargs of {model!r}",
                 reserved=("input_size", "n_labels"))
    _check_names(LOSSES[config.loss], config.loss_kwargs, f"loss_kwargs of {config.loss!r}")
    try:
        get_loss(config.loss, **recipe.loss_kwargs(config.loss, config.loss_kwargs))
    except Exception as err:  # a loss argument of the wrong type fails in many ways
        raise ValueError(f"loss {config.loss!r} with loss_kwargs {config.loss_kwargs}: "
                         f"{_first_line(err)}") from err
    try:
        net = build_model(model, input_size=(None, None, 1), n_labels=1, **kwargs)
    except Exception as err:  # builders fail in many ways on a bad argument
        raise ValueError(f"model {model!r} with model_kwargs {config.model_kwargs}: "
                         f"{_first_line(err)}") from err
    what, (h, w) = (("patch_size", config.patch_size) if config.native
                    else ("image_size", config.image_size))
    multiple, fixed = input_requirements(net)
    if fixed is not None and (h, w) != tuple(fixed):
        raise ValueError(f"{what} {h} x {w}: model {model!r} takes only {fixed[0]} x "
                         f"{fixed[1]} inputs")
    if h % multiple or w % multiple:
        raise ValueError(f"{what} {h} x {w}: model {model!r} with these model_kwargs needs "
                         f"height and width divisible by {multiple} (e.g. "
                         f"{max(multiple, h // multiple * multiple)} x "
                         f"{max(multiple, w // multiple * multiple)}), or fewer levels")


def _check_names(fn, kwargs: dict, what: str, reserved=()) -> None:
    """ValueError naming the keys of ``kwargs`` that ``fn`` does not take (or that training
    sets itself: ``reserved``)."""
    taken = sorted(set(kwargs) & set(reserved))
    if taken:
        raise ValueError(f"{what}: {taken} are set by training, not by kwargs")
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # takes any name: the build below judges
    valid = sorted(set(params) - set(reserved))
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"{what}: unknown argument(s) {unknown}; valid: {valid}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
