"""What LazyAdam and `LazyEmbedding` note on a variable, for each other.

Neither module imports the other: the optimizer marks the tables it trains,
the layer reads the mark; the JAX lookup records its rows, the optimizer
takes them. Both notes are plain attributes of the variable object, so they
live and die with it.
"""

_TAKES_SPARSE = "_keras_lazyadam_takes_sparse_gradients"
_RECORDED_ROWS = "_keras_lazyadam_recorded_rows"


def mark_takes_sparse(variable):
    """Records that `variable`'s optimizer accepts sparse gradients."""
    setattr(variable, _TAKES_SPARSE, True)


def takes_sparse(variable):
    return getattr(variable, _TAKES_SPARSE, False)


def record_rows(variable, record):
    """Leaves `record` (the JAX lookup's row gradient) for one `pop_rows`."""
    setattr(variable, _RECORDED_ROWS, record)


def pop_rows(variable):
    """The record left by `record_rows`, once (then None)."""
    record = getattr(variable, _RECORDED_ROWS, None)
    if record is not None:
        setattr(variable, _RECORDED_ROWS, None)  # drop the references
    return record
