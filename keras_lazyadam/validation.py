"""Checks of LazyAdam's arguments and of the gradients it is given.

Errors name the argument (or the variable), state the rule and show the
value, as Keras' own do.
"""

import math

import keras


class _Default(float):
    """A float that `is` only the default: `LazyAdam(0.001, lr=...)` passes
    another float object, so it can be told from the default and refused."""

    def __repr__(self):
        return float.__repr__(self)

    def __reduce__(self):
        return (float, (float(self),))


DEFAULT_LEARNING_RATE = _Default(0.001)


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


def check_shape(variable, shape):
    """A gradient's shape (a sparse one's declared dense shape; None for a
    dimension not known while tracing) is the variable's."""
    expected = tuple(variable.shape)
    shape = tuple(shape)
    if len(shape) != len(expected) or any(
        s is not None and e is not None and s != e for s, e in zip(shape, expected)
    ):
        raise ValueError(
            f"The gradient of variable {name_of(variable)!r} must have the "
            f"variable's shape {expected}. Received: gradient shape={shape}"
        )


def check_gradient(variable, shape, dtype):
    check_shape(variable, shape)
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


def is_variable(value):
    """A `keras.Variable` or a backend variable (`tf.Variable`): something
    that may be assigned after the optimizer was made."""
    return isinstance(value, keras.Variable) or hasattr(value, "assign")


_INT_MAX = {"int32": 2**31 - 1, "int64": 2**63 - 1}


def wide_index_dtype(dtype, int64=True):
    """`(dtype, clamp)`: the signed dtype of at least 32 bits that integer
    row indices of `dtype` are widened to, and the value to clamp them to
    first (None: the cast is lossless); None for a non-integer dtype.

    int8 .. uint16 become int32 (lossless); uint32 becomes int64, and uint64
    int64 clamped to its max: a clamped value is out of range of any
    variable, so it is refused or dropped as other bad rows, never wrapped
    onto a row. `int64=False` (JAX without x64) clamps uint32 into int32.
    """
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype in ("int8", "uint8", "int16", "uint16", "int32"):
        return "int32", None
    if dtype == "int64" or dtype == "uint32" and int64:
        return "int64", None
    if dtype in ("uint32", "uint64"):
        target = "int64" if dtype == "uint64" else "int32"
        return target, _INT_MAX[target]
    return None


def _as_float(name, value):
    if is_variable(value):
        # Read once here, it would silently ignore later assignments (Keras'
        # own optimizers refuse a variable learning rate too).
        hint = (
            " To change the learning rate while training, assign "
            "`optimizer.learning_rate = value`, or pass a "
            "`keras.optimizers.schedules.LearningRateSchedule`."
            if name == "learning_rate"
            else " Pass its value (a float), or a callable that returns it."
            if name in ("beta_1", "beta_2")
            else " Pass its value (a float)."
        )
        raise ValueError(
            f"`{name}` must be a float or a scalar tensor, not a variable: "
            "LazyAdam reads it once, when it is created, and would ignore "
            f"later assignments.{hint} Received: {name}={value!r}"
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a float or a scalar tensor. Received: {name}={value!r}"
        ) from None


def learning_rate(value):
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule) or callable(value):
        return value
    return non_negative("learning_rate", value)  # a plain float (not the default object)


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


def one_of(name, value, choices):
    """`value`, if it is one of `choices` (strings, or None where listed)."""
    if not (value is None or isinstance(value, str)) or value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(c) for c in choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def step_mode(value):
    return one_of("step_mode", value, STEP_MODES)


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

    return one_of("second_moment", value, SECOND_MOMENTS)


def first_moment_dtype(value):
    from keras_lazyadam.state import FIRST_MOMENT_DTYPES

    return one_of("first_moment_dtype", value, FIRST_MOMENT_DTYPES)
