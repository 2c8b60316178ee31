"""TensorFlow-only paths (issue 14): row buckets past 2**21, `tf.function`
traced with unknown dims, plain `tf.Variable`s, the
`tf.config.run_functions_eagerly` debugging switch, and tables with zero
rows."""

import re

import keras
import numpy as np
import pytest
from numpy_reference import NumpyLazyAdam

from conftest import BACKEND
from conftest import numpy
from keras_lazyadam import LazyAdam
from keras_lazyadam import load_tfa_weights

if BACKEND != "tensorflow":
    pytest.skip(
        "TensorFlow-only paths (IndexedSlices, tf.function, tf.Variable)",
        allow_module_level=True,
    )

import tensorflow as tf  # noqa: E402

from keras_lazyadam.backend import tensorflow as tf_backend  # noqa: E402


def _slices(indices, values):
    return tf.IndexedSlices(tf.constant(values), tf.constant(indices))


def _state(optimizer, variables):
    """Every variable and optimizer variable (iterations, slots), numpy."""
    return [numpy(v) for v in variables] + [numpy(v) for v in optimizer.variables]


def _assert_same_state(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# Row buckets (issue 14, item 6).


def test_bucket_size_is_exact_at_powers_of_two():
    counts = [0, 1, 7, 8, 9] + [c for k in range(4, 32) for c in (2**k - 1, 2**k, 2**k + 1)]
    counts = [c for c in counts if c < 2**31]  # tf.size is int32
    sizes = [int(tf_backend._bucket_size(tf.constant(c, tf.int64))) for c in counts]
    expected = [max(8, 1 << max(c - 1, 0).bit_length()) for c in counts]
    assert sizes == expected


def test_sparse_step_past_2_21_unique_rows():
    """Float32 logs put 2**21 + 1 rows in the bucket of 2**21."""
    rows = 2**21 + 1
    shape = (rows + 15, 1)  # narrow: 8 MiB a slot
    init = np.random.default_rng(0).normal(size=shape).astype("float32")
    indices = np.random.default_rng(1).permutation(rows).astype("int32")
    values = np.random.default_rng(2).normal(size=(rows, 1)).astype("float32")
    variable = keras.Variable(init)
    LazyAdam(0.01).apply([_slices(indices, values)], [variable])
    # The rows are unique: the oracle's dense step on them is its sparse step
    # (whose per-row loop is quadratic).
    touched = init[indices]
    NumpyLazyAdam(touched.shape, "float32", lr=0.01).dense(touched, values)
    expected = init.copy()
    expected[indices] = touched
    np.testing.assert_allclose(numpy(variable), expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(numpy(variable)[rows:], init[rows:])


# `tf.function` traced with unknown dims (item 9): every check runs before
# any write.

SHAPE = (5, 3)
GOOD = dict(indices=[0, 2], values=np.ones((2, 3), "float32"))
BAD = {
    "row_width": (
        dict(indices=[0, 2], values=np.ones((2, 4), "float32")),
        "must have the variable",
    ),
    "row_width_broadcast": (
        dict(indices=[0, 2], values=np.ones((2, 1), "float32")),
        "must have the variable",
    ),
    "more_indices": (dict(indices=[0, 1, 2], values=np.ones((2, 3), "float32")), "one row index"),
    "fewer_indices": (dict(indices=[0], values=np.ones((2, 3), "float32")), "one row index"),
    "dense_rows": (dict(dense=np.ones((4, 3), "float32")), "must have the variable"),
    "dense_broadcast": (dict(dense=np.ones((1, 3), "float32")), "must have the variable"),
}
TRACINGS = ["input_signature", "reduce_retracing", "input_signature_xla"]


def _unknown_dims_step(tracing, dense):
    """A step on [other, table], `table` last (so written last), compiled
    with the gradient's dims unknown while tracing."""
    other = keras.Variable(np.ones((2,), "float32"), name="other")
    table = keras.Variable(np.ones(SHAPE, "float32"), name="table")
    optimizer = LazyAdam(0.1, amsgrad=True, step_mode="per_row")
    optimizer.build([other, table])

    def step(*gradient):
        grad = gradient[0] if dense else tf.IndexedSlices(gradient[1], gradient[0])
        optimizer.apply([tf.ones((2,)), grad], [other, table])

    if tracing == "reduce_retracing":
        fn = tf.function(step, reduce_retracing=True)
    else:
        spec = (
            [tf.TensorSpec([None, None], tf.float32)]
            if dense
            else [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.float32)]
        )
        fn = tf.function(step, input_signature=spec, jit_compile=tracing.endswith("xla"))
    return fn, optimizer, [other, table]


def _arguments(case):
    if "dense" in case:
        return (tf.constant(case["dense"]),)
    return tf.constant(case["indices"], tf.int32), tf.constant(case["values"])


@pytest.mark.parametrize("tracing", TRACINGS)
@pytest.mark.parametrize("bad", list(BAD))
def test_unknown_dims_are_checked_before_any_write(bad, tracing):
    case, message = BAD[bad]
    dense = "dense" in case
    step, optimizer, variables = _unknown_dims_step(tracing, dense)
    good = dict(dense=np.ones(SHAPE, "float32")) if dense else GOOD
    step(*_arguments(good))  # with reduce_retracing, a new shape traces generic dims
    before = _state(optimizer, variables)
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        step(*_arguments(case))
    _assert_same_state(_state(optimizer, variables), before)
    # XLA drops asserts, and its compiler refuses the shape ops after them.
    if tracing.endswith("xla"):
        message = "not compatible|Input to reshape"
    assert re.search(message, str(raised.value)), str(raised.value)[-500:]


# Plain tf.Variables (item 13): tfa took them in `get_slot` and its weights.


def _trained_pair(**kwargs):
    """The same sparse step on a tf.Variable and on a Keras variable."""
    init = np.arange(15, dtype="float32").reshape(SHAPE)
    plain, wrapped = tf.Variable(init), keras.Variable(init)
    optimizers = LazyAdam(0.1, **kwargs), LazyAdam(0.1, **kwargs)
    for optimizer, variable in zip(optimizers, (plain, wrapped)):
        optimizer.apply([_slices([0, 2, 2], np.ones((3, 3), "float32"))], [variable])
    return optimizers, plain, wrapped


@pytest.mark.parametrize("step_mode", ["global", "per_row"])
def test_plain_tf_variable_in_get_slot(step_mode):
    (plain_opt, keras_opt), plain, wrapped = _trained_pair(amsgrad=True, step_mode=step_mode)
    np.testing.assert_array_equal(plain.numpy(), numpy(wrapped))
    for name in plain_opt.get_slot_names():
        np.testing.assert_array_equal(
            numpy(plain_opt.get_slot(plain, name)), numpy(keras_opt.get_slot(wrapped, name))
        )
        # The tf.Variable inside a Keras variable maps to that variable's slot.
        assert keras_opt.get_slot(wrapped.value, name) is keras_opt.get_slot(wrapped, name)
    with pytest.raises(ValueError, match="Unknown variable"):
        plain_opt.get_slot(tf.Variable(np.ones(SHAPE, "float32")), "m")


def test_plain_tf_variable_in_load_tfa_weights():
    variables = [tf.Variable(np.ones(SHAPE, "float32")), tf.Variable(np.ones(2, "float32"))]
    weights = [np.int64(7)] + [
        np.full(v.shape, i + 1.0, "float32") for i in range(2) for v in variables
    ]
    optimizer = load_tfa_weights(LazyAdam(), weights, variables)
    assert int(optimizer.iterations) == 7
    np.testing.assert_array_equal(numpy(optimizer.get_slot(variables[1], "m")), weights[2])
    np.testing.assert_array_equal(numpy(optimizer.get_slot(variables[0], "v")), weights[3])
    bad = weights[:-1] + [np.ones(3, "float32")]
    with pytest.raises(ValueError, match="tfa's v of variable 1 .*has shape"):
        load_tfa_weights(LazyAdam(), bad, variables)


# `tf.config.run_functions_eagerly(True)` (item 15): the same numbers.

EAGER_CASES = {
    "sparse": [("sparse", [0, 2, 2, 4], 4), ("sparse", [], 0), ("sparse", [1, 4], 2)],
    "dense": [("dense", [0, 2], 2), ("dense", [1, 3, 4], 3)],
    "mixed": [("sparse", [3, 3], 2), ("dense", [0, 1, 2, 3, 4], 5), ("sparse", [0], 1)],
}


def _run_steps(steps, compiled, run_eagerly, **kwargs):
    tf.config.run_functions_eagerly(run_eagerly)
    try:
        rng = np.random.default_rng(0)
        variable = keras.Variable(rng.normal(size=SHAPE).astype("float32"))
        optimizer = LazyAdam(0.05, **kwargs)
        optimizer.build([variable])
        step = lambda g: optimizer.apply([g], [variable])  # noqa: E731
        if compiled:
            step = tf.function(step, reduce_retracing=True, jit_compile=compiled == "xla")
        for kind, rows, n in steps:
            values = rng.normal(size=(n, SHAPE[1])).astype("float32")
            if kind == "sparse":
                step(_slices(np.asarray(rows, "int32"), values))
            else:
                dense = np.zeros(SHAPE, "float32")
                np.add.at(dense, rows, values)
                step(tf.constant(dense))
        return _state(optimizer, [variable])
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.mark.parametrize("path", ["rows", "whole"])
@pytest.mark.parametrize("step_mode", ["global", "catch_up", "per_row"])
@pytest.mark.parametrize("steps", list(EAGER_CASES))
def test_run_functions_eagerly_gives_the_same_numbers(steps, step_mode, compiled, path, request):
    """The switch on and off give the same numbers. The row path (the XLA
    row write that the switch broke) bit for bit; a small table's whole
    update (sparse, "global") in a graph within 1e-6: grappler rewrites the
    graph's arithmetic, which the switch turns off."""
    if path == "rows":
        request.getfixturevalue("row_path")
    kwargs = dict(step_mode=step_mode, amsgrad=True)
    expected = _run_steps(EAGER_CASES[steps], compiled, False, **kwargs)
    got = _run_steps(EAGER_CASES[steps], compiled, True, **kwargs)
    whole = path == "whole" and step_mode == "global" and steps != "dense"
    if compiled == "xla" or (compiled and whole):  # XLA fuses the arithmetic its own way
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    else:
        _assert_same_state(got, expected)


# Tables with zero rows (TF half of item 14): Keras' Adam applies such steps.


@pytest.mark.parametrize("empty", ["zero_rows", "zero_width"])
def test_sparse_gradient_on_an_empty_table(empty, compiled):
    shape, indices = ((0, 4), []) if empty == "zero_rows" else ((4, 0), [1, 3])
    dense = keras.Variable(np.ones((3, 2), "float32"), name="dense")
    table = keras.Variable(np.ones(shape, "float32"), name="table")
    optimizer = LazyAdam(0.1)
    optimizer.build([dense, table])
    step = lambda g: optimizer.apply([tf.ones((3, 2)), g], [dense, table])  # noqa: E731
    if compiled:
        step = tf.function(step, jit_compile=compiled == "xla")
    values = np.ones((len(indices), shape[1]), "float32")
    step(_slices(np.asarray(indices, "int32"), values))
    assert int(optimizer.iterations) == 1
    np.testing.assert_allclose(numpy(dense), np.full((3, 2), 0.9), rtol=1e-5)
    assert numpy(table).shape == shape


def test_get_slot_names_works_but_is_out_of_dir():
    """TF's checkpointing takes an object whose dir() lists `get_slot_names`
    for a Keras 2 optimizer and saves its slots twice
    (integration_tests/test_tf_checkpoint.py runs the whole path)."""
    optimizer = LazyAdam(amsgrad=True)
    assert optimizer.get_slot_names() == ["m", "v", "vhat"]
    assert "get_slot_names" not in dir(optimizer) and "get_slot" in dir(optimizer)
