"""`LazyEmbedding`: `keras.layers.Embedding` whose gradient stays sparse."""

import keras
from keras import ops

from keras_lazyadam import backend
from keras_lazyadam import marks
from keras_lazyadam import upstream


@keras.saving.register_keras_serializable(package="keras_lazyadam")
class LazyEmbedding(keras.layers.Embedding):
    """Drop-in `keras.layers.Embedding` that hands LazyAdam a sparse gradient.

    Same arguments, weights and saved format as `keras.layers.Embedding`;
    replace one with the other. Its table's gradient:

    - TensorFlow: `tf.IndexedSlices` (as the stock layer), but the rows are
      read with `tf.gather` on the variable itself, so no step copies the
      whole table (a dense read of a scatter-updated variable does).
    - torch: a sparse COO tensor (`F.embedding(..., sparse=True)`) when the
      table is trained by `LazyAdam`; dense with any other optimizer, so
      those keep working.
    - JAX: Keras' JAX trainer differentiates every trainable variable as a
      dense array, so the table's gradient is dense; but the lookup's
      backward pass also records the looked-up rows' gradient, LazyAdam
      uses those rows, and XLA then never forms the dense table gradient
      (the whole step is O(rows looked up)). Any other optimizer, or
      anything that changes the gradient first, gets the dense array.

    LoRA and quantized tables fall back to the stock lookup.
    """

    def call(self, inputs):
        if self.lora_enabled or self.quantization_mode is not None:
            return super().call(inputs)
        if not backend.is_dense(inputs):  # sparse or ragged ids (keras-rs)
            return super().call(inputs)
        if inputs.dtype != "int32" and inputs.dtype != "int64":
            inputs = ops.cast(inputs, "int32")
        table = self.embeddings
        outputs = backend.embedding_lookup(table, inputs, sparse=marks.takes_sparse(table))
        return ops.cast(outputs, dtype=self.compute_dtype)


_LAZY_CLASSES = {}  # an Embedding subclass -> its lazy-lookup subclass


def lazy_class(cls):
    """The class `use_lazy_embedding` gives a layer of class `cls` (a
    `keras.layers.Embedding` or a subclass): `LazyEmbedding` for the stock
    layer; for a subclass, a subclass of it whose `Embedding.call` (which
    the subclass reaches through `super().call`) is `LazyEmbedding`'s,
    saved exactly as `cls` is (same names: a saved file loads as before,
    with the stock lookup)."""
    if cls is keras.layers.Embedding or issubclass(cls, LazyEmbedding):
        return LazyEmbedding if cls is keras.layers.Embedding else cls
    lazy = _LAZY_CLASSES.get(cls)
    if lazy is None:
        attributes = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        attributes["__doc__"] = cls.__doc__
        lazy = type(cls.__name__, (cls, LazyEmbedding), attributes)
        upstream.save_as(lazy, cls)
        _LAZY_CLASSES[cls] = lazy
    return lazy
