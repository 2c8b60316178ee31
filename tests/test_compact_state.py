"""Compact optimizer state (issue 16): `second_moment="row"` and
`first_moment_dtype` against the numpy oracle, eager and compiled; untouched
rows bit for bit; which variables; config, slots and tfa migration."""

import re

import keras
import numpy as np
import pytest
from numpy_reference import NumpyLazyAdam
from numpy_reference import decode_int8
from numpy_reference import encode_int8
from numpy_reference import round_bfloat16

from conftest import BACKEND
from conftest import Stepper
from conftest import assert_matches_oracle
from conftest import dense_gradient
from conftest import numpy
from conftest import sparse_gradient
from keras_lazyadam import LazyAdam
from keras_lazyadam import load_tfa_weights

SHAPE = (10, 6)
TABLE = "embeddings"  # compact by default

CONFIGS = [
    dict(testcase_name="row", second_moment="row"),
    dict(testcase_name="bf16", first_moment_dtype="bfloat16"),
    dict(testcase_name="int8", first_moment_dtype="int8"),
    dict(testcase_name="row_bf16", second_moment="row", first_moment_dtype="bfloat16"),
    dict(testcase_name="row_int8", second_moment="row", first_moment_dtype="int8"),
]


def _config(case):
    return {k: v for k, v in case.items() if k != "testcase_name"}


