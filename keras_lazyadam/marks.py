"""What LazyAdam and `LazyEmbedding` note on a variable, for each other.

Neither module imports the other: the optimizer marks the tables it trains,
the layer reads the mark; the JAX lookup records its rows, the optimizer
takes them. Both notes are plain attributes of the variable object, so they
live and die with it.
"""

import weakref

from keras_lazyadam import upstream

_TAKES_SPARSE = "_keras_lazyadam_takes_sparse_gradients"
_RECORDED_ROWS = "_keras_lazyadam_recorded_rows"


def mark_takes_sparse(variable, optimizer):
    """Records that `optimizer` (weakly held) takes sparse gradients for
    `variable`."""
    setattr(variable, _TAKES_SPARSE, weakref.ref(optimizer))


def takes_sparse(variable):
    """Whether `variable`'s gradient may be sparse now: its marking optimizer
    is alive and, inside a compiled model's call, is that model's optimizer.
    A model compiled again with another optimizer (or wrapped in loss
    scaling) gets dense gradients, which every optimizer takes."""
    owner = getattr(variable, _TAKES_SPARSE, None)
    owner = owner() if owner is not None else None
    if owner is None:
        return False
    current = upstream.calling_model_optimizer()
    return current is None or current is owner


def record_rows(variable, record):
    """Leaves `record` (the JAX lookup's row gradient) for one `pop_rows`."""
    setattr(variable, _RECORDED_ROWS, record)


def pop_rows(variable):
    """The record left by `record_rows`, once (then None)."""
    record = getattr(variable, _RECORDED_ROWS, None)
    if record is not None:
        setattr(variable, _RECORDED_ROWS, None)  # drop the references
    return record
