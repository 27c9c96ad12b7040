"""Device set-up, distribution strategies and seeding for training.

This is the one module of the package that talks to ``tf.distribute`` / ``tf.config``
directly (Keras 3 has no backend-neutral equivalent of MirroredStrategy).

One machine
    ``get_strategy()`` returns ``tf.distribute.MirroredStrategy`` when more than one GPU is
    visible (or when devices are named, e.g. ``get_strategy(["/GPU:0", "/GPU:1"])`` or the
    two logical CPUs made by ``configure_cpu_devices(2)``), else the default strategy.
    ``TrainConfig.batch_size`` is per replica; the global batch is
    ``batch_size * strategy.num_replicas_in_sync``. Gradients are summed over replicas of a
    loss that Keras divides by the replica count, so a step equals the one-device step on
    the same global batch (tests/test_distribute.py checks this with the real losses).

Several machines (MultiWorkerMirroredStrategy)
    Set ``TF_CONFIG`` on every machine and start the *same* command on each, e.g. with two
    hosts::

        # host a (chief: worker 0 writes the run dir)
        TF_CONFIG='{"cluster": {"worker": ["a:12345", "b:12345"]},
                    "task": {"type": "worker", "index": 0}}' \\
            oct-seg train --data /shared/duke --model unet --loss combined --out /shared/run
        # host b: same command, "index": 1

    ``get_strategy()`` then returns ``MultiWorkerMirroredStrategy`` (collectives over gRPC,
    NCCL on GPUs). RUN_DIR and the data folder must be on a file system every worker can
    read (NFS, a bucket mount): all workers read the resume state from RUN_DIR, only the chief
    (``is_chief()``: task "chief", or worker 0 when there is no chief) writes there; the other
    workers write their copies of checkpoints and logs to a temporary folder that is deleted.
    Start all workers within a few minutes of each other; if one dies, kill the others and
    rerun the same command everywhere: training resumes from the chief's last backup.
"""
from __future__ import annotations

import itertools
import json
import os

import keras
import tensorflow as tf


def configure_cpu_devices(n: int) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices ("/CPU:0" .. "/CPU:n-1").

    Must run before TensorFlow initialises its devices (before any op or strategy). Calling it
    again with the same ``n`` is a no-op. Returns the logical device names.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * n
        )
    except RuntimeError as err:
        existing = tf.config.list_logical_devices("CPU")
        if len(existing) != n:
            raise RuntimeError(
                f"cannot split the CPU into {n} devices: TensorFlow is already initialised "
                f"with {len(existing)} logical CPU(s). Call configure_cpu_devices() first thing "
                "in the process, before building models or datasets."
            ) from err
    return [d.name.replace("/device:", "/") for d in tf.config.list_logical_devices("CPU")]


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}; got {raw[:200]!r}") from err


def get_strategy(devices=None):
    """Pick a ``tf.distribute.Strategy``.

    devices: list of device names ("/GPU:0", "/CPU:1", ...) -> MirroredStrategy over them.
    Else TF_CONFIG set -> MultiWorkerMirroredStrategy; else >1 visible GPU -> MirroredStrategy;
    else the default (one-device) strategy.
    """
    if devices is not None:
        devices = [str(d) for d in devices]
        if not devices:
            raise ValueError("devices is empty; pass None for automatic choice")
        return _mirrored(tuple(devices))
    if _tf_config().get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return _mirrored(tuple(d.name for d in gpus))
    return tf.distribute.get_strategy()


# Collective keys of each MirroredStrategy made here start at a multiple of this stride, as in
# TensorFlow's own strategy tests (strategy_combinations: "avoid key collision across subtests").
_KEY_STRIDE = 100_000
_key_bases = itertools.count(1)


def _mirrored(devices):
    """A MirroredStrategy over ``devices`` whose collective keys no other strategy of this
    process uses.

    Why: every MirroredStrategy numbers its all-reduces from the same start (group key
    1 + ``MirroredStrategy._collective_key_base``, instance keys 100, 101, ...), while the
    collective runtime is one per process and remembers the shape of every (group, instance)
    it has run. A second strategy over the same devices (another spelling of the device
    names, the automatic choice next to an explicit one, a strategy of the caller's own)
    replays those keys for the tensors of another model, and its first step fails with
    CollectiveReduceV2 "Shape mismatch in the collective instance 100". A fresh key base per
    strategy (set on the class only while this one is made, so strategies made elsewhere
    keep TensorFlow's default) gives every strategy its own keys.
    """
    cls = tf.distribute.MirroredStrategy
    default = cls._collective_key_base
    cls._collective_key_base = default + _KEY_STRIDE * next(_key_bases)
    try:
        return cls(devices=list(devices))
    finally:
        cls._collective_key_base = default


def is_chief() -> bool:
    """True for the process that writes results: no TF_CONFIG, task "chief", or worker 0
    of a cluster without a chief."""
    cfg = _tf_config()
    task = cfg.get("task") or {}
    if not cfg.get("cluster") or not task:
        return True
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cfg["cluster"]


def is_multi_worker(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy (collectives across processes)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def num_replicas(strategy) -> int:
    """Replicas taking part in one step (all devices of all workers)."""
    return int(strategy.num_replicas_in_sync)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend (keras.utils.set_random_seed); with
    ``deterministic`` also turn on TensorFlow op determinism (process-wide, slower)."""
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
