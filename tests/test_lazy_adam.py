"""LazyAdam against a numpy oracle, Keras Adam, and its own API contract."""

import keras
import numpy as np
import pytest
from numpy_reference import NumpyLazyAdam

from conftest import BACKEND
from conftest import assert_matches_oracle
from conftest import dense_gradient
from conftest import numpy
from conftest import sparse_gradient
from keras_lazyadam import LazyAdam

SHAPE = (10, 3)


def _sparse_steps(seed, steps=6, dtype="float32"):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        idx = rng.integers(0, 6, size=5)  # rows 6..9 never touched
        idx[-1] = idx[0]  # a duplicate every step
        out.append(("sparse", idx, rng.normal(size=(5, 3)).astype(dtype)))
    return out


def _dense_steps(seed, steps=5, zero_rows=(2, 7)):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        g = rng.normal(size=SHAPE).astype("float32")
        g[list(zero_rows)] = 0.0
        out.append(("dense", g))
    return out


def _tiny_row_steps(seed):
    """Row 7 carries one 1e-30 (its square underflows to 0), row 3 sums to
    zero: both still touched."""
    steps = _dense_steps(seed, steps=4, zero_rows=[2])
    for _, g in steps[1:]:
        g[7] = [1e-30, 0.0, 0.0]
        g[3] = [1.0, -1.0, 0.0]
    return steps


def _nan_row_steps(seed):
    """Row 5 carries one NaN among zeros: touched (poisoned, as in Adam)."""
    steps = _dense_steps(seed, steps=2, zero_rows=[2, 5])
    steps[1][1][5, 1] = np.nan
    return steps


