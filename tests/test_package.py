"""The package root and the command line's names: lazy loading without TensorFlow, a complete
public API, and the plain-name tuples of oct_seg.names equal to the registries they mirror."""
import subprocess
import sys

import oct_seg
from oct_seg import names

# the public API before the root became lazy (oct_seg 0.1.0): none of it may go missing
PUBLIC_0_1_0 = {
    "MODELS", "PRESETS", "build_model", "build_unet", "build_att_unet", "build_r2_unet",
    "build_unet3plus", "build_transunet", "build_swin_unet", "unet_base", "att_unet_base",
    "r2_unet_base", "unet3plus_base", "transunet_base", "swin_unet_base", "predict_image",
    "input_requirements", "LOSSES", "get_loss", "DiceLoss", "TverskyLoss", "FocalTverskyLoss",
    "WeightedBCE", "CombinedLoss", "DiceCoefficient", "JaccardIndex", "case_scores",
    "score_table", "summarize_scores", "TrainConfig", "train", "cross_validate", "train_final",
    "evaluate_model", "evaluate_folder", "predict_files", "load_model", "export_model",
    "PRECISIONS", "precision_scope", "with_precision",
}


def _run(code):
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return run


def test_help_and_usage_errors_do_not_import_tensorflow():
    run = _run(
        "import sys\n"
        "from oct_seg.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['export', '--help'],\n"
        "             ['train', '--data', 'd', '--model', 'vnet', '--loss', 'dice',\n"
        "              '--out', 'o'],\n"
        "             ['export', '--model', 'm.keras', '--out', 'o', '--format', 'tflite']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        print('exit', exit.code)\n"
        "print('loaded', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    lines = run.stdout.strip().splitlines()
    assert [line for line in lines if line.startswith(("exit", "loaded"))] == [
        "exit 0", "exit 0", "exit 0", "exit 2", "exit 2", "loaded False False"]
    assert "invalid choice: 'vnet'" in run.stderr and "invalid choice: 'tflite'" in run.stderr
    for name in names.MODEL_NAMES + names.PRESET_NAMES + names.LOSS_NAMES:
        assert name in run.stdout  # the choices are listed in the help text


def test_root_is_lazy_and_its_names_resolve():
    run = _run(
        "import sys\n"
        "import oct_seg\n"
        "print('after import', 'tensorflow' in sys.modules)\n"
        "builder = oct_seg.build_transunet\n"
        "from oct_seg.models.transunet import build_transunet\n"
        "print('same builder', builder is build_transunet)\n"
        "from oct_seg import *\n"
        "print('star', all(name in globals() for name in oct_seg.__all__))\n")
    assert run.stdout.split("\n")[:3] == ["after import False", "same builder True", "star True"]
    assert run.stderr == ""  # TensorFlow's start-up notices are silenced


def test_public_api_is_complete():
    assert PUBLIC_0_1_0 <= set(oct_seg.__all__) <= set(dir(oct_seg))
    from oct_seg.training import train
    assert oct_seg.train is train and callable(oct_seg.TrainConfig)


def test_names_equal_the_registries():
    from oct_seg.export import FORMATS
    from oct_seg.losses import LOSSES
    from oct_seg.models.registry import MODELS, PRESETS

    assert names.MODEL_NAMES == tuple(MODELS)
    assert names.PRESET_NAMES == tuple(PRESETS)
    assert names.LOSS_NAMES == tuple(LOSSES)
    assert names.EXPORT_FORMATS == tuple(FORMATS)
