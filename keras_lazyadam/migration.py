"""Migrating from `tfa.optimizers.LazyAdam` (TensorFlow Addons).

Two things carry over from a tfa training run:

- its optimizer config: `keras.optimizers.deserialize` of a config written by
  tfa (class name `"Addons>LazyAdam"`, keys `name`, `learning_rate`, `decay`,
  `beta_1`, `beta_2`, `epsilon`, `amsgrad`, sometimes `is_legacy_optimizer`)
  gives a `keras_lazyadam.LazyAdam`: importing `keras_lazyadam` registers the
  tfa name;
- its optimizer state: `load_tfa_weights` loads the list tfa's
  `optimizer.get_weights()` returned into a `LazyAdam`.

And a model that keeps `keras.layers.Embedding` gets the fast path with
`use_lazy_embedding(model)`.
"""

import warnings

import keras
import numpy as np

from keras_lazyadam import state as compact
from keras_lazyadam import upstream
from keras_lazyadam import validation
from keras_lazyadam.embedding import LazyEmbedding
from keras_lazyadam.embedding import lazy_class
from keras_lazyadam.lazy_adam import LazyAdam

TFA_CLASS_NAME = "Addons>LazyAdam"

# `keras.optimizers.deserialize({"class_name": "Addons>LazyAdam", ...})` and
# `.keras`/`.h5` files that name tfa's class resolve to LazyAdam.
keras.saving.get_custom_objects()[TFA_CLASS_NAME] = LazyAdam


def load_tfa_weights(optimizer, weights, var_list):
    """Loads the state of a `tfa.optimizers.LazyAdam` into a `LazyAdam`.

    tfa (a Keras 2 optimizer) exported its state with `get_weights()` as
    `[iterations, m of every variable, v of every variable]`, plus `vhat` of
    every variable with `amsgrad=True`: for variables `a` and `b`,
    `[iter, a/m, b/m, a/v, b/v]`. Keras 3 keeps the same numbers in another
    order, so tfa's list cannot go through `set_weights`; this function puts
    each array in its slot.

    Args:
        optimizer: The `LazyAdam` to load into. Built for `var_list` here if it
            is not built yet. Its `amsgrad` must match tfa's. With a
            `step_mode` other than "global", the rows tfa updated (non-zero
            `v`) get `row_step = iterations`, the others 0. Variables with
            compact state (`second_moment`, `first_moment_dtype`) get tfa's
            `m` encoded and its `v` and `vhat` averaged over each row.
        weights: The list from tfa's `optimizer.get_weights()` (numpy arrays
            or anything `np.asarray` takes).
        var_list: The variables, in the order tfa's optimizer saw them (the
            model's `trainable_variables`, as tfa's `minimize` or `fit` used
            them). The variables' own values are not touched: restore those
            with the model's weights.

    Returns:
        The optimizer.

    Raises:
        ValueError: if the list's length or a shape does not match the
            variables, or the optimizer was built for other variables.

    Example:

    ```python
    import keras_lazyadam

    optimizer = keras_lazyadam.LazyAdam.from_config(tfa_config)
    keras_lazyadam.load_tfa_weights(
        optimizer, tfa_optimizer_weights, model.trainable_variables
    )
    model.compile(optimizer=optimizer, loss=...)
    model.fit(...)  # continues where tfa stopped
    ```
    """
    if not isinstance(optimizer, LazyAdam):
        raise ValueError(
            f"`optimizer` must be a keras_lazyadam.LazyAdam. Received: {type(optimizer).__name__}"
        )
    var_list = list(var_list)
    weights = [_numeric_array(i, w) for i, w in enumerate(weights)]
    slots = ["m", "v", "vhat"][: 3 if optimizer.amsgrad else 2]
    expected = 1 + len(slots) * len(var_list)
    if len(weights) != expected:
        hint = ""
        if len(weights) == 1 + 3 * len(var_list) and not optimizer.amsgrad:
            hint = " (tfa's list has vhat slots: create LazyAdam with amsgrad=True)"
        elif len(weights) == 1 + 2 * len(var_list) and optimizer.amsgrad:
            hint = " (tfa's list has no vhat slots: create LazyAdam with amsgrad=False)"
        raise ValueError(
            f"Expected {expected} arrays from tfa's get_weights() for "
            f"{len(var_list)} variables ([iterations] + {'/'.join(slots)} of "
            f"each variable), received {len(weights)}{hint}."
        )
    iterations = weights[0]
    if (
        iterations.size != 1
        or not np.isfinite(iterations).all()
        or iterations.reshape(()) < 0
        or iterations.reshape(()) != np.round(iterations.reshape(()))
    ):
        raise ValueError(
            "The first array of tfa's get_weights() must be the iteration "
            f"count, a scalar integer >= 0. Received: {iterations!r}"
        )
    iterations = int(iterations.reshape(()))
    if not optimizer.built:
        optimizer.build(var_list)
    # Check and convert everything before writing anything.
    targets = []
    for s, slot in enumerate(slots):
        for i, variable in enumerate(var_list):
            value = weights[1 + s * len(var_list) + i]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"tfa's {slot} of variable {i} ({validation.name_of(variable)!r}) has shape "
                    f"{value.shape}, the variable has shape {tuple(variable.shape)}. "
                    "Is var_list in the order tfa's optimizer saw it?"
                )
            codec = optimizer._codecs[optimizer._get_variable_index(variable)]
            converted = {slot: value} if codec is None else compact.from_full(codec, slot, value)
            for name, array in converted.items():
                targets.append((optimizer.get_slot(variable, name), array))
    if optimizer.step_mode != "global":
        # tfa kept no row counter: a row it has updated (non-zero v) counts
        # as updated at the last step ("catch_up": nothing to catch up) and
        # as often as the global step ("per_row": tfa's bias correction).
        v = weights[1 + len(var_list) : 1 + 2 * len(var_list)]
        for variable, value in zip(var_list, v):
            touched = np.any(value.reshape(value.shape[:1] + (-1,)) != 0, axis=1)
            counts = np.where(touched, iterations, 0).astype("int32")
            targets.append((optimizer.get_slot(variable, "row_step"), counts))
    # With gradient accumulation `iterations` counts updates, and Keras
    # derives it from the count of calls: one update every `steps` calls.
    steps = optimizer.gradient_accumulation_steps or 1
    upstream.iteration_counter(optimizer).assign(iterations * steps)
    for target, value in targets:
        dtype = keras.backend.standardize_dtype(target.dtype)
        if isinstance(value, np.ndarray):
            value = value.astype(dtype if dtype != "bfloat16" else "float32")
        target.assign(keras.ops.cast(value, dtype))
    return optimizer