def _steps(seed, kind="sparse", steps=8, shape=SHAPE, dtype="float32"):
    """Rows 7.. never touched; a duplicate id every sparse step."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        idx = rng.integers(0, 7, size=5)
        idx[-1] = idx[0]
        values = rng.normal(size=(5,) + shape[1:]).astype(dtype)
        values *= 10.0 ** rng.uniform(-3, 0, size=values.shape)  # spread magnitudes
        if kind == "sparse":
            out.append(("sparse", idx, values))
        else:
            g = np.zeros(shape, dtype)
            np.add.at(g, idx, values)
            out.append(("dense", g))
    return out


STEPS = [
    dict(testcase_name="sparse", steps=_steps(1)),
    dict(testcase_name="dense_masked", steps=_steps(2, "dense")),
    dict(
        testcase_name="dense_all_rows", steps=_steps(3, "dense"), kwargs=dict(skip_zero_rows=False)
    ),
    dict(testcase_name="amsgrad", steps=_steps(4), kwargs=dict(amsgrad=True)),
    dict(testcase_name="weight_decay", steps=_steps(5), kwargs=dict(weight_decay=0.1)),
    dict(testcase_name="catch_up", steps=_steps(6), kwargs=dict(step_mode="catch_up")),
    dict(
        testcase_name="per_row_dense",
        steps=_steps(7, "dense"),
        kwargs=dict(step_mode="per_row", amsgrad=True),
    ),
    dict(testcase_name="rank3", steps=_steps(8, shape=(10, 2, 3)), shape=(10, 2, 3)),
]


@pytest.mark.parametrize("case", STEPS, ids=lambda c: c["testcase_name"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["testcase_name"])
def test_matches_numpy_oracle(config, case, compiled):
    kwargs = dict(learning_rate=0.02, **_config(config), **case.get("kwargs", {}))
    shape = case.get("shape", SHAPE)
    step, oracle = assert_matches_oracle(kwargs, case["steps"], shape, "float32", compiled, True)
    tol = dict(rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(
        numpy(step.optimizer.decoded_slot(step.variable, "m")), oracle.m, **tol
    )
    v = step.slot("v")
    np.testing.assert_allclose(v.reshape(oracle.v.shape), oracle.v, **tol)


def test_oracle_is_checked_on_compact_slots():
    """The compact table really is compact (so the test above tests it)."""
    variable = keras.Variable(np.zeros(SHAPE, "float32"), name=TABLE)
    optimizer = LazyAdam(second_moment="row", first_moment_dtype="int8")
    optimizer.build([variable])
    shapes = {n: tuple(optimizer.get_slot(variable, n).shape) for n in optimizer.get_slot_names()}
    assert shapes == {"m": SHAPE, "v": (10,), "m_scale": (10,)}
    assert keras.backend.standardize_dtype(optimizer.get_slot(variable, "m").dtype) == "int8"


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_width_one_row_wise_is_the_element_wise_rule(kind, compiled, row_path):
    """A width-1 table: one v per row is one v per element, bit for bit (on
    the row path: a table this small is otherwise updated whole, where TF's
    graph optimizer rewrites the two graphs' arithmetic apart)."""
    shape = (10, 1)
    results = []
    for second_moment in ("element", "row"):
        variable = keras.Variable(np.linspace(-1, 1, 10, dtype="float32")[:, None], name=TABLE)
        optimizer = LazyAdam(0.05, second_moment=second_moment, amsgrad=True)
        step = Stepper(optimizer, variable, compiled)
        for _, *data in _steps(9, kind, shape=shape):
            step(sparse_gradient(*data, shape) if kind == "sparse" else dense_gradient(data[0]))
        results.append((numpy(variable), step.slot("m"), step.slot("v").reshape(shape)))
    for element, row in zip(*results):
        if compiled == "xla":
            # XLA fuses the two graphs (v gathered as (n,) or (n, 1))
            # differently, and contracts to FMAs differently: 1 ulp.
            np.testing.assert_allclose(element, row, rtol=3e-7, atol=0)
        else:
            np.testing.assert_array_equal(element.view(np.uint32), row.view(np.uint32))


@pytest.mark.parametrize("kind", ["sparse", "dense"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["testcase_name"])
def test_untouched_rows_keep_every_slot_bit_for_bit(config, kind, compiled):
    """Rows 7.. start with non-zero codes, scales, v and row_step; steps
    touching only rows 0..6 leave them exactly as they were."""
    variable = keras.Variable(
        np.random.default_rng(0).normal(size=SHAPE).astype("float32"), name=TABLE
    )
    optimizer = LazyAdam(0.02, amsgrad=True, step_mode="catch_up", **_config(config))
    step = Stepper(optimizer, variable, compiled)
    rng = np.random.default_rng(1)
    for name in optimizer.get_slot_names():
        slot = optimizer.get_slot(variable, name)
        dtype = keras.backend.standardize_dtype(slot.dtype)
        if "int" in dtype:  # int8 codes, bfloat16 bits (int16), row_step
            value = rng.integers(0, 128, size=slot.shape)
        else:  # vhat >= v, as a real run keeps it
            low = 2.5 if name == "vhat" else 0.5
            value = rng.uniform(low, low + 0.5, size=slot.shape)
        slot.assign(value.astype(dtype))
    before = {n: step.slot(n) for n in optimizer.get_slot_names()}
    var_before = numpy(variable)
    for _, *data in _steps(10, kind):
        step(sparse_gradient(*data, SHAPE) if kind == "sparse" else dense_gradient(data[0]))
    np.testing.assert_array_equal(numpy(variable)[7:], var_before[7:])
    for name, old in before.items():
        new = step.slot(name)
        np.testing.assert_array_equal(new[7:], old[7:], err_msg=name)
        if name != "vhat":  # (vhat stays above v here)
            assert not np.array_equal(new[:7], old[:7]), name  # touched rows did change


@pytest.mark.skipif(BACKEND != "jax", reason="the copy is XLA's: JAX compiles the step")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["testcase_name"])
def test_jit_writes_the_state_of_a_dense_step_in_place(config):
    """A dense gradient's masked update of a compact table, compiled with
    the state donated as Keras' trainer does: XLA copies neither the table
    nor its codes (it did copy the codes, read by the table's update and
    written in place, until `backend.sequence` ordered the two)."""
    import jax

    shape = (256, 16)
    variable = keras.Variable(np.ones(shape, "float32"), name=TABLE)
    optimizer = LazyAdam(**_config(config))
    optimizer.build([variable])

    def step(optimizer_values, values, gradient):
        values, optimizer_values = optimizer.stateless_apply(optimizer_values, [gradient], values)
        return optimizer_values, values

    compiled = jax.jit(step, donate_argnums=(0, 1))
    gradient = np.zeros(shape, "float32")
    gradient[::3] = 1.0
    text = (
        compiled.lower([v.value for v in optimizer.variables], [variable.value], gradient)
        .compile()
        .as_text()
    )
    copies = re.findall(r"= (\w+\[256,16\])\S* copy\(", text)
    assert copies == [], copies


def test_only_embedding_tables_by_default_and_users_choose():
    table = keras.Variable(np.zeros((8, 4)), name="embeddings")
    kernel = keras.Variable(np.zeros((4, 3)), name="kernel")
    bias = keras.Variable(np.zeros((3,)), name="bias")
    with keras.name_scope("other"):  # path "other/embeddings"
        other = keras.Variable(np.zeros((8, 4)), name="embeddings")

    def v_shapes(optimizer):
        optimizer.build([table, kernel, bias, other])
        return [tuple(optimizer.get_slot(x, "v").shape) for x in (table, kernel, bias, other)]

    assert v_shapes(LazyAdam(second_moment="row")) == [(8,), (4, 3), (3,), (8,)]
    chosen = LazyAdam(second_moment="row")
    chosen.use_compact_state(var_list=[kernel, bias])  # the bias: rank 1, stays full
    chosen.exclude_from_compact_state(var_list=[other])
    assert v_shapes(chosen) == [(8,), (4,), (3,), (8, 4)]
    named = LazyAdam(second_moment="row")
    named.exclude_from_compact_state(var_names=["embeddings"])
    assert v_shapes(named) == [(8, 4), (4, 3), (3,), (8, 4)]
    # Saved in the config: the same slots after from_config.
    again = LazyAdam.from_config(chosen.get_config())
    assert v_shapes(again) == [(8,), (4,), (3,), (8, 4)]
    with pytest.raises(ValueError, match="before the optimizer is built"):
        chosen.use_compact_state(var_names=["x"])
    with pytest.raises(ValueError, match="no `m_scale` slot"):
        # int8 table next to a full-state kernel
        opt = LazyAdam(first_moment_dtype="int8")
        opt.build([table, kernel])
        opt.get_slot(kernel, "m_scale")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["testcase_name"])
