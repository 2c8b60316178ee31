"""`LazyEmbedding`: `keras.layers.Embedding` whose gradient stays sparse."""

import keras
from keras import ops

from keras_lazyadam import backend
from keras_lazyadam import marks


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

    def build(self, input_shape=None):
        super().build(input_shape)
        table = getattr(self, "_embeddings", None)  # the variable (not LoRA's sum)
        if table is not None:
            marks.mark_lazy_table(table, self.embeddings_regularizer is not None)

    def call(self, inputs):
        if self.lora_enabled or self.quantization_mode is not None:
            return super().call(inputs)
        if inputs.dtype != "int32" and inputs.dtype != "int64":
            inputs = ops.cast(inputs, "int32")
        table = self.embeddings
        outputs = backend.embedding_lookup(table, inputs, sparse=marks.takes_sparse(table))
        return ops.cast(outputs, dtype=self.compute_dtype)
