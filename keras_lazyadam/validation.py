"""Checks of LazyAdam's arguments and of the gradients it is given.

Errors name the argument (or the variable), state the rule and show the
value, as Keras' own do.
"""

import math
import warnings

import keras

_WARNED_DENSE_TABLES = set()


def name_of(variable):
    return getattr(variable, "path", None) or variable.name


def is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def check_variables(variables):
    for variable in variables:
        if not is_float(variable.dtype):
            raise ValueError(
                "LazyAdam can only train floating-point variables. "
                f"Received: variable {name_of(variable)!r} with "
                f"dtype={variable.dtype}"
            )


def check_gradient(variable, shape, dtype):
    expected = tuple(variable.shape)
    shape = tuple(shape)
    if len(shape) != len(expected) or any(
        s is not None and e is not None and s != e for s, e in zip(shape, expected)
    ):
        raise ValueError(
            f"The gradient of variable {name_of(variable)!r} must have the "
            f"variable's shape {expected}. Received: gradient shape={shape}"
        )
    if not is_float(dtype):
        raise ValueError(
            f"The gradient of variable {name_of(variable)!r} must be floating "
            f"point. Received: gradient dtype={dtype}"
        )


def check_row_indices(variable, indices, values):
    """Row indices of a sparse gradient: integers, one per row of values."""
    name = name_of(variable)
    dtype = keras.backend.standardize_dtype(indices.dtype)
    if "int" not in dtype:
        raise TypeError(
            f"Row indices of the gradient of {name!r} must be integers. "
            f"Received: indices dtype={dtype}"
        )
    count, rows = tuple(indices.shape), values.shape[0]
    if len(count) != 1 or None not in (count[0], rows) and count[0] != rows:
        raise ValueError(
            f"The gradient of {name!r} must have one row index per row of "
            f"values. Received: indices shape={count}, values shape="
            f"{tuple(values.shape)}"
        )


def _as_float(name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a float or a scalar tensor. Received: {name}={value!r}"
        ) from None


def learning_rate(value):
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) or callable(value):
        return value
    return non_negative("learning_rate", value)


def beta(name, value):
    if callable(value):
        return value
    value = _as_float(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value}")
    return value


def non_negative(name, value):
    value = _as_float(name, value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite. Received: {name}={value}")
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
    return value


def optional_non_negative(name, value):
    return None if value is None else non_negative(name, value)


def boolean(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool (True or False). Received: {name}={value!r}")
    return value


STEP_MODES = ("global", "catch_up", "per_row")


def step_mode(value):
    if not isinstance(value, str) or value not in STEP_MODES:
        raise ValueError(
            f"`step_mode` must be one of {', '.join(repr(m) for m in STEP_MODES)}. "
            f"Received: step_mode={value!r}"
        )
    return value


def warn_dense_embedding_table(variable):
    """Says once per table that a Keras `Embedding` table got a dense
    gradient (JAX and torch with `keras.layers.Embedding`), and the fix."""
    name = name_of(variable)
    if variable.name != "embeddings" or len(variable.shape) != 2:
        return
    if name in _WARNED_DENSE_TABLES:
        return
    _WARNED_DENSE_TABLES.add(name)
    warnings.warn(
        f"LazyAdam received a dense gradient for the embedding table {name!r} "
        f"({variable.shape[0]} rows): every step then scans and masks the "
        "whole table, about the cost of a dense Adam step. Use "
        "`keras_lazyadam.LazyEmbedding` in place of `keras.layers.Embedding` "
        "(`keras_lazyadam.use_lazy_embedding(model)` converts a model, "
        "weights included) so that only the rows looked up are updated.",
        stacklevel=4,
    )


def check_saveable(optimizer, names):
    """Refuses callable hyperparameters in a config: a saved file cannot
    hold them, and loading it would fail."""
    for name in names:
        value = getattr(optimizer, name)
        if callable(value):
            raise ValueError(
                f"`{name}` is a callable, which a saved file cannot hold "
                "(loading it would fail). Pass a float to save this "
                f"optimizer. Received: {name}={value!r}"
            )


def second_moment(value):
    from keras_lazyadam.state import SECOND_MOMENTS

    if not isinstance(value, str) or value not in SECOND_MOMENTS:
        raise ValueError(
            f"`second_moment` must be one of {', '.join(repr(m) for m in SECOND_MOMENTS)}. "
            f"Received: second_moment={value!r}"
        )
    return value


def first_moment_dtype(value):
    from keras_lazyadam.state import FIRST_MOMENT_DTYPES

    if value is not None and not isinstance(value, str) or value not in FIRST_MOMENT_DTYPES:
        raise ValueError(
            "`first_moment_dtype` must be one of "
            f"{', '.join(repr(m) for m in FIRST_MOMENT_DTYPES)}. "
            f"Received: first_moment_dtype={value!r}"
        )
    return value
