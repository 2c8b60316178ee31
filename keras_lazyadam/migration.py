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

import keras
import numpy as np

from keras_lazyadam import state as compact
from keras_lazyadam.embedding import LazyEmbedding
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
    weights = [np.asarray(w) for w in weights]
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
    if iterations.size != 1:
        raise ValueError(
            "The first array of tfa's get_weights() must be the scalar "
            f"iteration count. Received shape {iterations.shape}"
        )
    if not optimizer.built:
        optimizer.build(var_list)
    # Check everything before writing anything.
    targets = []
    for s, slot in enumerate(slots):
        for i, variable in enumerate(var_list):
            value = weights[1 + s * len(var_list) + i]
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"tfa's {slot} of variable {i} ({variable.path!r}) has shape "
                    f"{value.shape}, the variable has shape {tuple(variable.shape)}. "
                    "Is var_list in the order tfa's optimizer saw it?"
                )
            codec = optimizer._codecs[optimizer._get_variable_index(variable)]
            converted = {slot: value} if codec is None else compact.from_full(codec, slot, value)
            for name, array in converted.items():
                targets.append((optimizer.get_slot(variable, name), array))
    optimizer.iterations.assign(int(iterations.reshape(())))
    for target, value in targets:
        dtype = keras.backend.standardize_dtype(target.dtype)
        if isinstance(value, np.ndarray):
            value = value.astype(dtype if dtype != "bfloat16" else "float32")
        target.assign(keras.ops.cast(value, dtype))
    if optimizer.step_mode != "global":
        # tfa kept no row counter: a row it has updated (non-zero v) counts
        # as updated at the last step ("catch_up": nothing to catch up) and
        # as often as the global step ("per_row": tfa's bias correction).
        v = weights[1 + len(var_list) : 1 + 2 * len(var_list)]
        for variable, value in zip(var_list, v):
            touched = np.any(value.reshape(value.shape[:1] + (-1,)) != 0, axis=1)
            counts = np.where(touched, int(iterations.reshape(())), 0).astype("int32")
            optimizer.get_slot(variable, "row_step").assign(counts.reshape(value.shape[:1]))
    return optimizer


def use_lazy_embedding(model):
    """A copy of `model` with every `keras.layers.Embedding` a `LazyEmbedding`.

    Same structure, configs and weights (`keras.models.clone_model` with a
    `clone_function`); layers other than `keras.layers.Embedding` itself
    (subclasses included) are cloned as they are. Compile the copy as the
    original was compiled.

    Args:
        model: a Functional or Sequential `keras.Model`.

    Returns:
        The new model.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a Functional or Sequential keras.Model. Received: {model!r}"
        )

    def clone(layer):
        if type(layer) is keras.layers.Embedding:
            return LazyEmbedding.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    lazy = keras.models.clone_model(model, clone_function=clone)
    lazy.set_weights(model.get_weights())
    return lazy
