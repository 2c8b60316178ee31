"""The default of every backend hook, in `keras.ops`.

A backend module (`tensorflow.py`, `jax.py`, `torch.py`) defines only the
hooks it does differently; `keras_lazyadam.backend` takes the rest from here.
Each hook is documented here, once.
"""

import contextlib

import keras
from keras import ops

from keras_lazyadam.validation import wide_index_dtype as _wide_index_dtype


def is_native_variable(value):
    """Whether `value` is a variable of the framework itself (a `tf.Variable`)
    that the optimizer trains as it trains a Keras variable (tfa's `get_slot`
    and `load_tfa_weights` take it)."""
    return False


def to_sparse_rows(gradient, variable):
    """`(indices, values)` row slices of a native sparse gradient, else None.

    Native sparse gradients are `tf.IndexedSlices`, JAX `BCOO` and torch
    sparse COO; the JAX backend also recognises the dense gradient of a
    `LazyEmbedding` table whose lookup recorded its rows.
    """
    return None


def widen_indices(indices, int64=True):
    """Integer row indices in a signed dtype of at least 32 bits (see
    `validation.wide_index_dtype`), so that no later compare with the row count, nor
    cast, wraps a value onto another row (uint8 240 compared with 1,000
    rows; int16 30,000). Other dtypes are left for
    `validation.check_row_indices` to refuse."""
    wide = _wide_index_dtype(indices.dtype, int64)
    if wide is None or wide[0] == keras.backend.standardize_dtype(indices.dtype):
        return indices
    target, clamp = wide
    if clamp is not None:
        indices = ops.minimum(indices, ops.convert_to_tensor(clamp, dtype=indices.dtype))
    return ops.cast(indices, target)


def sparse_gradient(indices, values, shape):
    """The inverse of `to_sparse_rows`: a native row-sparse gradient
    (duplicates allowed), for custom training loops and tests."""
    raise NotImplementedError


def check_rows(indices, num_rows, name):
    """The indices, checked to be rows of a variable named `name`.

    Raises `ValueError` where the backend can see the values; where it
    cannot (compiled code), a bad row must be made harmless instead (the
    update then drops it). The default is for backends whose gathers and
    scatters reject out-of-range rows themselves.
    """
    return indices


def check_shape(gradient, variable):
    """A dense gradient whose dims were unknown while tracing (TF graphs
    traced with None dims), checked against the variable's shape when the
    step runs: the checked gradient, which the step's writes then wait for
    (see `after`); None where the static checks of `validation.py` saw the
    whole shape (always, on backends whose traced shapes are static)."""
    return None


def after(tensors, variables):
    """A context in which every write to `variables` (all that the step may
    write) runs after `tensors` (the checked indices, and the gradients that
    `check_shape` checked), so that a failed check leaves the whole step
    unapplied."""
    return contextlib.nullcontext()


def sequence(first, mask):
    """`mask` (a boolean tensor), as a value that a compiler computes only
    once `first` is computed. A whole compact update reads the old codes
    (and scales) in the variable's update and overwrites them in place;
    where nothing orders the two, XLA copies the whole codes array first
    (JAX: 1.7x the step of a fit with the stock `Embedding`). The identity
    where ops run in program order (eager) or writes follow their reads (TF
    graphs)."""
    return mask


def sum_rows(values, segments, num_segments):
    """The scatter-add that sums the rows of `values` into `num_segments`
    slots (slot indices in any order)."""
    return ops.segment_sum(values, segments, num_segments=num_segments)


def coalesce(indices, values, num_rows):
    """`(rows, sums)` of a `SparseRows` (see `sparse.py`): duplicate indices
    summed, spare slots at distinct rows >= num_rows.

    The default sorts (static shapes): the runs of equal indices number the
    slots 0 .. k-1, and slots k .. n-1 are spare.
    """
    indices = ops.cast(indices, "int32")  # checked rows: no value is lost
    n = ops.shape(indices)[0]
    # Rows that `check_rows` marked out of range (compiled code) add nothing.
    valid = ops.less(indices, num_rows)
    values = ops.where(ops.reshape(valid, (-1,) + (1,) * (len(values.shape) - 1)), values, 0)
    order = ops.argsort(indices)
    indices = ops.take(indices, order)
    values = ops.take(values, order, axis=0)
    previous = ops.concatenate([indices[:1], indices[:-1]])
    segments = ops.cumsum(ops.cast(ops.not_equal(indices, previous), "int32"))
    sums = sum_rows(values, segments, n)
    spare = num_rows + ops.arange(n, dtype="int32")
    rows = ops.scatter_update(spare, ops.expand_dims(segments, -1), indices)
    return rows, sums


