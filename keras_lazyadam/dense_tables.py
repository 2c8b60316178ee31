"""The warning for an embedding table that gets a dense gradient.

On JAX and torch a stock `keras.layers.Embedding` table gets a dense
gradient: each step forms a table-sized gradient and LazyAdam scans it for
the rows touched. LazyAdam says so once per table, with the fix, only where

- the table is an Embedding layer's, whose gradient a lookup makes (not a
  keras-hub `PositionEmbedding`, a slice of consecutive rows; not a tied
  output projection, keras-hub's `ReversibleEmbedding` with
  `tie_weights=True`, whose dense gradient no layer avoids), and
- the cost is real: the dense gradient has at least `DENSE_COST_ELEMENTS`
  values (a pass over 4 MiB a step in float32). Smaller tables cost less
  than the rest of the step; LazyAdam updates them as a whole anyway.

The warning points at the user's code (`fit`, `train_on_batch`, `apply`),
not at this package or Keras.
"""

import inspect
import os
import sys
import sysconfig
import warnings

import keras
import numpy as np

from keras_lazyadam import upstream

# 1M values: a table-sized gradient of 4 MiB (float32) formed, scanned and
# masked at every step (about 1 ms on one CPU core), where the rows looked
# up would do.
DENSE_COST_ELEMENTS = 1 << 20

_DECIDED = "_keras_lazyadam_dense_table_decided"


def warn_once(variable, optimizer):
    """Warns, once per table, that `variable` got a dense gradient, where a
    fix applies and the cost is real (see the module's docstring)."""
    if len(variable.shape) != 2 or getattr(variable, _DECIDED, False):
        return
    setattr(variable, _DECIDED, True)
    rows, dim = variable.shape
    if rows * dim < DENSE_COST_ELEMENTS:
        return
    advice = _advice(variable, optimizer)
    if advice is None:
        return
    name = getattr(variable, "path", None) or variable.name
    size = rows * dim * _itemsize(variable) / 2**20
    warnings.warn(
        f"LazyAdam received a dense gradient for the embedding table {name!r} "
        f"({rows} x {dim}): every step forms, scans and masks a {size:.0f} MiB "
        f"gradient of the whole table, about the cost of a dense Adam step, "
        f"where the rows looked up would do.{advice}",
        UserWarning,
        stacklevel=_user_stacklevel(),
    )


def _itemsize(variable):
    return np.dtype(keras.backend.standardize_dtype(variable.dtype)).itemsize


def _advice(variable, optimizer):
    """The fix to name for `variable`'s dense gradient, or None where none
    applies (then no warning)."""
    from keras_lazyadam.embedding import LazyEmbedding

    model = _model_being_trained(optimizer)
    if model is None:
        # A custom training loop: the layer is not known. A variable named
        # as an Embedding's table is taken for one.
        if variable.name != "embeddings":
            return None
        return _STOCK
    layer = next(
        (
            layer
            for layer in upstream.flatten_layers(model)
            if isinstance(layer, keras.layers.Embedding)
            and any(w is variable for w in layer.trainable_weights)
        ),
        None,
    )
    if layer is None:
        return None  # not an Embedding's table (e.g. a position embedding)
    if getattr(layer, "tie_weights", False) is True:
        return None  # a tied output projection: dense whatever the lookup
    if not isinstance(layer, LazyEmbedding):
        return _STOCK
    if layer.embeddings_regularizer is not None:
        return (
            " The table is a `LazyEmbedding`'s, but its `embeddings_regularizer` "
            "gives every row a gradient at every step, which no layer can keep "
            "sparse. Drop the regularizer to keep the steps lazy (LazyAdam's "
            "`weight_decay` decays only the rows a step updates)."
        )
    return (
        " The table is a `LazyEmbedding`'s: something other than its lookup "
        "(a second use of the table, a loss term on the whole table) made its "
        "gradient dense."
    )


_STOCK = (
    " Use `keras_lazyadam.LazyEmbedding` in place of `keras.layers.Embedding` "
    "(`keras_lazyadam.use_lazy_embedding(model)` converts a model, nested and "
    "subclassed ones included, weights and all) so that only the rows looked "
    "up are updated."
)


def _model_being_trained(optimizer):
    """The `keras.Model` whose training step is running `optimizer` (Keras'
    trainers apply gradients from a method of the model), or None (a custom
    training loop)."""
    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, keras.Model):
            compiled = getattr(candidate, "optimizer", None)
            if compiled is optimizer or getattr(compiled, "inner_optimizer", None) is optimizer:
                return candidate
        frame = frame.f_back
    return None


def _internal_dirs():
    dirs = [os.path.dirname(keras.__file__), os.path.dirname(__file__)]
    for name in ("jax", "jaxlib", "tensorflow", "torch", "optree", "tree"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            dirs.append(os.path.dirname(module.__file__))
    dirs.append(sysconfig.get_paths()["stdlib"])
    return tuple(os.path.realpath(d) + os.sep for d in dirs)


def _user_stacklevel():
    """The `stacklevel` for `warnings.warn` called from `warn_once` that
    names the first frame outside keras_lazyadam, Keras, the backend's
    framework and the standard library: the user's `fit` or `apply` call."""
    internal = _internal_dirs()
    frame = inspect.currentframe().f_back  # warn_once
    level = 1
    while frame is not None:
        path = os.path.realpath(frame.f_code.co_filename)
        if not path.startswith(internal) and not path.startswith("<"):
            return level
        frame = frame.f_back
        level += 1
    return 1