CASES = [
    dict(testcase_name="duplicates", steps=_sparse_steps(1)),
    dict(testcase_name="float64", steps=_sparse_steps(2, dtype="float64"), dtype="float64"),
    dict(testcase_name="amsgrad_sparse", steps=_sparse_steps(3), kwargs=dict(amsgrad=True)),
    dict(
        testcase_name="weight_decay_sparse", steps=_sparse_steps(4), kwargs=dict(weight_decay=0.1)
    ),
    dict(
        testcase_name="cancelling_duplicates",
        steps=[
            ("sparse", np.array([1, 2, 1]), np.array([[1.0] * 3, [2.0] * 3, [-1.0] * 3], "float32"))
        ]
        * 3,
    ),
    dict(
        testcase_name="empty_step",
        steps=_sparse_steps(5, 2)
        + [("sparse", np.zeros(0, int), np.zeros((0, 3), "float32"))]
        + _sparse_steps(6, 2),
    ),
    dict(testcase_name="dense_skip_zero_rows", steps=_dense_steps(7)),
    dict(
        testcase_name="dense_exact_adam", steps=_dense_steps(8), kwargs=dict(skip_zero_rows=False)
    ),
    dict(testcase_name="dense_tiny_row_is_touched", steps=_tiny_row_steps(14)),
    dict(testcase_name="dense_nan_row_is_touched", steps=_nan_row_steps(15)),
    dict(testcase_name="amsgrad_dense", steps=_dense_steps(9), kwargs=dict(amsgrad=True)),
    dict(
        testcase_name="all_rows_dense",
        steps=_dense_steps(13, zero_rows=[]),
        kwargs=dict(amsgrad=True, weight_decay=0.1),
    ),
    dict(
        testcase_name="mixed",
        steps=_sparse_steps(10, 3) + _dense_steps(11, 2) + _sparse_steps(12, 2),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["testcase_name"])
def test_matches_numpy_oracle(case, compiled):
    kwargs = dict(learning_rate=0.02, **case.get("kwargs", {}))
    assert_matches_oracle(kwargs, case["steps"], SHAPE, case.get("dtype", "float32"), compiled)


def _run(optimizer, steps, init):
    variable = keras.Variable(init)
    for g in steps:
        optimizer.apply([g], [variable])
    return numpy(variable)


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_dense_equals_keras_adam(amsgrad):
    """No all-zero rows: LazyAdam is Keras Adam (amsgrad too)."""
    init = np.random.default_rng(1).normal(size=SHAPE).astype("float32")
    steps = [dense_gradient(s[1]) for s in _dense_steps(2, zero_rows=[])]
    lazy = _run(LazyAdam(0.01, amsgrad=amsgrad), steps, init)
    adam = _run(keras.optimizers.Adam(0.01, amsgrad=amsgrad), steps, init)
    np.testing.assert_allclose(lazy, adam, rtol=1e-5, atol=1e-6)


def test_skip_zero_rows_false_equals_keras_adam_with_zero_rows():
    init = np.random.default_rng(1).normal(size=SHAPE).astype("float32")
    steps = [dense_gradient(s[1]) for s in _dense_steps(3)]
    lazy = _run(LazyAdam(0.01, skip_zero_rows=False), steps, init)
    adam = _run(keras.optimizers.Adam(0.01), steps, init)
    np.testing.assert_allclose(lazy, adam, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gradient", ["sparse", "dense"])
def test_absent_rows_do_not_move_unlike_adam(gradient):
    """Rows trained once, then absent, stay put; Adam's keep moving."""
    rng = np.random.default_rng(3)
    init = rng.normal(size=SHAPE).astype("float32")
    values = rng.normal(size=(2, 3)).astype("float32")

    def grad(rows):
        if gradient == "sparse":
            return sparse_gradient(rows, values, SHAPE)
        dense = np.zeros(SHAPE, "float32")
        dense[rows] = values
        return dense_gradient(dense)

    for make, moves in ((LazyAdam, False), (keras.optimizers.Adam, True)):
        opt, variable = make(0.1), keras.Variable(init)
        opt.apply([grad([0, 1])], [variable])
        before = numpy(variable)
        opt.apply([grad([4, 5])], [variable])
        after = numpy(variable)
        assert np.any(after[[0, 1]] != before[[0, 1]]) == moves, make.__name__
        assert np.all(after[[4, 5]] != before[[4, 5]])


def test_schedules_callables_and_legacy_decay():
    lr_schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)
    init = np.ones(SHAPE, "float32")
    steps = _sparse_steps(4, 4)
    configs = {
        "schedule": (dict(learning_rate=lr_schedule), lambda t: 0.1 * 0.5 ** (t / 2)),
        "callable": (dict(learning_rate=lambda: 0.05, beta_1=lambda: 0.8), lambda t: 0.05),
        "decay": (dict(learning_rate=0.1, decay=0.5), lambda t: 0.1 / (1 + 0.5 * t)),
    }
    for name, (kwargs, lr_of_t) in configs.items():
        opt, variable = LazyAdam(**kwargs), keras.Variable(init)
        b1 = 0.8 if name == "callable" else 0.9
        oracle, expected = NumpyLazyAdam(SHAPE, "float32", beta_1=b1), init.copy()
        for t, (_, idx, val) in enumerate(steps):
            opt.apply([sparse_gradient(idx, val, SHAPE)], [variable])
            oracle.sparse(expected, idx, val, lr=lr_of_t(t))
        np.testing.assert_allclose(numpy(variable), expected, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_clipping_uses_summed_rows(clip):
    """Norms and values are clipped after duplicates are summed."""
    idx = np.array([1, 1, 3])
    val = np.array([[3.0, 0, 0], [3.0, 0, 0], [0, 4.0, 0]], "float32")
    summed = np.zeros(SHAPE, "float32")
    np.add.at(summed, idx, val)  # rows: (6,0,0) and (0,4,0); norm sqrt(52)
    sparse = LazyAdam(1.0, **{clip: 1.0})
    dense = LazyAdam(1.0, **{clip: 1.0})
    a, b = keras.Variable(np.zeros(SHAPE, "float32")), keras.Variable(np.zeros(SHAPE, "float32"))
    sparse.apply([sparse_gradient(idx, val, SHAPE)], [a])
    dense.apply([dense_gradient(summed)], [b])
    np.testing.assert_allclose(
        numpy(sparse.get_slot(a, "m")), numpy(dense.get_slot(b, "m")), rtol=1e-6
    )
    assert np.abs(numpy(sparse.get_slot(a, "m"))).max() <= 0.1 * 1.0 + 1e-6


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_variables(dtype):
    variable = keras.Variable(np.ones(SHAPE), dtype=dtype)
    opt = LazyAdam(0.01)
    opt.apply([sparse_gradient([2, 2, 5], np.ones((3, 3)), SHAPE)], [variable])
    result = numpy(keras.ops.cast(variable, "float32"))
    assert keras.backend.standardize_dtype(opt.get_slot(variable, "m").dtype) == dtype
    np.testing.assert_allclose(result[[2, 5]], 0.99, rtol=1e-2)
    np.testing.assert_array_equal(np.delete(result, [2, 5], axis=0), 1.0)


def test_element_sparse_gradient():
    """Element-wise sparse COO/BCOO (not row slices) is handled by rows."""
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow has no element-sparse gradient type for variables")
    rows, cols = np.array([1, 1, 4]), np.array([0, 2, 1])
    vals = np.array([1.0, 2.0, 3.0], "float32")
    if BACKEND == "jax":
        from jax.experimental import sparse as jax_sparse

        g = jax_sparse.BCOO((vals, np.stack([rows, cols], 1)), shape=SHAPE)
    else:
        import torch

        g = torch.sparse_coo_tensor(np.stack([rows, cols]), vals, SHAPE)
    dense = np.zeros(SHAPE, "float32")
    dense[rows, cols] = vals
    a, b = keras.Variable(np.ones(SHAPE, "float32")), keras.Variable(np.ones(SHAPE, "float32"))
    LazyAdam(0.1).apply([g], [a])
    LazyAdam(0.1).apply([dense_gradient(dense)], [b])
    np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="jit_compile's XLA is TF's")
def test_tf_steps_for_xla_keep_static_shapes():
    """A dynamic row count under XLA makes each step take seconds."""
    import tensorflow as tf

    from keras_lazyadam.backend import tensorflow as tf_backend

    seen = {}
    for name, jit in (("xla", True), ("graph", False)):

        def probe(name=name):
            seen[name] = tf_backend._building_for_xla()
            return tf.constant(0)

        tf.function(probe, jit_compile=jit)()
    seen["eager"] = tf_backend._building_for_xla()
    assert seen == {"xla": True, "graph": False, "eager": False}


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"weight_decay": 0.1}, {"amsgrad": True}],
    ids=["adam", "weight_decay", "amsgrad"],
)
@pytest.mark.parametrize("gradient", ["sparse", "dense"])
def test_schedule_reaching_zero_moves_nothing(kwargs, gradient):
    """A learning rate of exactly 0 (a schedule decayed to 0): no crash, no move."""
    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, decay_steps=1, end_learning_rate=0.0)
    rng = np.random.default_rng(7)
    variable = keras.Variable(rng.normal(size=SHAPE).astype("float32"))
    values = rng.normal(size=SHAPE).astype("float32")
    if gradient == "sparse":
        grad = sparse_gradient(np.arange(SHAPE[0]), values, SHAPE)
    else:
        grad = dense_gradient(values)  # every row touched: torch's fused kernel
    optimizer = LazyAdam(schedule, **kwargs)
    optimizer.apply([grad], [variable])  # learning rate 0.1: moves
    before = numpy(variable)
    for _ in range(2):  # learning rate 0
        optimizer.apply([grad], [variable])
    np.testing.assert_array_equal(numpy(variable), before)
    assert int(numpy(optimizer.iterations)) == 3


