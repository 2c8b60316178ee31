"""TensorFlow half of LazyAdam: `tf.IndexedSlices` in, scatters out."""

import contextlib

import keras
import tensorflow as tf

from keras_lazyadam import validation
from keras_lazyadam.backend import defaults


def _tf_variable(variable):
    if isinstance(variable, keras.Variable):
        return variable.value  # the tf.Variable behind it
    return variable


def _name(variable):
    return getattr(variable, "path", None) or variable.name


def is_native_variable(value):
    return isinstance(value, tf.Variable)


def to_sparse_rows(grad, variable):
    if not isinstance(grad, tf.IndexedSlices):
        return None
    shape = _static_shape(grad.dense_shape)
    if shape is not None:
        validation.check_shape(variable, shape)
    # Indices may be a Python tuple or list (Keras' own tests build them so).
    indices, values = tf.convert_to_tensor(grad.indices), tf.convert_to_tensor(grad.values)
    if tf.executing_eagerly():
        return indices, values  # shapes are known: validation.py checks them
    return _checked_slices(indices, values, variable)


def _checked_slices(indices, values, variable):
    """The dims of a sparse gradient that a graph was traced without
    (`input_signature` with None, `reduce_retracing`), checked when it runs.
    Nothing is added where the static shapes say it all (in Keras' `fit`,
    only the count is open, on the trace of a last, smaller batch). Shapes
    known and wrong are `validation.py`'s, at trace time."""
    name = _name(variable)
    width = tuple(variable.shape[1:])
    if indices.shape.rank is None:
        indices = tf.ensure_shape(indices, (None,))
    rank = values.shape.rank
    open_width = not values.shape[1:].is_fully_defined()
    check_width = rank is None or (rank == 1 + len(width) and open_width)
    check_count = (
        indices.shape.rank == 1 and rank != 0 and None in (indices.shape[0], values.shape[0])
    )
    if not (check_width or check_count):
        return indices, values
    if _building_for_xla():
        # No asserts there: the compiler refuses these for a bad shape.
        if check_width:
            values = tf.ensure_shape(values, (None,) + width)
        if check_count:
            indices = tf.reshape(indices, tf.shape(values)[:1])
        return indices, values
    checks = []
    if check_width:
        checks.append(
            (
                tf.reduce_all(tf.equal(tf.shape(values, out_type=tf.int64)[1:], width)),
                f"The gradient of variable {name!r} must have the variable's "
                f"shape {tuple(variable.shape)}. Received: gradient values of shape",
                tf.shape(values),
            )
        )
    if check_count:
        checks.append(
            (
                tf.equal(tf.size(indices), tf.shape(values)[0]),
                f"The gradient of {name!r} must have one row index per row of "
                "values. Received: indices, values shapes",
                [tf.shape(indices), tf.shape(values)],
            )
        )
    empty = (tf.zeros((0,), indices.dtype), tf.zeros((0,) + width, values.dtype))
    return _checked(checks, (indices, values), empty)


def check_shape(gradient, variable):
    if tf.executing_eagerly() or gradient.shape.is_fully_defined():
        return None
    expected = tuple(variable.shape)
    if _building_for_xla():
        return tf.ensure_shape(gradient, expected)  # no asserts there: fails to compile
    ok = tf.reduce_all(tf.equal(tf.shape(gradient, out_type=tf.int64), expected))
    message = (
        f"The gradient of variable {_name(variable)!r} must have the variable's "
        f"shape {expected}. Received: gradient shape"
    )
    return _checked(
        [(ok, message, tf.shape(gradient))], gradient, tf.zeros(expected, gradient.dtype)
    )


def _checked(checks, tensors, fallback):
    """`tensors`, through a `tf.cond` on `checks` ((ok, message, data) each)
    whose other branch asserts, then gives `fallback` (well-shaped).

    An assert on the side would not do: TensorFlow's graph optimizer
    (grappler's constant folding) infers the shapes of `tensors` from the
    ops downstream, assuming the graph valid, and folds such asserts away;
    a kernel downstream then fails part-way through the step. The cond
    hides the shapes of `tensors` from the ops downstream, and `after`
    makes every write wait for it.
    """
    ok = checks[0][0]
    for good, _, _ in checks[1:]:
        ok = ok & good

    def refuse():
        asserts = [tf.debugging.Assert(good, [m] + tf.nest.flatten(d)) for good, m, d in checks]
        with tf.control_dependencies(asserts):
            return tf.nest.map_structure(tf.identity, fallback)

    return tf.cond(ok, lambda: tf.nest.map_structure(tf.identity, tensors), refuse)


