"""`step_mode` (issue 10): "catch_up" and "per_row" against the numpy oracle
and dense Adam, eager and compiled. "global" is the rest of the suite."""

import keras
import numpy as np
import pytest
from numpy_reference import NumpyLazyAdam

from conftest import BACKEND
from conftest import Stepper
from conftest import assert_matches_oracle
from conftest import dense_gradient
from conftest import hyperparameters
from conftest import numpy
from conftest import sparse_gradient
from keras_lazyadam import LazyAdam
from keras_lazyadam import backend
from keras_lazyadam.rule import State
from keras_lazyadam.rule import adam_update

SHAPE = (10, 3)
MODES = ["catch_up", "per_row"]


def _gappy_steps(seed, steps=24, dtype="float32", kind="sparse"):
    """Row r is present with probability ~1/(r+1): rows 6.. come back after
    long gaps (or never); 5 ids a step, a duplicate every step."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, SHAPE[0] + 1)
    p /= p.sum()
    out = []
    for _ in range(steps):
        idx = rng.choice(SHAPE[0], size=5, p=p)
        idx[-1] = idx[0]
        values = rng.normal(size=(5, SHAPE[1])).astype(dtype)
        if kind == "sparse":
            out.append(("sparse", idx, values))
        else:
            g = np.zeros(SHAPE, dtype)
            np.add.at(g, idx, values)
            out.append(("dense", g))
    return out


CASES = [
    dict(testcase_name="sparse_gaps", steps=_gappy_steps(1)),
    dict(testcase_name="dense_gaps", steps=_gappy_steps(2, kind="dense")),
    dict(
        testcase_name="dense_every_row",
        steps=_gappy_steps(3, 8, kind="dense"),
        kwargs=dict(skip_zero_rows=False),
    ),
    dict(testcase_name="amsgrad", steps=_gappy_steps(4), kwargs=dict(amsgrad=True)),
    dict(testcase_name="weight_decay", steps=_gappy_steps(5), kwargs=dict(weight_decay=0.1)),
    dict(testcase_name="float64", steps=_gappy_steps(6, 12, dtype="float64"), dtype="float64"),
    dict(
        testcase_name="mixed_and_empty",
        steps=_gappy_steps(7, 6)
        + [("sparse", np.zeros(0, int), np.zeros((0, 3), "float32"))]
        + _gappy_steps(8, 6, kind="dense")
        + _gappy_steps(9, 6),
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["testcase_name"])
def test_matches_numpy_oracle(case, mode, compiled):
    kwargs = dict(learning_rate=0.02, step_mode=mode, **case.get("kwargs", {}))
    assert_matches_oracle(kwargs, case["steps"], SHAPE, case.get("dtype", "float32"), compiled)


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_catch_up_moments_equal_dense_adams(kind, compiled):
    """Every row's m and v are dense Adam's (zero gradients where a row is
    absent), seen from the row's last update: m * beta_1^(t - row_step).
    (rtol 3e-5 on v: 1 - beta_2 rounds by 1.3e-5 in float32.)"""
    steps = _gappy_steps(11, steps=40, kind=kind)
    init = np.random.default_rng(1).normal(size=SHAPE).astype("float32")
    variable = keras.Variable(init)
    step = Stepper(LazyAdam(0.02, step_mode="catch_up"), variable, compiled)
    adam = NumpyLazyAdam(SHAPE, "float32", lr=0.02, skip_zero_rows=False)
    adam_var = init.copy()
    for t, case_step in enumerate(steps, start=1):
        if kind == "sparse":
            _, idx, values = case_step
            step(sparse_gradient(idx, values, SHAPE))
            g = np.zeros(SHAPE, "float32")
            np.add.at(g, idx, values)
        else:
            g = case_step[1]
            step(dense_gradient(g))
        adam.dense(adam_var, g)
        since = (t - step.slot("row_step"))[:, None]
        np.testing.assert_allclose(step.slot("m") * 0.9**since, adam.m, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(step.slot("v") * 0.999**since, adam.v, rtol=3e-5, atol=1e-10)
    # The sequence does have long gaps: some row came back after >= 10 steps.
    assert since.max() >= 10 or np.any(step.slot("row_step") == 0)


MODE_RATIOS = [
    # (mode, this row's first move / Adam's first move)
    dict(testcase_name="per_row", mode="per_row", ratio=1.0),
    dict(testcase_name="global", mode="global", ratio=0.1 / np.sqrt(0.001)),  # ~3.16
    dict(testcase_name="catch_up", mode="catch_up", ratio=0.1 / np.sqrt(0.001)),
]


@pytest.mark.parametrize("kind", ["sparse", "dense"])
@pytest.mark.parametrize("case", MODE_RATIOS, ids=lambda c: c["testcase_name"])
def test_first_update_of_a_row_seen_late(case, kind, compiled):
    """A row first seen at step 10,002: with "per_row" it moves as Adam's
    first step does; with tfa's global bias correction about 3.16x more."""
    lr = 0.01
    variable = keras.Variable(np.zeros(SHAPE, "float32"))
    optimizer = LazyAdam(lr, step_mode=case["mode"])
    step = Stepper(optimizer, variable, compiled)
    optimizer.iterations.assign(10_000)
    rng = np.random.default_rng(2)
    for rows in ([0, 1], [0, 1], [5, 6]):
        values = rng.normal(size=(2, 3)).astype("float32")
        if kind == "sparse":
            step(sparse_gradient(rows, values, SHAPE))
        else:
            g = np.zeros(SHAPE, "float32")
            g[rows] = values
            step(dense_gradient(g))
    # Adam's first step: m = 0.1 g, v = 0.001 g^2, alpha = lr sqrt(0.001) / 0.1.
    adam_first = -lr * np.sqrt(1 - 0.999) / 0.1 * (0.1 * values) / (np.sqrt(0.001) * np.abs(values))
    moved = numpy(variable)[[5, 6]]
    np.testing.assert_allclose(moved, case["ratio"] * adam_first, rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_masked_rows_and_their_counters_come_out_bit_for_bit(mode):
    """The dense rule with a mask: untouched rows keep var, m, v, vhat and
    row_step exactly."""
    rng = np.random.default_rng(3)
    var, m, g = (rng.normal(size=(6, 2)).astype("float32") for _ in range(3))
    v = rng.uniform(0.0, 2.0, size=(6, 2)).astype("float32")
    g[[1, 4]] = 0.0
    row_step = np.array([3, 1, 0, 5, 2, 6], "int32")
    touched = np.any(g != 0, axis=1, keepdims=True)
    t = keras.ops.convert_to_tensor
    hyper = hyperparameters(0.1, weight_decay=0.1, amsgrad=True, step=7, step_mode=mode)
    state = State(*(t(x) for x in (var, m, v, v * 1.5, row_step)))
    new = adam_update(state, t(g), hyper, touched)
    for before, after in zip((var, m, v, v * 1.5, row_step), new):
        np.testing.assert_array_equal(numpy(after)[[1, 4]], before[[1, 4]])
    counts = numpy(new.row_step)
    want = 7 if mode == "catch_up" else row_step + 1
    np.testing.assert_array_equal(counts[[0, 2, 3, 5]], np.broadcast_to(want, 6)[[0, 2, 3, 5]])
    assert keras.backend.standardize_dtype(new.row_step.dtype) == "int32"


@pytest.mark.parametrize("mode", MODES)
def test_gradient_accumulation_counts_real_updates(mode):
    """With 2 accumulation steps, each gradient given twice is one update:
    the row clock counts updates, not micro-steps."""
    steps = _gappy_steps(12, steps=6)
    init = np.random.default_rng(4).normal(size=SHAPE).astype("float32")
    variable = keras.Variable(init)
    optimizer = LazyAdam(0.02, step_mode=mode, gradient_accumulation_steps=2)
    oracle = NumpyLazyAdam(SHAPE, "float32", lr=0.02, step_mode=mode)
    expected = init.copy()
    for _, idx, values in steps:
        for _ in range(2):
            optimizer.apply([sparse_gradient(idx, values, SHAPE)], [variable])
        oracle.sparse(expected, idx, values)
    np.testing.assert_allclose(numpy(variable), expected, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(numpy(optimizer.get_slot(variable, "m")), oracle.m, rtol=2e-5)
    np.testing.assert_array_equal(numpy(optimizer.get_slot(variable, "row_step")), oracle.row_step)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_clipping(clip, mode):
    """Clipping happens before the rule: as if the clipped gradient were given."""
    idx = np.array([1, 1, 3])
    val = np.array([[3.0, 0, 0], [3.0, 0, 0], [0, 4.0, 0]], "float32")
    summed = np.zeros(SHAPE, "float32")
    np.add.at(summed, idx, val)
    clipped = {
        "clipnorm": summed / np.sqrt(52.0),
        "global_clipnorm": summed / np.sqrt(52.0),
        "clipvalue": np.clip(summed, -1.0, 1.0),
    }[clip]
    a, b = keras.Variable(np.zeros(SHAPE, "float32")), keras.Variable(np.zeros(SHAPE, "float32"))
    opt_a = LazyAdam(0.1, step_mode=mode, **{clip: 1.0})
    opt_b = LazyAdam(0.1, step_mode=mode)
    for opt, variable, g in ((opt_a, a, None), (opt_b, b, clipped)):
        opt.iterations.assign(5)
        gradient = sparse_gradient(idx, val, SHAPE) if g is None else dense_gradient(g)
        opt.apply([gradient], [variable])
    np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-5, atol=1e-7)
    for slot in ("m", "row_step"):
        np.testing.assert_allclose(numpy(opt_a.get_slot(a, slot)), numpy(opt_b.get_slot(b, slot)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_variables(dtype, mode):
    """16-bit tables keep 16-bit m and v and an int32 row_step; the maths
    runs in float32."""
    variable = keras.Variable(np.ones(SHAPE), dtype=dtype)
    reference = keras.Variable(np.ones(SHAPE, "float32"))
    opt, ref_opt = LazyAdam(0.01, step_mode=mode), LazyAdam(0.01, step_mode=mode)
    for idx in ([2, 2, 5], [5, 6, 6], [2, 8, 9]):
        g = np.ones((3, 3), "float32")
        opt.apply([sparse_gradient(idx, g, SHAPE)], [variable])
        ref_opt.apply([sparse_gradient(idx, g, SHAPE)], [reference])
    row_step = opt.get_slot(variable, "row_step")
    assert keras.backend.standardize_dtype(row_step.dtype) == "int32"
    assert keras.backend.standardize_dtype(opt.get_slot(variable, "m").dtype) == dtype
    np.testing.assert_array_equal(numpy(row_step), numpy(ref_opt.get_slot(reference, "row_step")))
    got = numpy(keras.ops.cast(variable, "float32"))
    np.testing.assert_allclose(got, numpy(reference), rtol=1e-2)


@pytest.mark.filterwarnings("ignore:LazyAdam received a dense gradient")
@pytest.mark.parametrize("mode", MODES)
def test_mixed_precision_fit(mode):
    """`mixed_float16` wraps the optimizer in a LossScaleOptimizer: the
    inner LazyAdam keeps its row counters, and looked-up rows only move."""
    from keras_lazyadam import LazyEmbedding

    keras.config.set_dtype_policy("mixed_float16")
    try:
        ids = keras.Input((3,), dtype="int32")
        x = LazyEmbedding(50, 4, name="table")(ids)
        x = keras.layers.GlobalAveragePooling1D()(x)
        out = keras.layers.Dense(1, dtype="float32")(x)
        model = keras.Model(ids, out)
        model.compile(optimizer=LazyAdam(0.01, step_mode=mode), loss="mse")
        data = np.random.default_rng(5).integers(0, 30, size=(64, 3)).astype("int32")
        model.fit(data, np.ones((64, 1), "float32"), batch_size=16, epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    table = model.get_layer("table").embeddings
    counts = numpy(optimizer.get_slot(table, "row_step"))
    assert counts.shape == (50,)
    assert not counts[30:].any() and counts[np.unique(data)].min() >= 1
    assert counts.max() <= 4


def test_step_mode_argument():
    assert LazyAdam().step_mode == "global"
    for mode in ("global", "catch_up", "per_row"):
        config = LazyAdam(step_mode=mode).get_config()
        assert config["step_mode"] == mode
        assert LazyAdam.from_config(config).step_mode == mode
        restored = keras.optimizers.deserialize(
            keras.optimizers.serialize(LazyAdam(step_mode=mode))
        )
        assert restored.step_mode == mode
    for bad in ("catchup", None, 1, "GLOBAL"):
        with pytest.raises(ValueError, match=r"`step_mode` must be one of .*step_mode="):
            LazyAdam(step_mode=bad)


def test_row_step_slot_is_one_counter_per_row():
    table = keras.Variable(np.zeros((7, 4), "float32"), name="table")
    bias = keras.Variable(np.zeros((4,), "float32"), name="bias")
    scalar = keras.Variable(np.zeros((), "float32"), name="scale")
    glob = LazyAdam()
    glob.build([table, bias])
    assert glob.get_slot_names() == ["m", "v"]
    assert not any("row_step" in v.path for v in glob.variables)
    opt = LazyAdam(step_mode="catch_up", amsgrad=True)
    opt.build([table, bias, scalar])
    assert opt.get_slot_names() == ["m", "v", "vhat", "row_step"]
    shapes = [tuple(opt.get_slot(v, "row_step").shape) for v in (table, bias, scalar)]
    assert shapes == [(7,), (4,), ()]
    assert opt.get_slot(table, "row_step").path.endswith("table_row_step")
    g = [dense_gradient(np.ones(s, "float32")) for s in ((7, 4), (4,), ())]
    opt.apply(g, [table, bias, scalar])
    opt.apply(g, [table, bias, scalar])
    for v in (table, bias, scalar):
        assert np.all(numpy(opt.get_slot(v, "row_step")) == 2)


@pytest.mark.skipif(BACKEND != "torch", reason="the fused dense kernel is torch's")
@pytest.mark.parametrize("mode", MODES)
def test_torch_fused_kernel_declines_row_steps(mode):
    t = keras.ops.convert_to_tensor
    hyper = hyperparameters(0.1, step_mode=mode)
    state = State(*(keras.Variable(np.ones(SHAPE, "float32")) for _ in range(3)))
    assert not backend.fused_dense_update(state, t(np.ones(SHAPE, "float32")), hyper)
    assert backend.fused_dense_update(
        state, t(np.ones(SHAPE, "float32")), hyper._replace(step_mode="global")
    )


def test_dense_every_row_is_keras_adam():
    """No row ever skipped: both modes are Adam (catch_up decays by beta^0)."""
    init = np.random.default_rng(6).normal(size=SHAPE).astype("float32")
    grads = [rng.normal(size=SHAPE).astype("float32") for rng in [np.random.default_rng(7)] * 5]
    results = {}
    for name, opt in (
        ("adam", keras.optimizers.Adam(0.01)),
        ("catch_up", LazyAdam(0.01, step_mode="catch_up")),
        ("per_row", LazyAdam(0.01, step_mode="per_row")),
    ):
        variable = keras.Variable(init)
        for g in grads:
            opt.apply([dense_gradient(g)], [variable])
        results[name] = numpy(variable)
    for mode in MODES:
        np.testing.assert_allclose(results[mode], results["adam"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_tfa_state_loads_with_row_counters(mode):
    """tfa kept no row counter: rows it updated (non-zero v) count as
    updated at the last step, and as often as the global step."""
    from keras_lazyadam import load_tfa_weights

    table = keras.Variable(np.zeros((5, 2), "float32"))
    m = np.zeros((5, 2), "float32")
    v = np.zeros((5, 2), "float32")
    m[[1, 3]], v[[1, 3]] = 0.5, 0.25
    optimizer = LazyAdam(0.1, step_mode=mode)
    load_tfa_weights(optimizer, [np.int64(40), m, v], [table])
    counts = numpy(optimizer.get_slot(table, "row_step"))
    np.testing.assert_array_equal(counts, [0, 40, 0, 40, 0])
    # "catch_up": row 1 comes back at step 41 with nothing to catch up.
    optimizer.apply([sparse_gradient([1], np.ones((1, 2), "float32"), (5, 2))], [table])
    m_after = numpy(optimizer.get_slot(table, "m"))[1]
    np.testing.assert_allclose(m_after, 0.9 * 0.5 + 0.1, rtol=1e-6)
