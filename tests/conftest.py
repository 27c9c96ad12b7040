"""Shared test set-up.

The CPU is split into two logical devices before TensorFlow initialises, so that
MirroredStrategy code can be tested on a machine without GPUs. Real-data tests find the
Duke DME folder at $OCT_SEG_DATA/duke_dme (default: ../shared/data next to the repository),
the reference paper's tables at ../shared/paper/tables.csv next to the repository, and skip
with a reason when they are absent.
"""
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_ROOT = pathlib.Path(os.environ.get("OCT_SEG_DATA", REPO.parent / "shared" / "data"))
PAPER_ROOT = REPO.parent / "shared" / "paper"


@pytest.fixture(scope="session")
def duke_dir():
    """Path of the real Duke DME folder (images/, masks/, index.csv), or skip."""
    path = DATA_ROOT / "duke_dme"
    if not (path / "index.csv").is_file():
        pytest.skip(f"real Duke DME data not found at {path} (set OCT_SEG_DATA)")
    return path


@pytest.fixture(scope="session")
def paper_tables_csv():
    """Path of the reference paper's Tables 1, 3 and 4 as printed (tables.csv), or skip."""
    path = PAPER_ROOT / "tables.csv"
    if not path.is_file():
        pytest.skip(f"the paper's tables (tables.csv) not found at {path}")
    return path