def test_config_round_trip(config):
    optimizer = LazyAdam(**_config(config))
    optimizer.use_compact_state(var_names=["dense"])
    config = optimizer.get_config()
    again = LazyAdam.from_config(config)
    assert again.get_config() == config
    assert (
        keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).get_config() == config
    )


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["testcase_name"])
def test_saved_and_loaded_with_its_compact_state(config, tmp_path):
    """A `.keras` file keeps the compact slots bit for bit (dtypes too),
    and training continues as the saved model would have."""
    from keras_lazyadam import LazyEmbedding

    inputs = keras.Input((3,), dtype="int32")
    x = keras.layers.Flatten()(LazyEmbedding(50, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=LazyAdam(0.01, amsgrad=True, **_config(config)), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50, size=(64, 3)), rng.normal(size=(64, 1)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        assert a.path == b.path and a.dtype == b.dtype
        np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=a.path)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_codes_of_the_numpy_oracle():
    """The oracle's int8 map: the row max is code 127, zeros stay zero,
    and small values keep more precision than a linear map."""
    m = np.array([[0.0, 0.0], [1e-3, -2.0], [0.5, 0.01]], np.float32)
    codes, scale = encode_int8(m)
    np.testing.assert_array_equal(scale, [0.0, 2.0, 0.5])
    np.testing.assert_array_equal(codes, [[0, 0], [3, -127], [127, 18]])
    np.testing.assert_allclose(decode_int8(codes, scale)[2, 1], 0.01, rtol=0.03)  # linear: 20%
    assert round_bfloat16(np.float32(1 + 2**-8)) == 1.0  # tie to even
    assert round_bfloat16(np.float32(1 + 3 * 2**-8)) == 1 + 2**-6


def test_old_row_max_from_codes_or_decoded_rows_bit_for_bit():
    """int8's old row maximum is the same value whether the backend reduces
    the codes or the decoded rows (`backend.reduces_codes`), NaN scales,
    zero rows and -127 codes included."""
    from keras import ops

    from keras_lazyadam import state

    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, size=(64, 2, 5)).astype("int8")
    codes[0] = 0
    codes[1, 0, 0] = -127
    scale = (10.0 ** rng.uniform(-30, 3, size=64)).astype("float32")
    scale[2] = np.nan
    codec = state.Codec(3, "element", "int8")
    codes_t, scale_t = ops.convert_to_tensor(codes), ops.convert_to_tensor(scale)
    decoded = state.decode_m(codes_t, scale_t, codec)
    both = [
        numpy(state.old_row_max(codes_t, scale_t, decoded, codec, from_codes=f))
        for f in (True, False)
    ]
    np.testing.assert_array_equal(both[0].view(np.uint32), both[1].view(np.uint32))
    expected = np.abs(decode_int8(codes, scale)).max(axis=(1, 2))
    np.testing.assert_array_equal(both[0], expected)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["testcase_name"])