def nonzero_rows(gradient):
    """`(indices, values)` of the rows of a dense gradient that are not all
    zero, where the backend can form a dynamic-size result cheaply; True
    where it finds every row touched; else None (the optimizer then masks
    the dense update by `touched_rows`). Asked only of variables too large
    for a whole update (`prefers_whole_update`)."""
    return None


# A variable of at most this many values takes a sparse gradient as a
# masked update of the whole of it (see `prefers_whole_update`).
_WHOLE_UPDATE_VALUES = 4096


def prefers_whole_update(num_rows, row_size, num_slots):
    """Whether a sparse gradient with `num_slots` coalesced slots (None if
    not known while tracing) is cheaper applied to the whole variable,
    masked by its rows, than gathered and scattered by rows. Decided from
    static sizes: the row update's fixed cost (coalescing, gathers and
    scatters of var, m, v) is worth it only past a few thousand values, and
    never when it would handle at least as many slots as there are rows."""
    if num_rows * row_size <= _WHOLE_UPDATE_VALUES:
        return True
    return num_slots is not None and num_slots >= num_rows


def touched_rows(gradient):
    """A boolean mask, shape `(rows, 1, ...)`: the rows of a dense gradient
    with a non-zero (or NaN) entry; or True when every row is known to be.

    Not `max(|g|) != 0`, though XLA reduces that faster: TF's XLA on CPU
    drops NaN in max/min, and a NaN row must count as touched.
    """
    axes = tuple(range(1, len(gradient.shape)))
    return ops.any(ops.not_equal(gradient, 0), axis=axes, keepdims=True)


def fused_dense_update(state, gradient, hyper):
    """The dense update (no row skipped) with a framework kernel fed from
    the same `Hyperparameters`; False where the generic rule serves."""
    return False


def fused_row_update(state, rows, sums, hyper):
    """The row update of `rows` (unique, in range) with a framework kernel
    fed from the same `Hyperparameters`; False where the generic rule
    serves."""
    return False


def gather_rows(variable, indices):
    """Whole rows of a variable. Rows dropped by `check_rows` may read as
    anything: their results are never written."""
    return ops.take(variable, indices, axis=0)


def scatter_rows(optimizer, variable, indices, rows):
    """Writes whole rows of a variable through `optimizer.assign`."""
    optimizer.assign(
        variable,
        ops.scatter_update(variable, ops.expand_dims(indices, -1), rows),
    )


def row_layout(variable):
    """The layout of a per-row slot of `variable` (shape `variable.shape[:1]`,
    `step_mode`'s `row_step`): the variable's layout along axis 0 under the
    current `keras.distribution`, so that the slot is sharded by rows with
    its table; None (the distribution's default) otherwise."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return None
    layout = distribution.get_variable_layout(variable)
    if isinstance(layout, keras.distribution.TensorLayout):
        return keras.distribution.TensorLayout(layout.axes[:1], layout.device_mesh)
    return None


def embedding_lookup(table, ids, sparse):
    """Rows of an embedding table, so that the table's gradient is sparse
    where the backend allows it (`sparse`: the optimizer takes sparse
    gradients)."""
    return ops.take(table, ids, axis=0)


def is_dense(ids):
    """Whether `ids` is a dense tensor (not sparse or ragged): only those
    take `embedding_lookup`'s sparse-gradient path."""
    return True


def reduces_codes():
    """Whether int8's old row maximum is reduced from the codes as stored
    (True), or from the decoded rows (False); the value is the same
    (`state.old_row_max`). XLA: the codes, as the decoded rows of a whole
    table are never materialised there (a reduction of them was: 256 MB
    for a 1M x 64 table)."""
    return True


def bitcast(x, dtype):
    """The bits of `x` read as `dtype`, of the same width (the bfloat16
    first moment is kept as its bits in an int16 slot). Each backend's own
    op: `keras.ops.view` is newer than the oldest Keras supported (3.10)."""
    raise NotImplementedError


def compute_gradients(loss, var_list, tape):
    """Gradients of a callable `loss` (tfa's `minimize` / `get_gradients`)."""
    raise NotImplementedError


class OptimizerMixin:
    """Overrides of `keras.optimizers.Optimizer` hooks that only a backend
    needs (TensorFlow's cross-replica sum)."""