def _numeric_array(index, value):
    """`value` as a real-valued numpy array, or a `ValueError` naming it."""
    array = np.asarray(value)
    if array.dtype.kind == "O":
        items = array.reshape(-1).tolist()
        if all(
            isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            for x in items
        ):
            array = array.astype(np.float64)
    if array.dtype.kind not in "iuf":
        raise ValueError(
            f"Array {index} of tfa's get_weights() must hold real numbers. "
            f"Received: an array of dtype {array.dtype}"
            + (f" ({array.reshape(-1)[:3].tolist()}...)" if array.size else "")
        )
    return array


def use_lazy_embedding(model, in_place=None):
    """Gives every `keras.layers.Embedding` table of `model` the lazy lookup.

    Every Embedding at any depth is converted: in nested Functional or
    Sequential towers, in subclassed models and layers, and Embedding
    subclasses (keras-rs' `EmbedReduce`, the tables of its
    `DistributedEmbedding`; keras-hub's `ReversibleEmbedding`), which keep
    their own behaviour and reach `LazyEmbedding`'s lookup through
    `super().call`. A stock `keras.layers.Embedding` becomes a
    `LazyEmbedding` (saved as one); a subclass stays an instance of its
    class and is saved as before (it loads with the stock lookup: convert
    the loaded model again). Weights, names and configs are unchanged.

    The gradient of a table is a lookup's (sparse) only if the model uses
    the table only for lookups. A tied output projection (keras-hub's
    `ReversibleEmbedding` with `tie_weights=True`, called with
    `reverse=True` by GPT-2's and BERT's language-model heads) adds a
    dense gradient to every row: LazyAdam then updates every row, as Adam
    does, and this function says so. Tables that are not Embedding layers
    (keras-hub's `PositionEmbedding`: a slice of consecutive rows, all of
    them used at full sequence length) are left as they are.

    Args:
        model: a `keras.Model`.
        in_place: `None` (default): a plain Functional or Sequential model is
            copied (`keras.models.clone_model`, weights included) and the
            copy converted; any other model (subclassed, or a Functional
            subclass with its own `get_config`, as keras-hub's) is
            converted in place. `True`: always in place. `False`: always
            a copy (raises for models that cannot be copied).

    Returns:
        The converted model (`model` itself when converted in place).
        Compile it as the original was compiled (again, if it was).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")
    if in_place not in (None, True, False):
        raise ValueError(f"`in_place` must be None, True or False. Received: in_place={in_place!r}")
    copyable = isinstance(model, keras.Sequential) or upstream.is_plain_functional(model)
    if in_place is False and not copyable:
        raise ValueError(
            "`use_lazy_embedding` can copy only a plain Functional or Sequential "
            f"model; this one ({type(model).__name__}) can be converted in "
            "place: pass `in_place=True` (or leave `in_place=None`). Received: "
            "in_place=False"
        )
    if in_place or not copyable:
        _convert_in_place(model)
        return model
    try:
        lazy = keras.models.clone_model(model)
    except Exception as error:
        raise ValueError(
            f"`use_lazy_embedding` could not copy the model ({error}). Convert "
            "it in place with `in_place=True`."
        ) from error
    _convert_in_place(lazy)
    lazy.set_weights(model.get_weights())
    return lazy


def _convert_in_place(model):
    """Swaps the class of every Embedding layer of `model` for its lazy one."""
    found, tied = 0, []
    for layer in upstream.flatten_layers(model):
        if not isinstance(layer, keras.layers.Embedding):
            continue
        found += 1
        if not isinstance(layer, LazyEmbedding):
            object.__setattr__(layer, "__class__", lazy_class(type(layer)))
        if getattr(layer, "tie_weights", False) is True:  # a ReversibleEmbedding
            tied.append(layer.name)
    if not found:
        warnings.warn(
            "`use_lazy_embedding` found no keras.layers.Embedding (or subclass) "
            f"in the model {model.name!r}: nothing was converted.",
            UserWarning,
            stacklevel=3,
        )
    if tied:
        warnings.warn(
            f"The tables of {', '.join(repr(n) for n in tied)} are tied output "
            "projections (ReversibleEmbedding with tie_weights=True): where the "
            "model calls them with reverse=True (a language-model head), their "
            "gradient is dense, and LazyAdam updates every row of them, as "
            "Adam does. Their lookups were converted all the same.",
            UserWarning,
            stacklevel=3,
        )
