"""Shared test set-up.

The CPU is split into two logical devices before TensorFlow initialises, so that
MirroredStrategy code can be tested on a machine without GPUs. Real-data tests find the
Duke DME folder at $OCT_SEG_DATA/duke_dme (default: ../shared/data next to the repository)
and skip with a reason when it is absent.
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


@pytest.fixture(scope="session")
def duke_dir():
    """Path of the real Duke DME folder (images/, masks/, index.csv), or skip."""
    path = DATA_ROOT / "duke_dme"
    if not (path / "index.csv").is_file():
        pytest.skip(f"real Duke DME data not found at {path} (set OCT_SEG_DATA)")
    return path