def _static_shape(dense_shape):
    """An IndexedSlices' declared shape (None for a dimension a graph does
    not know), or None where not even its rank is known."""
    if dense_shape is None:
        return None
    dense_shape = tf.convert_to_tensor(dense_shape)  # a list or tuple is allowed
    value = tf.get_static_value(dense_shape, partial=True)
    if value is not None:
        return tuple(None if d is None else int(d) for d in value)
    rank = dense_shape.shape[0] if dense_shape.shape.rank == 1 else None
    return None if rank is None else (None,) * rank


def sparse_gradient(indices, values, shape):
    return tf.IndexedSlices(
        tf.convert_to_tensor(values),
        tf.convert_to_tensor(indices),
        tf.constant(shape, tf.int64),
    )


def check_rows(indices, num_rows, name):
    limit = tf.cast(num_rows, indices.dtype)
    message = f"Row indices of the gradient of {name!r} must be in [0, {num_rows}). Received: "
    if tf.executing_eagerly():
        bad = (indices < 0) | (indices >= limit)
        if bool(tf.reduce_any(bad)):
            raise ValueError(message + str(tf.boolean_mask(indices, bad)[:5].numpy().tolist()))
        return indices
    if _building_for_xla():
        # XLA drops asserts: there a bad row becomes `num_rows`, which every
        # row write drops, rather than being clamped, or cast (int64 ->
        # int32) onto another row.
        return tf.where((indices < 0) | (indices >= limit), limit, indices)
    # Checked in graphs by one `tf.cond` whose other branch asserts: the
    # offending rows are formatted only there (formatting them every step
    # cost 3-5% of the 1M-row sparse step; `tf.debugging.assert_less` and
    # `assert_non_negative` guard their asserts with a cond each).
    ok = (tf.reduce_min(indices) >= 0) & (tf.reduce_max(indices) < limit)

    def refuse():
        bad = (indices < 0) | (indices >= limit)
        received = tf.strings.as_string(tf.boolean_mask(indices, bad)[:5])
        check = tf.debugging.Assert(
            False, [message, tf.strings.reduce_join(received, separator=", ")]
        )
        with tf.control_dependencies([check]):
            return tf.identity(indices)

    return tf.cond(ok, lambda: tf.identity(indices), refuse)


def _building_for_xla():
    """Whether the ops being built will be compiled by XLA (`jit_compile`).

    No public API says so. Under XLA a dynamic row count makes every step
    take seconds, while in graphs and eagerly it is the fast path, so this
    one private call is unavoidable; should it go away, the static path
    (correct everywhere) is taken.
    """
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return True
    graph = tf.compat.v1.get_default_graph()
    return control_flow_util.GraphOrParentsInXlaContext(graph)


def coalesce(indices, values, num_rows):
    if _building_for_xla():
        return defaults.coalesce(indices, values, num_rows)  # sorting wins there
    # Outside XLA, tf.unique (hash-based) beats sorting, and shapes may be
    # dynamic: exactly one slot per unique row.
    unique, segments = tf.unique(indices)
    return unique, tf.math.unsorted_segment_sum(values, segments, tf.size(unique))


# Row reads and writes must not use TensorFlow's own gather and scatter
# kernels on a resource variable (`ResourceGather`, `ResourceScatterUpdate`):
# they switch it to copy-on-read, and from then on every dense read (as
# `keras.layers.Embedding`'s lookup does, every step) copies the whole table,
# 24 ms for 1M x 64. So rows are read from a dense read of the variable (no
# copy while it is not in copy-on-read mode), and written inside XLA, whose
# scatter updates the variable in place and leaves its mode alone (and drops
# rows >= num_rows). Under an outer `jit_compile=True` all of this is simply
# compiled with the rest. A distributed variable (tf.distribute) takes TF's
# own kernels: its updates go through the strategy.


@tf.function(jit_compile=True, autograph=False)
def _scatter_in_xla(handle, indices, rows, shape):
    # The variable's handle, not the variable: a traced function keeps the
    # variables it was traced with, and those may be gone by the next call.
    # A handle does not show the variable's shape: `shape` keys the traces.
    tf.raw_ops.ResourceScatterUpdate(resource=handle, indices=indices, updates=rows)


# Bucket sizes: the powers of two from 8 to 2**32 (past any int32 count).
_BUCKETS = [2**k for k in range(3, 33)]


def _bucket_size(count):
    """The bucket of `count` rows (an int64 scalar tensor): the smallest
    power of two >= max(count, 8), found in integers (float32 logs put
    2**21 + 1 in the bucket of 2**21)."""
    buckets = tf.constant(_BUCKETS, tf.int64)
    return buckets[tf.searchsorted(buckets, tf.reshape(count, (1,)))[0]]