def test_load_tfa_weights_converts_to_the_compact_state(config):
    """tfa's full m and v: v (and vhat) become row means, m is encoded."""
    rng = np.random.default_rng(0)
    table = keras.Variable(np.zeros(SHAPE, "float32"), name=TABLE)
    kernel = keras.Variable(np.zeros((6, 2), "float32"), name="kernel")
    m = [rng.normal(size=SHAPE).astype("float32"), rng.normal(size=(6, 2)).astype("float32")]
    v = [rng.uniform(size=SHAPE).astype("float32"), rng.uniform(size=(6, 2)).astype("float32")]
    vhat = [x * 2 for x in v]
    optimizer = LazyAdam(amsgrad=True, **_config(config))
    load_tfa_weights(optimizer, [np.int64(7)] + m + v + vhat, [table, kernel])
    assert int(numpy(optimizer.iterations)) == 7
    oracle = NumpyLazyAdam(SHAPE, "float32", **_config(config))
    expected_m = np.asarray(
        {None: m[0], "bfloat16": round_bfloat16(m[0]), "int8": decode_int8(*encode_int8(m[0]))}[
            config.get("first_moment_dtype")
        ]
    )
    np.testing.assert_allclose(numpy(optimizer.decoded_slot(table, "m")), expected_m, rtol=1e-6)
    row = config.get("second_moment") == "row"
    for name, full in (("v", v[0]), ("vhat", vhat[0])):
        expected = full.mean(axis=1) if row else full
        np.testing.assert_allclose(
            numpy(optimizer.get_slot(table, name)).reshape(expected.shape), expected, rtol=1e-6
        )
        assert numpy(optimizer.get_slot(table, name)).shape == oracle.v.shape[: 1 + (not row)]
    # The kernel keeps its full state.
    np.testing.assert_array_equal(numpy(optimizer.get_slot(kernel, "m")), m[1])
    np.testing.assert_array_equal(numpy(optimizer.get_slot(kernel, "v")), v[1])


FEATURES = [
    dict(testcase_name="ema", kwargs=dict(use_ema=True, ema_overwrite_frequency=2)),
    dict(testcase_name="accumulation", kwargs=dict(gradient_accumulation_steps=2)),
    dict(testcase_name="clipnorm", kwargs=dict(clipnorm=0.01, weight_decay=0.01)),
    dict(testcase_name="global_clipnorm", kwargs=dict(global_clipnorm=0.01)),
    dict(testcase_name="mixed_float16", kwargs={}, policy="mixed_float16"),
    dict(testcase_name="mixed_bfloat16", kwargs=dict(step_mode="per_row"), policy="mixed_bfloat16"),
]


@pytest.mark.parametrize("case", FEATURES, ids=lambda c: c["testcase_name"])
def test_fit_with_keras_features(case):
    """`fit` with EMA, accumulation, clipping, loss scaling: the table
    trains, rows never looked up keep every slot at zero, other variables
    keep the full state."""
    from keras_lazyadam import LazyEmbedding

    keras.utils.set_random_seed(0)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(case.get("policy", policy))
    try:
        inputs = keras.Input((3,), dtype="int32")
        x = keras.layers.Flatten()(LazyEmbedding(40, 8)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1, dtype="float32")(x))
        optimizer = LazyAdam(0.01, second_moment="row", first_moment_dtype="int8", **case["kwargs"])
        model.compile(optimizer=optimizer, loss="mse")
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 30, size=(96, 3)), rng.normal(size=(96, 1)).astype("float32")
        before = numpy(model.layers[1].embeddings)
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    finally:
        keras.config.set_dtype_policy(policy)
    assert np.all(np.isfinite(history.history["loss"]))
    table = model.layers[1].embeddings
    inner = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    after = numpy(table)
    if "use_ema" not in case["kwargs"]:
        # (Keras' EMA overwrite, 0.99 e + 0.01 v with e == v, may move a row by an ulp)
        np.testing.assert_array_equal(after[30:], before[30:])
    assert (after[:30] != before[:30]).any(axis=1).all()
    for name in ("m", "v", "m_scale"):
        slot = numpy(inner.get_slot(table, name))
        assert not slot[30:].any() and slot[:30].any(), name
    kernel = model.layers[-1].kernel
    assert tuple(inner.get_slot(kernel, "v").shape) == tuple(kernel.shape)
