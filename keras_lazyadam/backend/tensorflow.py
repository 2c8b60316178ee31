"""TensorFlow half of LazyAdam: `tf.IndexedSlices` in, scatters out."""

import keras
import tensorflow as tf

from keras_lazyadam.sparse import SparseRows
from keras_lazyadam.sparse import coalesce


def _tf_variable(variable):
    if isinstance(variable, keras.Variable):
        return variable.value  # the tf.Variable behind it
    return variable


def to_sparse_rows(grad):
    if isinstance(grad, tf.IndexedSlices):
        return grad.indices, grad.values
    return None


def nonzero_rows(grad):
    # Dense gradients of row-sparse tables do not reach the optimizer on TF
    # (Keras hands over IndexedSlices), and a dynamic-size `tf.where` would
    # break `jit_compile=True`: use the masked update.
    return None


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


class OptimizerMixin:
    def _all_reduce_sum_gradients(self, grads_and_vars):
        # Private Keras hook (TFOptimizer): under tf.distribute, gradients
        # are summed across replicas here. It only knows tensors and
        # IndexedSlices, so a SparseRows travels as IndexedSlices (summing
        # concatenates the replicas' rows) and is coalesced again after.
        if self._distribution_strategy.num_replicas_in_sync == 1:
            return grads_and_vars
        packed = [
            (
                tf.IndexedSlices(g.sums, g.slot_indices())
                if isinstance(g, SparseRows)
                else g,
                v,
            )
            for g, v in grads_and_vars
        ]
        reduced = super()._all_reduce_sum_gradients(packed)
        return [
            (coalesce(g.indices, g.values), v)
            if isinstance(g, tf.IndexedSlices)
            else (g, v)
            for g, v in reduced
        ]