def _bucket(indices, rows, num_rows):
    """Pads a dynamic number of rows up to a power of two (spare rows at
    `num_rows`, out of range), so that XLA compiles the scatter for a few
    sizes, not each. The ops on `indices` alone are the same for a
    variable and its slots (the graph optimizer computes them once)."""
    count = tf.size(indices, out_type=tf.int64)
    spare = _bucket_size(count) - count
    padding = tf.fill(tf.reshape(spare, (1,)), tf.cast(num_rows, indices.dtype))
    rank = tf.rank(rows) if rows.shape.rank is None else rows.shape.rank
    pads = tf.concat([[[0, spare]], tf.zeros((rank - 1, 2), tf.int64)], 0)
    return tf.concat([indices, padding], 0), tf.pad(rows, pads)


def _distributed(variable):
    return isinstance(variable, tf.distribute.DistributedValues)


def gather_rows(variable, indices):
    variable = _tf_variable(variable)
    if _distributed(variable):
        return tf.gather(variable, tf.minimum(indices, variable.shape[0] - 1))
    return tf.gather(tf.convert_to_tensor(variable), indices)  # a dense read


def scatter_rows(optimizer, variable, indices, rows):
    target = _tf_variable(variable)
    if _distributed(target) and not _building_for_xla():
        # TF's own scatter kernel rejects spare rows: drop them.
        keep = indices < target.shape[0]
        indices, rows = tf.boolean_mask(indices, keep), tf.boolean_mask(rows, keep)
    optimizer.assign(variable, tf.IndexedSlices(rows, indices))


def after(tensors, variables):
    if not tensors or tf.executing_eagerly():
        return contextlib.nullcontext()  # eager checks have raised already
    return _after_in_graph(tensors, variables)


@contextlib.contextmanager
def _after_in_graph(tensors, variables):
    # Control dependencies reach only the ops built here that take no input
    # built here; Keras' own writes (the iteration count) may take none. So
    # each variable is also read here, after the checks: tf.function's
    # automatic control dependencies order every later write to a variable
    # after its earlier reads, and so after the checks.
    with tf.control_dependencies(tensors):
        for variable in variables:
            _tf_variable(variable).read_value()
        yield


def is_dense(ids):
    return not isinstance(ids, (tf.SparseTensor, tf.RaggedTensor))


def compute_gradients(loss, var_list, tape=None):
    if tape is None:
        with tf.GradientTape() as tape:
            value = loss()
    else:
        value = loss
    return tape.gradient(value, [_tf_variable(v) for v in var_list])


class OptimizerMixin:
    """Row writes in XLA, and sums of `SparseRows` across replicas."""

    def __dir__(self):
        # TensorFlow's checkpointing (`tf.train.Checkpoint`, SavedModel)
        # takes an object whose dir() lists `get_slot_names` for a Keras 2
        # optimizer, and saves what its `get_slot(x, name)` returns for
        # every tracked `x` as a separate slot variable. A Keras 3 optimizer
        # saves its slots as its own variables (so does Keras' Adam, which
        # has no `get_slot_names`): the same slots twice fail the save. So
        # tfa's `get_slot_names` works but is left out of dir().
        return [name for name in super().__dir__() if name != "get_slot_names"]

    def assign(self, variable, value):
        target = _tf_variable(variable)
        if not isinstance(value, tf.IndexedSlices) or _distributed(target):
            return super().assign(variable, value)
        if target.shape.num_elements() == 0:
            return  # no row to write; XLA refuses a scatter into zero rows
        indices = value.indices
        rows = tf.cast(value.values, tf.as_dtype(variable.dtype))
        if not _building_for_xla():
            indices, rows = _bucket(indices, rows, target.shape[0])
        scatter = _scatter_in_xla
        if tf.config.functions_run_eagerly():
            # `tf.config.run_functions_eagerly(True)` would run the scatter
            # eagerly, on TF's kernel, which rejects the spare rows (and
            # would switch the table to copy-on-read). A concrete function
            # still runs compiled: the same write as with the switch off.
            scatter = _scatter_in_xla.get_concrete_function(
                target.handle, indices, rows, tuple(target.shape)
            )
        scatter(target.handle, indices, rows, tuple(target.shape))

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # Private Keras hook (TFOptimizer): under tf.distribute, gradients
        # are summed across replicas here. It only knows tensors and
        # IndexedSlices, so a SparseRows travels as IndexedSlices (summing
        # concatenates the replicas' rows) and is coalesced again after.
        if self._distribution_strategy.num_replicas_in_sync == 1:
            return grads_and_vars
        packed = [(_as_indexed_slices(g), v) for g, v in grads_and_vars]
        reduced = super()._all_reduce_sum_gradients(packed)
        return [
            (self._coalesce(g.indices, g.values, v.shape[0]), v)
            if isinstance(g, tf.IndexedSlices)
            else (g, v)
            for g, v in reduced
        ]


def _as_indexed_slices(gradient):
    if not hasattr(gradient, "row_slices"):  # not a SparseRows
        return gradient
    indices, values = gradient.row_slices()
    return tf.IndexedSlices(values, indices)


def bitcast(x, dtype):
    return tf.bitcast(tf.convert_to_tensor(x), dtype)
