"""Row-sparse gradients, backend-neutral (all maths in `keras.ops`).

A `SparseRows` is a gradient that touches only some rows (slices along axis 0)
of a variable. It is always *coalesced*: duplicate row indices have been summed
(the lazy Adam update is non-linear, so they must be). It is a list of slots:

- `rows` (s,): the row of every slot, each row at most once. A slot that
  holds no row (coalescing left it over) has a row >= `num_rows`, distinct
  from every other: gathers may read anything there and scatters drop it.
- `sums` (s, ...): the summed gradient of every slot (zero in spare slots,
  so norms computed from `sums` are exact).

Backends with static shapes (JAX, XLA) keep one slot per input position;
backends with dynamic shapes may keep exactly one slot per unique row.
"""

from keras import ops

from keras_lazyadam import backend


class SparseRows:
    """A coalesced row-sparse gradient. Build it with `coalesce`."""

    def __init__(self, rows, sums, num_rows):
        self.rows = rows
        self.sums = sums
        self.num_rows = num_rows

    def with_sums(self, sums):
        return SparseRows(self.rows, sums, self.num_rows)

    def present_rows(self):
        """`rows`, with spare slots moved to a row that is present anyway
        (their sums are zero): a valid uncoalesced gradient of the same
        value, with no row out of range."""
        if self.rows.shape[0] == 0:
            return self.rows
        spare = ops.greater_equal(self.rows, self.num_rows)
        return ops.where(spare, ops.min(self.rows), self.rows)

    def row_slices(self):
        """`(indices, values)`: an uncoalesced form of the same gradient."""
        return self.present_rows(), self.sums

    def squared_norm(self):
        return ops.sum(ops.square(self.sums))

    def densify(self, shape):
        return backend.sum_rows(self.sums, self.present_rows(), shape[0])

    def densify_with_mask(self, shape):
        """`(dense gradient, rows mask)`: the mask (shape `(rows, 1, ...)`)
        marks every row listed, a row whose sum is zero included."""
        valid = ops.less(self.rows, self.num_rows)
        index = ops.where(valid, self.rows, 0)  # spare slots add nothing
        sums = ops.where(_per_slot(valid, len(self.sums.shape)), self.sums, 0)
        dense = backend.sum_rows(sums, index, shape[0])
        counts = backend.sum_rows(ops.cast(valid, "int32"), index, shape[0])
        mask = ops.reshape(ops.greater(counts, 0), (shape[0],) + (1,) * (len(shape) - 1))
        return dense, mask

    def __mul__(self, scale):
        return self.with_sums(ops.multiply(self.sums, scale))

    __rmul__ = __mul__

    def __truediv__(self, scale):
        return self.with_sums(ops.divide(self.sums, scale))


def _per_slot(mask, rank):
    return ops.reshape(mask, (-1,) + (1,) * (rank - 1))


def coalesce(indices, values, num_rows):
    """Sums the values of duplicate indices. Returns a `SparseRows`.

    Args:
        indices: int tensor (n,), row indices in [0, num_rows), in any
            order, with duplicates.
        values: tensor (n, ...), the gradient slice of every index.
        num_rows: the number of rows of the variable.
    """
    rows, sums = backend.coalesce(indices, values, num_rows)
    return SparseRows(rows, sums, num_rows)


def unique_rows(indices, values, num_rows):
    """A `SparseRows` for indices known to be unique."""
    return SparseRows(indices, values, num_rows)


def clip_gradients(grads, clipnorm, global_clipnorm, clipvalue, clip_by_norm):
    """Keras' `clipnorm` / `global_clipnorm` / `clipvalue`, where the norm of
    a `SparseRows` is that of its summed rows."""
    if clipnorm and clipnorm > 0:
        return [map_values(clip_by_norm, g) for g in grads]
    if global_clipnorm and global_clipnorm > 0:
        squares = [ops.cast(squared_norm(g), "float32") for g in grads if g is not None]
        norm = ops.sqrt(ops.sum(ops.stack(squares)))
        clip = global_clipnorm
        # NaN/Inf norms make the scale NaN, as in Keras.
        scale = clip * ops.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        return [None if g is None else g * ops.cast(scale, dtype_of(g)) for g in grads]
    if clipvalue and clipvalue > 0:
        return [map_values(lambda x: ops.clip(x, -clipvalue, clipvalue), g) for g in grads]
    return grads


def map_values(fn, gradient):
    """`fn` of a gradient's values (a `SparseRows`' sums), or None."""
    if gradient is None:
        return None
    if isinstance(gradient, SparseRows):
        return gradient.with_sums(fn(gradient.sums))
    return fn(gradient)


def squared_norm(gradient):
    if isinstance(gradient, SparseRows):
        return gradient.squared_norm()
    return ops.sum(ops.square(gradient))


def dtype_of(gradient):
    return (gradient.sums if isinstance(gradient, SparseRows) else gradient).dtype
