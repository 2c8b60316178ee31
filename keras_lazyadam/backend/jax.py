"""JAX half of LazyAdam: `BCOO` in, functional row scatters out.

Under `jax.jit` with donated buffers (Keras' trainer) XLA performs the
`.at[rows].set(...)` scatters in place.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.experimental import sparse as jax_sparse

from keras_lazyadam import marks
from keras_lazyadam import validation
from keras_lazyadam.backend import defaults


def to_sparse_rows(grad, variable):
    if not isinstance(grad, jax_sparse.BCOO):
        return _looked_up_rows(grad, variable)
    name = validation.name_of(variable)
    validation.check_shape(variable, grad.shape)
    if grad.n_batch:
        raise ValueError(
            f"The gradient of {name!r}: LazyAdam takes BCOO gradients without "
            f"batch dimensions. Received: n_batch={grad.n_batch}"
        )
    eager = not isinstance(grad.indices, jax.core.Tracer)
    indices, values = grad.indices, grad.data
    if eager:
        # Eager ops compile once per shape: padded to a power of two (and
        # widened), a new number of entries each step compiles nothing new.
        indices, values = _bucket(indices, values, grad.shape[: grad.n_sparse])
    else:
        # Before any compare: uint8 240 >= 1,000 rows wraps in uint8.
        indices = widen_indices(indices)
    n, num_rows = indices.shape[0], grad.shape[0]
    rows = indices[:, 0]
    # BCOO's padding (`nse` larger than needed: `sum_duplicates(nse=...)`)
    # has every index at the shape and a zero value. As `num_rows + 1` it is
    # out of range, so every row write drops it, and `check_rows` lets it
    # through; an entry at the shape with a value is an error as any other.
    at_shape = jnp.all(indices == jnp.asarray(grad.shape[: grad.n_sparse]), axis=1)
    zero = jnp.all(values == 0, axis=tuple(range(1, values.ndim)))
    padding = at_shape & zero
    if eager:
        # Checked here, where padding is known: a row `num_rows + 1` given
        # by the caller must raise, not pass for padding in `check_rows`.
        _raise_bad_rows(rows, ((rows < 0) | (rows >= num_rows)) & ~padding, num_rows, name)
    bad = jnp.zeros(n, bool)
    inner = []
    for axis in range(1, grad.n_sparse):
        column, size = indices[:, axis], grad.shape[axis]
        bad = bad | (((column < 0) | (column >= size)) & ~padding)
        inner.append(jnp.where(padding, 0, column))
    if eager and bool(jnp.any(bad)):
        raise ValueError(
            f"Element indices of the gradient of {name!r} must be inside the "
            f"variable's shape {tuple(grad.shape)}. Received: "
            f"{indices[bad][:5].tolist()}"
        )
    if inner:
        # Element-sparse: every stored element becomes a row slice holding
        # that one element; coalescing then sums them per row. Under jit a
        # bad element is dropped (its row marked out of range), never
        # wrapped or clamped onto another column.
        rows_values = jnp.zeros((n,) + tuple(grad.shape[1:]), values.dtype)
        values = rows_values.at[(jnp.arange(n),) + tuple(inner)].set(values)
        padding = padding | bad
    return jnp.where(padding, num_rows + 1, rows), values


def widen_indices(indices):
    return defaults.widen_indices(indices, int64=jax.config.read("jax_enable_x64"))


def _bucket(indices, values, shape):
    """Eager BCOO entries, indices widened (`widen_indices`), padded with
    BCOO's own padding (indices at the shape, zero values) to a power of
    two, at least 8. On the host: an op on the device would itself compile
    for every new size."""
    n = indices.shape[0]
    size = max(8, 1 << (n - 1).bit_length())
    wide = validation.wide_index_dtype(indices.dtype, jax.config.read("jax_enable_x64"))
    if size == n and (wide is None or wide == (indices.dtype.name, None)):
        return indices, values
    indices = np.asarray(indices)
    if wide is not None:
        target, clamp = wide
        indices = (indices if clamp is None else np.minimum(indices, clamp)).astype(target)
    if size == n:
        return jnp.asarray(indices), values
    pad_indices = np.broadcast_to(np.asarray(shape, indices.dtype), (size - n, indices.shape[1]))
    pad_values = np.zeros((size - n,) + tuple(values.shape[1:]), values.dtype)
    return (
        jnp.asarray(np.concatenate([indices, pad_indices])),
        jnp.asarray(np.concatenate([np.asarray(values), pad_values])),
    )


def _raise_bad_rows(indices, bad, num_rows, name):
    if bool(jnp.any(bad)):
        raise ValueError(
            f"Row indices of the gradient of {name!r} must be in "
            f"[0, {num_rows}). Received: {indices[bad][:5].tolist()}"
        )


def sparse_gradient(indices, values, shape):
    indices = jnp.asarray(indices, jnp.int32)[:, None]
    return jax_sparse.BCOO((jnp.asarray(values), indices), shape=tuple(shape))


def check_rows(indices, num_rows, name):
    """Raises on bad rows when it can see them; under jit, drops them.

    Traced indices cannot raise: a row outside [0, num_rows) is mapped to
    `num_rows`, which gathers as NaN and is dropped by every scatter, so the
    rest of the step applies and the bad row changes nothing.
    """
    padding = indices == num_rows + 1  # see `to_sparse_rows` (checked there)
    bad = ((indices < 0) | (indices >= num_rows)) & ~padding
    if not isinstance(indices, jax.core.Tracer):
        _raise_bad_rows(indices, bad, num_rows, name)
    return jnp.where(bad | padding, num_rows, indices)


def coalesce(indices, values, num_rows):
    """Coalesces without sorting (XLA:CPU's sort dominated the step).

    Every position scatters its own number into a row-indexed scratch; the
    one that wins a row's entry is that row's slot, and every position of
    the row adds its values there. Losing positions become spare slots at
    distinct rows `num_rows + position`, so row writes may assume unique
    indices and drop them. Rows that `check_rows` marked out of range
    (`num_rows`) add to no slot: they count in no norm either. Same sums,
    bit for bit, as the sorted order on the CPU (scatter-adds run in
    position order there).
    """
    n, indices = indices.shape[0], indices.astype(jnp.int32)  # checked rows
    position = jnp.arange(n, dtype=jnp.int32)
    if num_rows == 0:
        return position, jnp.zeros_like(values)  # no rows: every slot is spare
    winner = jnp.zeros(num_rows, jnp.int32).at[indices].set(position, mode="drop")
    slot = jnp.take(winner, indices, mode="fill", fill_value=n)
    sums = jax.ops.segment_sum(values, slot, num_segments=n)
    return jnp.where(slot == position, indices, num_rows + position), sums


def touched_rows(gradient):
    # max |g| per row reduces faster on XLA:CPU than any(g != 0) (a Keras
    # `Embedding` table's dense gradient, 1M x 64: 47 ms against 80), and
    # jnp.max propagates NaN, so a NaN row still counts as touched.
    if gradient.size == 0:
        return True  # nothing to mask (and max has no identity there)
    axes = tuple(range(1, gradient.ndim))
    return jnp.max(jnp.abs(gradient), axis=axes, keepdims=True) != 0


def gather_rows(variable, indices):
    return jnp.take(variable.value, indices, axis=0, mode="fill")


def scatter_rows(optimizer, variable, indices, rows):
    # Rows that `check_rows` mapped out of range are dropped.
    rows = rows.astype(variable.dtype)
    new = variable.value.at[indices].set(rows, mode="drop", unique_indices=True)
    optimizer.assign(variable, new)


def compute_gradients(loss, var_list, tape=None):
    if tape is not None:
        raise ValueError(
            "`tape` is a TensorFlow notion; on JAX pass `loss` as a callable "
            f"and leave `tape=None`. Received: tape={tape!r}"
        )

    def loss_of(values):
        with keras.StatelessScope(state_mapping=list(zip(var_list, values))):
            return loss()

    return jax.grad(loss_of)([v.value for v in var_list])


def embedding_lookup(table, ids, sparse):
    """`take` whose backward pass also leaves the looked-up rows' gradient.

    Keras' JAX trainer differentiates every trainable variable as a dense
    array, and forming that array (a scatter into a fresh table-sized zero
    buffer) costs as much as a whole Adam step. So the backward pass records
    `(ids, gradient of the looked-up rows)` on the variable, next to the
    dense gradient it returns. `to_sparse_rows` hands LazyAdam those rows
    when it is given that very dense gradient (same trace, nothing added to
    it); the dense gradient is then unused and XLA drops it. Any other
    consumer (another optimizer, loss scaling) gets the correct dense array.
    """
    if not sparse:
        return jnp.take(table.value, ids, axis=0)
    # As jnp.take (and so keras.layers.Embedding): -1 is the last row, an id
    # past either end reads NaN. Normalised here, once, so that the rows
    # recorded for LazyAdam are the rows read (an id past an end becomes
    # `rows`, which every row write drops).
    rows = table.shape[0]
    ids = jnp.where(ids < 0, ids + rows, ids)
    ids = jnp.where((ids < 0) | (ids >= rows), rows, ids)

    @jax.custom_vjp
    def lookup(value, ids):
        return jnp.take(value, ids, axis=0)

    def forward(value, ids):
        return jnp.take(value, ids, axis=0), (value, ids)

    def backward(residuals, rows_gradient):
        value, ids = residuals
        dense = jnp.zeros_like(value).at[ids].add(rows_gradient)
        marks.record_rows(table, (dense, ids, rows_gradient))
        return dense, None

    lookup.defvjp(forward, backward)
    return lookup(table.value, ids)


def is_dense(ids):
    return not isinstance(ids, jax_sparse.JAXSparse)


def _looked_up_rows(grad, variable):
    """`(ids, rows)` recorded by `embedding_lookup` if `grad` is its output."""
    recorded = marks.pop_rows(variable)
    if recorded is None:
        return None
    dense, ids, rows = recorded
    if grad is not dense:
        return None
    row_shape = tuple(dense.shape[1:])
    return ids.reshape(-1), rows.reshape((-1,) + row_shape)


def sequence(first, mask):
    # A data dependence XLA keeps: one element of `first`, compared so that
    # the result is True whatever it holds (NaN included). An
    # optimization_barrier does not order anything: XLA removes it before
    # copy insertion.
    element = jnp.ravel(first)[0]
    return mask & ((element == element) | (element != element))


def bitcast(x, dtype):
    return jax.lax.bitcast_convert_type(jnp.asarray(x), dtype)
