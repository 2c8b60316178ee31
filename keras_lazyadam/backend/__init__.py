"""The backend-specific half of LazyAdam, chosen once at import.

Every hook has its default, and its documentation, in `defaults.py`; a
backend module defines only the hooks it does differently. Everything else,
the maths of the update included, lives in `keras.ops`.
"""

import keras

from keras_lazyadam.backend import defaults

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_lazyadam.backend import tensorflow as _impl
elif _BACKEND == "jax":
    from keras_lazyadam.backend import jax as _impl
elif _BACKEND == "torch":
    from keras_lazyadam.backend import torch as _impl
else:
    raise ImportError(
        "keras-lazyadam supports the 'tensorflow', 'jax' and 'torch' Keras "
        f"backends. Received: KERAS_BACKEND={_BACKEND!r}"
    )

is_native_variable = getattr(_impl, "is_native_variable", defaults.is_native_variable)
to_sparse_rows = getattr(_impl, "to_sparse_rows", defaults.to_sparse_rows)
sparse_gradient = getattr(_impl, "sparse_gradient", defaults.sparse_gradient)
widen_indices = getattr(_impl, "widen_indices", defaults.widen_indices)
check_rows = getattr(_impl, "check_rows", defaults.check_rows)
check_shape = getattr(_impl, "check_shape", defaults.check_shape)
after = getattr(_impl, "after", defaults.after)
sequence = getattr(_impl, "sequence", defaults.sequence)
sum_rows = getattr(_impl, "sum_rows", defaults.sum_rows)
coalesce = getattr(_impl, "coalesce", defaults.coalesce)
nonzero_rows = getattr(_impl, "nonzero_rows", defaults.nonzero_rows)
prefers_whole_update = getattr(_impl, "prefers_whole_update", defaults.prefers_whole_update)
touched_rows = getattr(_impl, "touched_rows", defaults.touched_rows)
fused_dense_update = getattr(_impl, "fused_dense_update", defaults.fused_dense_update)
fused_row_update = getattr(_impl, "fused_row_update", defaults.fused_row_update)
gather_rows = getattr(_impl, "gather_rows", defaults.gather_rows)
scatter_rows = getattr(_impl, "scatter_rows", defaults.scatter_rows)
row_layout = getattr(_impl, "row_layout", defaults.row_layout)
embedding_lookup = getattr(_impl, "embedding_lookup", defaults.embedding_lookup)
is_dense = getattr(_impl, "is_dense", defaults.is_dense)
reduces_codes = getattr(_impl, "reduces_codes", defaults.reduces_codes)
bitcast = getattr(_impl, "bitcast", defaults.bitcast)
compute_gradients = getattr(_impl, "compute_gradients", defaults.compute_gradients)
OptimizerMixin = getattr(_impl, "OptimizerMixin", defaults.OptimizerMixin)
