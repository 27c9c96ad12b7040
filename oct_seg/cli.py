"""`oct-seg` command line: train, evaluate, predict, export, data duke, data retouch, demo.

Every command prints a one-line `oct-seg: error: ...` on stderr and exits with status 1 when an
input is wrong (missing file, not a model, not an image, unwritable output, ...); --debug shows
the full traceback instead. Outputs are written to a temporary folder next to --out and renamed
at the end, so a failed command leaves no half-written output.

Layout: one parser builder per command (`_add_<command>`) beside its handler (`_<command>`).
Parsing imports neither TensorFlow nor Keras (choices come from oct_seg.names), so --help and
usage errors answer at once; TensorFlow is imported, quietly, just before a command runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
from pathlib import Path

from oct_seg import names
from oct_seg._version import __version__

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Raw description/epilog; shows defaults, except None and False."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


_COMMON = argparse.ArgumentParser(add_help=False)
_COMMON.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                     help="show full tracebacks instead of one-line error messages")


def _add(sub, name, help_text, description, epilog=""):
    return sub.add_parser(name, help=help_text, formatter_class=_Formatter, parents=[_COMMON],
                          description=textwrap.dedent(description).strip(),
                          epilog=textwrap.dedent(epilog).strip() or None)


# ------------------------------------------------------------------------------ argument types
def _size(values, flag="--image-size"):
    """--image-size / --patch-size N or H W -> (H, W)."""
    if len(values) in (1, 2) and min(values) > 0:
        return (values[0], values[-1])
    raise ValueError(f"{flag} {' '.join(map(str, values))}: give one positive size N "
                     "(square) or two: H W")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _json_arg(text, flag):
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} is not valid JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object like '{{\"filter_num\": [16, 32]}}'")
    return value


def _check_data_dir(path: Path):
    """Fail before the slow work (models, training) on a folder that is not a data folder."""
    from oct_seg.data.readers import check_data_folder

    check_data_folder(path)


# ----------------------------------------------------------------------------------------- train
def _add_train(sub):
    p = _add(sub, "train", "train a model (cross-validation or one final model)", """
        Train a segmentation network on a data folder (images/, masks/, optional index.csv,
        e.g. from `oct-seg data duke`). With --folds K > 1 runs subject-wise K-fold
        cross-validation (all folds, or only --fold I); with --folds 1 trains one deployment
        model on every subject. The defaults are the recipe of oct_seg.training.recipe (native-resolution
        patches, batch norm, batch Dice + weighted BCE, the last epoch of a cosine schedule).
        A data folder whose index.csv names classes (e.g. IRF;SRF;PED from `oct-seg data
        retouch`) trains a softmax over background + those classes, scored per class.
        The run folder holds config.json, per-fold models, training curves and metrics;
        rerunning the same command resumes it.""",
        """
        examples:
          oct-seg train --data data/duke --out runs/unet_cv            (defaults: U-Net, 5 folds)
          oct-seg train --data data/duke --folds 1 --out runs/unet      (deployment model)
          oct-seg train --data data/duke --model transunet --loss focal_tversky --out runs/tu
          oct-seg train --data data/duke --image-size 512 512 ...   (the paper's resizing)
          oct-seg train ... --devices cpu:2        (MirroredStrategy over 2 logical CPUs)""")
    p.add_argument("--data", required=True, type=Path, help="data folder (images/, masks/, optional index.csv)")
    p.add_argument("--model", default="unet", choices=names.MODEL_NAMES + names.PRESET_NAMES,
                   metavar="MODEL", help="network or preset: %(choices)s")
    p.add_argument("--loss", default="combined", choices=names.LOSS_NAMES, metavar="LOSS",
                   help="loss: %(choices)s")
    p.add_argument("--folds", type=_positive_int, default=5,
                   help="number of cross-validation folds (1 = one deployment model)")
    p.add_argument("--fold", type=int, metavar="K",
                   help="run only fold K (0-based) of the --folds cross-validation")
    p.add_argument("--patch-size", type=int, nargs="+", metavar="N",
                   help="native-resolution training patch: N (square) or H W; default 256 768")
    p.add_argument("--image-size", type=int, nargs="+", metavar="N",
                   help="train on B-scans resized to N x N or H x W instead of native patches "
                        "(the paper: 512 512)")
    p.add_argument("--epochs", type=_positive_int,
                   help="epochs (length of the cosine schedule); default the recipe's (60, "
                        "Swin-UNet 120)")
    p.add_argument("--checkpoint", choices=("last", "best"),
                   help="keep the last epoch (default) or the best by validation Dice, with "
                        "early stopping")
    p.add_argument("--batch-size", type=_positive_int, help="batch size per device")
    p.add_argument("--learning-rate", type=float,
                   help="Adam's peak learning rate; default the recipe's (1e-3, Swin-UNet 3e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, weights, augmentation")
    p.add_argument("--augment-noise", type=float, metavar="S",
                   help="add Gaussian noise of std U(0, S) to each training sample (images in "
                        "[0, 1]) so the model also segments noisy B-scans; default 0 (none)")
    p.add_argument("--model-kwargs", metavar="JSON",
                   help='builder arguments as JSON, e.g. \'{"filter_num": [16, 32, 64]}\'')
    p.add_argument("--loss-kwargs", metavar="JSON", help="loss arguments as JSON")
    p.add_argument("--bn-momentum", metavar="M",
                   help="momentum of every batch-norm layer, or 'auto' (default: about one "
                        "epoch of batches; see oct_seg.training.recipe)")
    p.add_argument("--precision", choices=names.PRECISIONS,
                   help="compute precision (mixed_bfloat16: ~1.6x faster training on CPUs with "
                        "AVX512_BF16; see oct_seg.precision); default float32")
    p.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism: the same command on the same machine and "
                        "versions gives the same weights bit for bit (the presets are built so)")
    p.add_argument("--devices", nargs="+", metavar="DEV",
                   help="devices for MirroredStrategy, e.g. /GPU:0 /GPU:1, or cpu:N to split "
                        "the CPU into N logical devices; default: all GPUs / TF_CONFIG")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--overwrite", action="store_true",
                   help="restart the run folder even if it holds a run with another config")
    p.set_defaults(func=_train)


def _momentum(text):
    """--bn-momentum: 'auto' or a float."""
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--bn-momentum {text!r}: give a number in (0, 1) or 'auto'") from None


def _devices(names_):
    if not names_:
        return None
    if len(names_) == 1 and names_[0].lower().startswith("cpu:"):
        from oct_seg.distribute import configure_cpu_devices

        count = names_[0].split(":", 1)[1]
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--devices {names_[0]}: use cpu:N with N >= 1, or device names")
        return configure_cpu_devices(int(count))
    return list(names_)


def _train(args):
    from oct_seg.distribute import get_strategy
    from oct_seg.training import TrainConfig, train

    _check_data_dir(args.data)
    devices = _devices(args.devices)
    config = dict(model=args.model, loss=args.loss, seed=args.seed, n_folds=args.folds)
    if args.fold is not None:
        if args.folds < 2 or not 0 <= args.fold < args.folds:
            raise ValueError(f"--fold {args.fold}: must be in 0..{args.folds - 1} of --folds "
                             f"{args.folds} (cross-validation needs --folds >= 2)")
        config["folds"] = [args.fold]
    optional = dict(image_size=_size(args.image_size) if args.image_size else None,
                    patch_size=_size(args.patch_size, "--patch-size") if args.patch_size
                    else None, checkpoint=args.checkpoint,
                    epochs=args.epochs, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, bn_momentum=_momentum(args.bn_momentum),
                    precision=args.precision, deterministic=args.deterministic or None,
                    augment_noise=args.augment_noise,
                    model_kwargs=_json_arg(args.model_kwargs, "--model-kwargs"),
                    loss_kwargs=_json_arg(args.loss_kwargs, "--loss-kwargs"))
    config.update({k: v for k, v in optional.items() if v is not None})
    summary = train(args.data, args.out, TrainConfig(**config), overwrite=args.overwrite,
                    strategy=get_strategy(devices))
    if len(summary):
        print(summary.to_string())
    print(f"run folder: {args.out}")
    return 0


# -------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub):
    p = _add(sub, "evaluate", "score a model on a labelled data folder", """
        Predict every B-scan of a labelled data folder at its original size and print the
        per-image Dice, Jaccard, sensitivity and precision and their summary (mean, std).
        --noise-std adds the reproducible Gaussian noise of the paper's noisy test condition.
        --model may be a training run folder: its fold models are averaged (an ensemble;
        score it only on patients that none of its folds trained on). A multi-class folder
        (index.csv column classes, e.g. from `oct-seg data retouch`) needs a softmax model
        trained on those classes: each class is scored (dice_IRF, jaccard_IRF, ...) and
        dice / jaccard are their means over the fluid classes.""",
        """
        examples:
          oct-seg evaluate --model runs/tu/final/model.keras --data data/duke --out scores.csv
          oct-seg evaluate --model runs/unet_cv --tta --data new_patients --out scores.csv""")
    p.add_argument("--model", required=True, type=Path,
                   help=".keras file, SavedModel folder, training run folder (ensemble) or "
                        "pretrained preset")
    p.add_argument("--data", required=True, type=Path, help="data folder (images/, masks/, optional index.csv)")
    p.add_argument("--noise-std", type=float, default=0.0,
                   help="std of Gaussian noise added to the [0, 1] images")
    p.add_argument("--image-size", type=int, nargs="+", metavar="N",
                   help="resize to this size for the network (training size); default: the "
                        "model's own input size if fixed, else native size with padding")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold")
    p.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average with the mirrored B-scan (2x time)")
    p.add_argument("--out", type=Path, metavar="CSV", help="write per-image scores to this CSV")
    p.set_defaults(func=_evaluate)


def _evaluate(args):
    import pandas as pd

    from oct_seg.data.readers import read_dataset
    from oct_seg.evaluate import evaluate_model
    from oct_seg.io import check_file_target, write_csv
    from oct_seg.loading import load_models
    from oct_seg.metrics import summarize_scores

    if args.noise_std < 0:
        raise ValueError(f"--noise-std must be >= 0, got {args.noise_std}")
    if args.out is not None:
        check_file_target(args.out)
    _check_data_dir(args.data)
    models = load_models(args.model)
    scans = read_dataset(args.data)
    if args.image_size:
        image_size = _size(args.image_size)
    else:
        h, w = models[0].input_shape[1:3]
        image_size = (h, w) if h and w else None
    scores = evaluate_model(models, scans, image_size=image_size, noise_std=args.noise_std,
                            seed=args.seed, threshold=args.threshold, tta=args.tta)
    summary = summarize_scores(scores)
    with pd.option_context("display.max_rows", 500, "display.width", 120,
                           "display.float_format", "{:.4f}".format):
        print(scores.to_string(index=False))
        print()
        print(summary.to_string())
    if args.out is not None:
        write_csv(args.out, scores)
        print(f"scores: {args.out}")
    return 0


# --------------------------------------------------------------------------------------- predict
def _add_predict(sub):
    p = _add(sub, "predict", "segment B-scan images and OCT volumes", """
        Segment fluid in B-scan images (.png .jpg .bmp .tif) of any size and in OCT volumes
        (multi-page .tif B-scan stacks, e.g. ImageJ exports; Heidelberg .vol / .e2e, Topcon
        .fds / .fda, Zeiss .img, MetaImage .mhd + .raw, e.g. RETOUCH). Writes into --out:
          masks/NAME.png       fluid mask (0 / 255; multi-class model: class ids 0..C-1)
          overlays/NAME.png    fluid in translucent cyan on the grey B-scan (multi-class:
                               one colour per class, legend band below the B-scan)
          fluid_areas.csv      per B-scan: fluid pixels and mm^2 (+ per class: NAME_pixels,
                               NAME_area_mm2)
          fluid_volumes.csv    per volume: fluid mm^3 = sum(area mm^2) x B-scan spacing
                               (+ per class: NAME_volume_mm3)
          reports/VOL_*        per volume of > 1 B-scan: one-page report (B-scan through
                               the fovea, en-face fluid map, ETDRS table), en-face map as
                               PNG and 16-bit TIFF, ETDRS sector table (mm^2, mm^3) as CSV
        mm values need the pixel spacing: .vol (ScaleX, ScaleZ, Distance), .fds/.fda
        (PARAM_SCAN), .mhd (ElementSpacing) and TIFF stacks with ImageJ / OME calibration give it; .e2e (axial
        only), .img and images do not: pass --spacing. The fovea is found from the images
        (deepest point of the foveal pit) unless --fovea gives it; the eye (nasal side of
        the grid) comes from the file (.vol, .e2e, .fds/.fda, Zeiss file names) or --eye.""",
        """
        examples:
          oct-seg predict --model run/savedmodel scans/*.png --out predictions
          oct-seg predict --model model.keras patient1.vol --out p1 --threshold 0.4
          oct-seg predict --model model.keras cube.img --img-shape 1024 200 \\
                          --spacing 0.03 0.00195 0.03 --eye OS --out p2
          oct-seg predict --model model.keras patient1.vol --fovea 24 250 --out p1b""")
    p.add_argument("--model", required=True, type=Path,
                   help=".keras file, SavedModel folder, training run folder (its fold "
                        "models averaged) or pretrained preset (`oct-seg presets`)")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image or volume files")
    p.add_argument("--out", required=True, type=Path, help="output folder (must not exist or be empty)")
    p.add_argument("--threshold", type=float, default=0.5, help="fluid probability threshold")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("LATERAL", "AXIAL", "BSCAN"),
                   help="pixel spacing in mm (A-scan spacing, depth per pixel, distance between "
                        "B-scans); overrides the file's; use 0 to keep the file's value")
    p.add_argument("--img-shape", type=int, nargs=2, default=(1024, 512), metavar=("ROWS", "COLS"),
                   help="B-scan size of Zeiss .img files (not stored in the file)")
    p.add_argument("--batch-size", type=_positive_int, default=4,
                   help="B-scans per model call (same-size B-scans of one volume); more is "
                        "faster but needs more memory")
    p.add_argument("--precision", choices=names.PRECISIONS,
                   help="run a float32 .keras model in this precision (mixed_bfloat16: ~1.8x "
                        "faster on CPUs with AVX512_BF16, probabilities differ by ~1e-2); "
                        "default: the model's own")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average with the mirrored B-scan (2x time)")
    p.add_argument("--fovea", type=int, nargs=2, metavar=("B-SCAN", "COLUMN"),
                   help="fovea of the (one) input volume: B-scan index and A-scan column, "
                        "from 0; default: found from the images")
    p.add_argument("--eye", choices=names.EYES,
                   help="right (OD) or left (OS) eye, overriding the file's; default: the "
                        "file's, else nasal / temporal are left unnamed")
    p.add_argument("--report-format", choices=names.REPORT_FORMATS, default="png",
                   help="format of the one-page volume reports")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="names of a multi-class model's fluid classes 1, 2, ... (e.g. IRF SRF "
                        "PED); default: from its training run, else class1, class2, ...")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)


def _predict(args):
    from oct_seg.predict import predict_files
    from oct_seg.volumes import Spacing

    spacing = None
    if args.spacing:
        values = [v if v > 0 else None for v in args.spacing]
        if any(v < 0 for v in args.spacing):
            raise ValueError(f"--spacing values must be >= 0 mm, got {args.spacing}")
        spacing = Spacing(*values, source="--spacing")
    areas = predict_files(args.model, args.inputs, args.out, threshold=args.threshold,
                          spacing=spacing, overwrite=args.overwrite,
                          img_shape=tuple(args.img_shape), progress=not args.no_progress,
                          batch_size=args.batch_size, precision=args.precision,
                          tta=args.tta, fovea=args.fovea, eye=args.eye,
                          report_format=args.report_format, classes=args.classes)
    reports = ", volume reports" if (args.out / "reports").is_dir() else ""
    print(f"{len(areas)} B-scans from {len(args.inputs)} input(s): masks, overlays, "
          f"fluid_areas.csv and fluid_volumes.csv{reports} in {args.out}")
    return 0


# ---------------------------------------------------------------------------------------- export
def _add_export(sub):
    p = _add(sub, "export", "export a model as SavedModel, ONNX or LiteRT", """
        Export a trained model for deployment. savedmodel: --out is a TensorFlow SavedModel
        (endpoint `serve`, float32 (batch, H, W, 1) in [0, 1] -> fluid probabilities) that
        loads with plain tf.saved_model.load and in `oct-seg predict`; onnx: --out/model.onnx
        (needs tf2onnx + onnx); litert: --out/model.tflite. --out/oct_seg.json states the
        input size rule (multiple / fixed size) for padding or resizing B-scans.""",
        """
        example:
          oct-seg export --model runs/tu/final/model.keras --out deploy/tu --format savedmodel""")
    p.add_argument("--model", required=True, type=Path,
                   help=".keras model file or pretrained preset")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--format", choices=names.EXPORT_FORMATS, default="savedmodel",
                   help="export format")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=_export)


def _export(args):
    from oct_seg.export import export_model

    path = export_model(args.model, args.out, format=args.format, overwrite=args.overwrite)
    print(f"{args.format} export: {path}")
    return 0


# ------------------------------------------------------------------------------------------ data
def _add_data(sub):
    p = _add(sub, "data", "prepare data sets", "Prepare data sets for training and evaluation.")
    data_sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    d = _add(data_sub, "duke", "convert the Duke DME data set (Chiu et al. 2015)", """
        Convert the Duke DME release (the zip, or a folder of Subject_NN.mat files) into a
        data folder: images/NAME.png, masks/NAME.png (fluid), instances/, index.csv.""",
        """
        example:
          oct-seg data duke --source 2015_BOE_Chiu.zip --out data/duke --grader 1""")
    d.add_argument("--source", required=True, type=Path, help="zip file or folder of .mat files")
    d.add_argument("--out", required=True, type=Path, help="output data folder")
    d.add_argument("--grader", type=int, choices=(1, 2), default=1,
                   help="which expert's manual fluid annotation to use")
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    d.set_defaults(func=_data_duke)
    r = _add(data_sub, "retouch", "convert RETOUCH-style MetaImage volumes (IRF, SRF, PED)", """
        Convert RETOUCH-style cases (Bogunovic et al. 2019; any folder below --source holding
        oct.mhd/.raw and reference.mhd/.raw, labels 0 background, 1 IRF, 2 SRF, 3 PED) into a
        multi-class data folder: images/NAME.png (every B-scan, pixels unchanged),
        masks/NAME.png (class ids 0..3), index.csv (subject = vendor_case, voxel spacing in
        mm, per-class fluid fractions, classes = IRF;SRF;PED). Every header is checked
        before anything is written.""",
        """
        example:
          oct-seg data retouch --source RETOUCH-TrainingSet-Cirrus --out data/retouch_cirrus""")
    r.add_argument("--source", required=True, type=Path,
                   help="folder holding the case folders (e.g. TRAIN001/oct.mhd)")
    r.add_argument("--out", required=True, type=Path, help="output data folder")
    r.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    r.set_defaults(func=_data_retouch)


def _data_retouch(args):
    from oct_seg.data.retouch import convert_retouch

    convert_retouch(args.source, args.out, overwrite=args.overwrite)
    print(f"data folder: {args.out}")
    return 0


def _data_duke(args):
    from oct_seg.data.duke import convert_duke

    if not args.source.exists():
        raise FileNotFoundError(f"{args.source}: Duke source (zip or folder) not found")
    convert_duke(args.source, args.out, grader=args.grader, overwrite=args.overwrite)
    print(f"data folder: {args.out}")
    return 0


# ------------------------------------------------------------------------------------------ demo
def _add_demo(sub):
    p = _add(sub, "demo", "train a small TransUNet in minutes, or show a pretrained preset", """
        The whole pipeline on a fresh machine: writes synthetic OCT phantoms (or uses --data),
        trains a CPU-sized TransUNet for a few minutes, evaluates it on held-out subjects and
        writes a run folder with metrics, overlays, training curves, the .keras model and a
        SavedModel. Prints where everything is.
        --pretrained: no training; segments B-scans with a shipped pretrained preset
        (default duke_dme_fluid) and compares them with the truth: the --data B-scans with
        the most fluid, subjects the preset did not train on first (the Duke release's
        subjects 9 and 10), else a synthetic phantom volume.""",
        """
        examples:
          oct-seg demo
          oct-seg demo --fluid-types --out demo_types     (IRF, SRF and PED as classes)
          oct-seg demo --data data/duke --minutes 10 --out demo_duke
          oct-seg demo --pretrained --data data/duke_all       (no training, ~10 s)""")
    p.add_argument("--data", type=Path, help="labelled data folder instead of synthetic phantoms")
    p.add_argument("--out", type=Path,
                   help="run folder (default demo_run; demo_preset with --pretrained)")
    p.add_argument("--pretrained", nargs="?", const="duke_dme_fluid", metavar="PRESET",
                   help="show this pretrained preset instead of training (default "
                        "duke_dme_fluid)")
    p.add_argument("--minutes", type=float, default=None,
                   help="training time budget in minutes (3; 0.2 with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny settings that finish in seconds")
    p.add_argument("--fluid-types", action="store_true",
                   help="multi-class phantoms (IRF, SRF, PED in their anatomical places) and a "
                        "softmax network scored per class")
    p.add_argument("--seed", type=int, default=0, help="seed of phantoms, split and weights")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=_demo)


def _demo(args):
    from oct_seg.demo import run_demo, run_preset_demo

    if args.data is not None:
        _check_data_dir(args.data)
    if args.pretrained is not None:
        if args.quick or args.minutes is not None or args.fluid_types:
            raise ValueError("--pretrained trains nothing: drop --quick / --minutes / "
                             "--fluid-types")
        run_preset_demo(out=args.out or Path("demo_preset"), data=args.data,
                        preset=args.pretrained, seed=args.seed, overwrite=args.overwrite)
        return 0
    run_demo(out=args.out or Path("demo_run"), data=args.data, minutes=args.minutes,
             quick=args.quick, seed=args.seed, overwrite=args.overwrite,
             fluid_types=args.fluid_types)
    return 0


# --------------------------------------------------------------------------------------- presets
def _add_presets(sub):
    p = _add(sub, "presets", "list the pretrained models that ship with oct_seg", """
        Without a subcommand: list the shipped pretrained presets (name, network, size,
        cross-validated Dice, checksum status). Use a preset wherever a model is asked for:
        `oct-seg predict --model duke_dme_fluid ...`, `oct-seg export --model duke_dme_fluid
        ...`, oct_seg.from_preset("duke_dme_fluid"). Each preset folder holds a MODEL_CARD.md.
        `presets make` packages a finished deployment run (`oct-seg train --folds 1`) as a
        preset folder of your own (float16 weights, checksums, model card).""",
        """
        examples:
          oct-seg presets
          oct-seg predict --model duke_dme_fluid eye.vol --out eye_fluid
          oct-seg presets make --run runs/clinic --name clinic_fluid --card CARD.md \\
                               --input "Spectralis B-scans" --out models/clinic_fluid""")
    p.set_defaults(func=_presets_list)
    make_sub = p.add_subparsers(dest="action", metavar="ACTION")
    m = _add(make_sub, "make", "package a deployment run as a preset folder", """
        Write a preset folder from RUN/final of a `oct-seg train --folds 1` run: network.json,
        weights.npz (float16), preset.json (network, recipe, data, command, versions, and
        --metadata), MODEL_CARD.md (--card) and SHA256SUMS.""")
    m.add_argument("--run", required=True, type=Path, help="deployment run folder")
    m.add_argument("--name", required=True, help="preset name")
    m.add_argument("--description", default="", help="one-line description")
    m.add_argument("--input", required=True, dest="input_note",
                   help="what input the model expects (device, B-scan kind)")
    m.add_argument("--card", required=True, type=Path, help="model card (Markdown file)")
    m.add_argument("--metadata", type=Path, metavar="JSON",
                   help="JSON file of further preset.json fields, e.g. cross_validation")
    m.add_argument("--out", required=True, type=Path, help="preset folder to write")
    m.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    m.set_defaults(func=_presets_make)


def _presets_list(args):
    from oct_seg.presets import list_presets

    rows = list_presets()
    if not rows:
        print("no pretrained presets installed")
    for row in rows:
        dice = row["cv_pooled_dice"]
        folds = f" ({row['cv_folds']} folds)" if row["cv_folds"] else ""
        print(f"{row['name']}: {row['description']}\n"
              f"  network {row['network']}, {row['parameters']:,} parameters, "
              f"{row['weights_mb']} MB float16 weights; cross-validated pooled Dice "
              f"{dice if dice is not None else 'not stated'}{folds}\n"
              f"  checksums: {row['status']}\n  folder: {row['folder']} (MODEL_CARD.md)")
    print(f"network configurations for `oct-seg train --model`: {', '.join(names.PRESET_NAMES)}")
    return 0


def _presets_make(args):
    import json

    from oct_seg.presets import preset_from_run

    for path, what in ((args.card, "--card"), (args.metadata, "--metadata")):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{path}: {what} file not found")
    extra = None
    if args.metadata is not None:
        try:
            extra = json.loads(args.metadata.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{args.metadata}: not valid JSON ({err})") from None
    out = preset_from_run(args.run, args.out, args.name, args.description,
                          args.card.read_text(), args.input_note, extra=extra,
                          overwrite=args.overwrite)
    print(f"preset: {out}")
    return 0


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The `oct-seg` parser (imports no TensorFlow)."""
    parser = argparse.ArgumentParser(
        prog="oct-seg", formatter_class=_Formatter,
        description="Fluid segmentation in retinal OCT B-scans (U-Net family, TransUNet).",
        epilog=textwrap.dedent("""
            start here:   oct-seg demo              (trains, evaluates and exports a small
                                                     TransUNet on synthetic B-scans, ~4 min CPU)
            no training:  oct-seg predict --model duke_dme_fluid eye.vol --out eye_fluid
                                                    (the shipped pretrained model; oct-seg presets)
            help on one command:  oct-seg COMMAND --help""").strip())
    parser.add_argument("--version", action="version", version=f"oct-seg {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line error messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in (_add_train, _add_evaluate, _add_predict, _add_export, _add_data,
                        _add_presets, _add_demo):
        add_command(sub)
    return parser


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError):
        text = f"missing key {text}"
    return " ".join(text.split())


@contextlib.contextmanager
def _interrupt_on_sigterm():
    """While running a command, turn SIGTERM (kill, job schedulers) into KeyboardInterrupt so
    temporary output folders are removed as on Ctrl-C (main thread only)."""
    import signal
    import threading

    def _raise(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings(command: str):
    """While running a command, print each warning as one `oct-seg COMMAND: warning: ...`
    line (Python's default adds the file, line number and the source line that raised it,
    which mean nothing to a user of the command)."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"oct-seg {command}: warning: {' '.join(str(message).split())}",
              file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv=None) -> int:
    """Run the `oct-seg` command line; returns the exit status (0 = success).

    Ctrl-C at any point from here on ends with one line and status 130, also while the
    command line is parsed (argparse's own exit for --help / usage errors passes through).
    Before this function runs, Python itself is starting (site packages, ~30 ms): an
    interrupt there is Python's, not ours.
    """
    args = None
    try:
        args = build_parser().parse_args(argv)
        command = " ".join(filter(None, (args.command, getattr(args, "dataset", None))))
        from oct_seg._tf_import import import_tensorflow_quietly

        with _interrupt_on_sigterm(), _one_line_warnings(command):
            import_tensorflow_quietly()  # every command needs it; its notices are not ours
            return args.func(args)
    except KeyboardInterrupt:
        resume = ("rerun the same command to resume" if getattr(args, "command", "") == "train"
                  else "no partial output was kept")  # train keeps its resumable run folder
        print(f"oct-seg: interrupted; {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # one clear line for the user; --debug for the traceback
        if args is None or args.debug:
            raise
        print(f"oct-seg {command}: error: {_message(err)}", file=sys.stderr)
        return EXIT_ERROR

if __name__ == "__main__":
    sys.exit(main())
