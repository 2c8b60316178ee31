"""keras-lazyadam: tfa's LazyAdam for Keras 3 (TensorFlow, JAX, PyTorch)."""

from keras_lazyadam.embedding import LazyEmbedding
from keras_lazyadam.lazy_adam import LazyAdam
from keras_lazyadam.migration import load_tfa_weights
from keras_lazyadam.migration import use_lazy_embedding

__version__ = "0.1.0"
__all__ = ["LazyAdam", "LazyEmbedding", "load_tfa_weights", "use_lazy_embedding"]
