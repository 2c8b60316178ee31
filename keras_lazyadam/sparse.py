"""Row-sparse gradients, backend-neutral (all maths in `keras.ops`).

A `SparseRows` is a gradient that touches only some rows (slices along axis 0)
of a variable. It is always *coalesced*: duplicate row indices have been summed
(the lazy Adam update is non-linear, so they must be). Its shapes are static,
which keeps it usable under `jax.jit` and XLA:

- `indices` (n,): the row of every input position (sorted, unless the
  backend numbers unique rows itself).
- `segments` (n,): the slot of every position; equal rows share a slot, and
  the slots used are 0 .. (number of unique rows - 1).
- `sums` (n, ...): the summed gradient of every slot. Slots past the number of
  unique rows are zero, so norms computed from `sums` are exact.

Every position `p` then gets the update of row `indices[p]` with gradient
`sums[segments[p]]`: duplicate positions compute identical rows, so writing
them all back with a scatter is well defined on every backend.
"""

from keras import ops

from keras_lazyadam import backend


class SparseRows:
    """A coalesced row-sparse gradient. Build it with `coalesce`."""

    def __init__(self, indices, segments, sums):
        self.indices = indices
        self.segments = segments
        self.sums = sums

    def with_sums(self, sums):
        return SparseRows(self.indices, self.segments, sums)

    def rows(self, unique_count=None):
        """`(row indices, gradient rows)` to update.

        Without `unique_count`: one entry per position, duplicates included
        (static shapes). With it (the number of unique rows, where the
        backend can have dynamic shapes): each row once.
        """
        if unique_count is None:
            return self.indices, self.position_values()
        return self.slot_indices()[:unique_count], self.sums[:unique_count]

    def position_values(self):
        """The summed gradient of the row at every position, shape (n, ...)."""
        return ops.take(self.sums, self.segments, axis=0)

    def slot_indices(self):
        """The row of every slot; unused slots repeat the first row.

        `(slot_indices(), sums)` is a valid uncoalesced sparse gradient of the
        same value: unused slots add zero to a row that is present anyway.
        """
        first_row = ops.sum(self.indices[:1])  # 0 when there are no rows
        rows = ops.full_like(self.indices, first_row)
        return ops.scatter_update(rows, ops.expand_dims(self.segments, -1), self.indices)

    def row_slices(self):
        """`(indices, values)`: an uncoalesced form of the same gradient."""
        return self.slot_indices(), self.sums

    def squared_norm(self):
        return ops.sum(ops.square(self.sums))

    def densify(self, shape):
        return backend.sum_rows(self.sums, self.slot_indices(), shape[0])

    def __mul__(self, scale):
        return self.with_sums(ops.multiply(self.sums, scale))

    __rmul__ = __mul__

    def __truediv__(self, scale):
        return self.with_sums(ops.divide(self.sums, scale))


def coalesce(indices, values):
    """Sums the values of duplicate indices. Returns a `SparseRows`.

    Args:
        indices: int tensor (n,), row indices, in any order, with duplicates.
        values: tensor (n, ...), the gradient slice of every index.
    """
    indices = ops.cast(indices, "int32")
    segments = backend.unique_segments(indices)
    if segments is None:  # sort, then number the runs of equal indices
        order = ops.argsort(indices)
        indices = ops.take(indices, order)
        values = ops.take(values, order, axis=0)
        previous = ops.concatenate([indices[:1], indices[:-1]])
        new_row = ops.cast(ops.not_equal(indices, previous), "int32")
        segments = ops.cumsum(new_row)
    sums = backend.sum_rows(values, segments, ops.shape(indices)[0])
    return SparseRows(indices, segments, sums)


def unique_rows(indices, values):
    """A `SparseRows` for indices known to be unique and sorted."""
    indices = ops.cast(indices, "int32")
    segments = ops.arange(ops.shape(indices)[0], dtype="int32")
    return SparseRows(indices, segments, values)


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
