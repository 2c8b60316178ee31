"""The backend-specific half of LazyAdam, chosen once at import.

Each backend module provides the same small interface:

- `to_sparse_rows(grad, variable)`: a native sparse gradient
  (`tf.IndexedSlices`, JAX `BCOO`, torch sparse COO), or the dense gradient
  of a `LazyEmbedding` table whose rows the JAX lookup recorded, as
  `(indices, values)` row slices, else `None`.
- `sparse_gradient(indices, values, shape)`: the inverse, a native row-sparse
  gradient (duplicates allowed), for custom training loops and tests.
- `check_rows(indices, num_rows, name)`: the indices, checked to be rows of
  the variable (raising `ValueError` where the backend can check).
- `sum_rows(values, segments, num_segments)`: the scatter-add that sums
  duplicate rows (`ops.segment_sum` rounds float64 to float32 on torch,
  and `ops.scatter` loops in Python there).
- `unique_segments(indices)`: the slot of every index (equal indices share
  one; slots 0 .. k-1) where the backend has a fast unique, else `None`
  (then `coalesce` sorts the indices).
- `unique_count(segments)`: the number of unique rows of a coalesced
  gradient where the backend takes dynamic shapes, else `None` (then every
  position is updated; duplicates compute identical rows).
- `after(tensors)`: a context whose ops run after `tensors` (the checked
  indices), so that a failed check leaves the whole step unapplied.
- `nonzero_rows(grad)`: `(indices, values)` of the rows of a dense gradient
  that are not all zero, where the backend can form a dynamic-size result
  cheaply; `None` where it cannot (the optimizer then masks instead).
- `fused_dense_update(variable, slots, grad, hyper)`: the dense update with
  a framework kernel, returning False where the generic maths serves.
- `gather_rows(variable, indices)` and `scatter_rows(optimizer, variable,
  indices, rows)`: read and write whole rows of a variable in place.
- `embedding_lookup(table, ids, sparse)`: rows of an embedding table, so
  that the table's gradient is sparse where the backend allows (`sparse`
  says whether the optimizer takes sparse gradients).
- `compute_gradients(loss, var_list, tape)`: gradients of a callable loss.
- `OptimizerMixin`: overrides of `keras.optimizers.Optimizer` hooks that only
  this backend needs (empty on most).

Everything else, the maths of the update included, lives in `keras.ops`.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_lazyadam.backend import tensorflow as impl
elif _BACKEND == "jax":
    from keras_lazyadam.backend import jax as impl
elif _BACKEND == "torch":
    from keras_lazyadam.backend import torch as impl
else:
    raise ImportError(
        "keras-lazyadam supports the 'tensorflow', 'jax' and 'torch' Keras "
        f"backends. Received: KERAS_BACKEND={_BACKEND!r}"
    )

to_sparse_rows = impl.to_sparse_rows
sparse_gradient = impl.sparse_gradient
check_rows = impl.check_rows
after = impl.after
nonzero_rows = impl.nonzero_rows
sum_rows = impl.sum_rows
unique_segments = impl.unique_segments
unique_count = impl.unique_count
fused_dense_update = impl.fused_dense_update
gather_rows = impl.gather_rows
scatter_rows = impl.scatter_rows
compute_gradients = impl.compute_gradients
embedding_lookup = impl.embedding_lookup
OptimizerMixin = impl.OptimizerMixin
