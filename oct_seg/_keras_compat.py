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


def prepare_distributed_fit(model, dataset, strategy) -> None:
    """Get a model made under ``strategy``'s scope ready for ``fit(dataset)``: two Keras 3.15
    behaviours of a distributed fit, worked around. A model of the default strategy is left
    as it is.

    1. fit() first builds the compiled state (optimizer, metric and loss variables) in
       ``_maybe_symbolic_build``, which takes ``next()`` of fit's own training iterator and
       throws that batch away: a fit under MirroredStrategy starts on the second batch (and,
       with a dataset that reshuffles per iterator, on another order), so it is not the fit
       of one device on the same global batches. The state is built here instead from the
       dataset's element spec (only shapes and dtypes matter), and that build is skipped.
       With MultiWorkerMirroredStrategy fit's build also fails outright: it calls
       ``strategy.reduce("MEAN", batch, axis=0)`` on a tuple of PerReplica batches
       (tensorflow#72388).
    2. MultiWorkerMirroredStrategy only: the per-step log reduction also calls
       ``strategy.reduce(..., axis=0)``, which fails on scalar logs; each step's logs get
       shape (1,) (epoch logs are re-read from the synced metric variables).
    """
    from oct_seg import distribute

    # Private: Model._distribute_strategy, set by Keras when the model is made under a
    # strategy scope other than the default one: the case in which fit() builds as above.
    if getattr(model, "_distribute_strategy", None) is None:
        return
    with strategy.scope():
        # Private: Model._symbolic_build, what fit() runs to create the optimizer and metric
        # variables; given the element spec instead of a batch taken from fit's iterator.
        model._symbolic_build(data_batch=dataset.element_spec)
    # Private: Model._maybe_symbolic_build, fit()'s call of the build above; a no-op now.
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if not distribute.is_multi_worker(strategy):
        return
    for name in ("train_step", "test_step"):  # public methods, wrapped
        step = getattr(model, name)

        def wrapped(data, _step=step):
            return {k: keras.ops.reshape(v, (1,)) for k, v in _step(data).items()}

        setattr(model, name, wrapped)
