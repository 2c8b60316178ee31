"""TensorFlow half of LazyAdam: `tf.IndexedSlices` in, scatters out."""

import contextlib

import keras
import tensorflow as tf


def _tf_variable(variable):
    if isinstance(variable, keras.Variable):
        return variable.value  # the tf.Variable behind it
    return variable


def to_sparse_rows(grad, variable):
    if isinstance(grad, tf.IndexedSlices):
        return grad.indices, grad.values
    return None


def sparse_gradient(indices, values, shape):
    return tf.IndexedSlices(
        tf.convert_to_tensor(values),
        tf.convert_to_tensor(indices),
        tf.constant(shape, tf.int64),
    )


def check_rows(indices, num_rows, name):
    # Checked in graphs too; XLA (`jit_compile=True`) drops asserts, and its
    # gathers clamp out-of-range rows.
    message = f"Row indices of the gradient of {name!r} must be in [0, {num_rows})"
    checks = [
        tf.debugging.assert_non_negative(indices, message=message),
        tf.debugging.assert_less(indices, tf.cast(num_rows, indices.dtype), message=message),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(indices)


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


def unique_segments(indices):
    # Outside XLA, tf.unique (hash-based) beats sorting: with 4,096 ids on a
    # 1M-row table the whole step matches a tfa-style step (1.4x before).
    # Under XLA, sorting is faster.
    if _building_for_xla():
        return None
    return tf.unique(indices).idx


def unique_count(segments):
    # Outside XLA each unique row is updated once; XLA needs static shapes,
    # so there every position is updated (duplicates compute equal rows).
    if _building_for_xla():
        return None
    return tf.reduce_max(tf.concat([segments, [-1]], 0)) + 1


def after(tensors):
    """A context in which new ops run after `tensors` (graphs only)."""
    if not tensors or tf.executing_eagerly():
        return contextlib.nullcontext()
    return tf.control_dependencies(tensors)


def gather_rows(variable, indices):
    # `tf.gather` on the variable itself reads only the rows: a dense read of
    # a variable that has had a scatter update copies the whole table.
    return tf.gather(_tf_variable(variable), indices)


def scatter_rows(optimizer, variable, indices, rows):
    optimizer.assign(variable, tf.IndexedSlices(rows, indices))


def compute_gradients(loss, var_list, tape=None):
    if tape is None:
        with tf.GradientTape() as tape:
            value = loss()
    else:
        value = loss
    return tape.gradient(value, [_tf_variable(v) for v in var_list])


def embedding_lookup(table, ids, sparse):
    # Gather through the variable itself: its gradient is IndexedSlices for
    # every optimizer, and no dense read (a full-table copy once the table
    # has had a scatter update) happens.
    return tf.gather(_tf_variable(table), ids)


class OptimizerMixin:
    """Sums `SparseRows` gradients across replicas (tf.distribute)."""

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
            (self._coalesce(g.indices, g.values), v) if isinstance(g, tf.IndexedSlices) else (g, v)
            for g, v in reduced
        ]


def _as_indexed_slices(gradient):
    if not hasattr(gradient, "row_slices"):  # not a SparseRows
        return gradient
    indices, values = gradient.row_slices()
    return tf.IndexedSlices(values, indices)
