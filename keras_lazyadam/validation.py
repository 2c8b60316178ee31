"""Checks of LazyAdam's arguments and of the gradients it is given.

Errors name the argument (or the variable), state the rule and show the
value, as Keras' own do.
"""

import math

import keras


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
