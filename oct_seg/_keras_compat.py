"""The Keras internals oct_seg relies on, in one place.

Tested with Keras 3.15.1 only (requirements.txt); setup.cfg allows keras>=3.15,<3.16 for that
reason. Every function names the private attribute it touches and why no public API does
the job; when Keras changes, this is the one module to check.
"""
from __future__ import annotations

import keras


def set_fit_start_epoch(model, epoch: int) -> None:
    """Make the running ``model.fit`` continue at ``epoch`` (0-based count of finished epochs).

    Private: ``Model._initial_epoch``. fit() reads it right after the callbacks'
    on_train_begin (``initial_epoch = self._initial_epoch or initial_epoch``), which is how
    keras.callbacks.BackupAndRestore moves the start epoch to the restored one; the public
    ``fit(initial_epoch=...)`` is fixed before the backup is read.
    """
    model._initial_epoch = int(epoch)


def patch_for_multi_worker(model, dataset, strategy) -> None:
    """Work around two Keras 3.15 bugs with MultiWorkerMirroredStrategy (tensorflow#72388).

    fit()'s ``_maybe_symbolic_build`` and the per-step log reduction call
    ``strategy.reduce("MEAN", v, axis=0)``, which fails on a tuple of PerReplica batches and
    on scalar logs. So: build the compiled state (optimizer, metrics) from one local batch
    (only shapes matter) and skip that build; give each step's logs shape (1,) so the
    reduction over axis 0 is valid (epoch logs are re-read from the synced metric variables).
    """
    batch = next(iter(dataset))
    with strategy.scope():
        # Private: Model._symbolic_build, what fit() runs to create the optimizer and metric
        # variables; called here on one local batch instead of fit's distributed iterator.
        model._symbolic_build(data_batch=batch)
    # Private: Model._maybe_symbolic_build, fit()'s call of the build above; a no-op now.
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    for name in ("train_step", "test_step"):  # public methods, wrapped
        step = getattr(model, name)

        def wrapped(data, _step=step):
            return {k: keras.ops.reshape(v, (1,)) for k, v in _step(data).items()}

        setattr(model, name, wrapped)