@pytest.mark.parametrize("shape", [SHAPE, (10,)], ids=["table", "vector"])
@pytest.mark.parametrize("skip_zero_rows", [True, False])
def test_accumulated_sparse_gradients_update_only_their_rows(skip_zero_rows, shape, compiled):
    """With gradient accumulation, rows absent from every accumulated sparse
    gradient keep value, m and v bit for bit, whatever `skip_zero_rows`
    says; the rows present move as one sparse step of the mean gradient."""
    from conftest import Stepper

    rng = np.random.default_rng(5)
    init = rng.normal(size=shape).astype("float32")
    windows = [([1, 2], [4]), ([4, 7], [2])]
    values = {n: rng.normal(size=(n,) + shape[1:]).astype("float32") for n in (1, 2)}
    accumulated = Stepper(
        LazyAdam(0.1, skip_zero_rows=skip_zero_rows, gradient_accumulation_steps=2),
        keras.Variable(init),
        compiled,
    )
    single = Stepper(LazyAdam(0.1), keras.Variable(init), compiled)
    for first, second in windows:
        before = [numpy(accumulated.variable)] + [accumulated.slot(s) for s in ("m", "v")]
        accumulated(sparse_gradient(first, values[len(first)], shape))
        accumulated(sparse_gradient(second, values[len(second)], shape))
        rows = np.array(first + second)
        mean = np.concatenate([values[len(first)], values[len(second)]]) / 2
        single(sparse_gradient(rows, mean, shape))
        after = [numpy(accumulated.variable)] + [accumulated.slot(s) for s in ("m", "v")]
        absent = np.setdiff1d(np.arange(shape[0]), rows)
        for b, a in zip(before, after):
            np.testing.assert_array_equal(a[absent], b[absent])
        np.testing.assert_allclose(
            numpy(accumulated.variable), numpy(single.variable), rtol=1e-5, atol=1e-6
        )


@pytest.mark.skipif(BACKEND != "jax", reason="JAX compiles every eager op for each new shape")
def test_jax_eager_steps_compile_nothing_new_for_a_new_number_of_rows():
    """Eager `apply` with a BCOO gradient of a new nnz every step: once a
    power-of-two size was seen, no new size compiles anything (before, each
    new nnz compiled ~40 ops: seconds a step and memory without bound)."""
    import jax

    compiles = []

    def listen(event, *_, **__):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    rng = np.random.default_rng(0)
    sizes = list(range(33, 65))
    grads = {
        n: sparse_gradient(
            rng.integers(0, 100, n), rng.normal(size=(n, 3)).astype("float32"), (100, 3)
        )
        for n in sizes
    }
    optimizer, variable = LazyAdam(0.01), keras.Variable(np.zeros((100, 3), "float32"))
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        optimizer.apply([grads[33]], [variable])  # compiles the 64-entry step
        seen = len(compiles)
        for n in sizes[1:]:
            optimizer.apply([grads[n]], [variable])
    finally:
        unregister = getattr(jax.monitoring, "unregister_event_duration_listener", None)
        if unregister is not None:
            unregister(listen)
    assert seen > 0  # the listener hears compilations
    assert len(compiles) == seen, f"{len(compiles) - seen} compilations for {len(sizes) - 1} sizes"
