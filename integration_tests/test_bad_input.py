"""Workflow 8: bad input in a real run. Each case is a clear error naming the
problem, raised before anything is written (weights, slots and iterations are
as they were), or, where the backend cannot check inside compiled code (JAX
jit), the documented behaviour (docs/bad-input.md)."""

import re

import keras
import numpy as np
import pytest

from conftest import BACKEND
from conftest import BATCH
from conftest import ROWS
from conftest import Embedding
from conftest import embedding_model
from conftest import make_data
from conftest import optimizer_state
from conftest import sparse_gradient
from conftest import sparse_gradient_with_index_dtype
from conftest import to_numpy
from keras_lazyadam import LazyAdam

LAYERS = {"stock-layer": keras.layers.Embedding, "drop-in-layer": Embedding}


def _snapshot(model):
    return [w.copy() for w in model.get_weights()], optimizer_state(model.optimizer)


def _assert_same(model, snapshot):
    weights, state = snapshot
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer_state(model.optimizer), state):
        np.testing.assert_array_equal(a, b)


def _trained(layer, optimizer=None):
    model = embedding_model(layer)
    model.compile(optimizer=optimizer or LazyAdam(0.02), loss="mse")
    model.train_on_batch(*make_data(BATCH))
    return model


ERRORS = {
    "tensorflow": "must be in \\[0, 200\\)|indices|out of range",
    "torch": "index out of range",
}


@pytest.mark.parametrize("layer", list(LAYERS.values()), ids=list(LAYERS))
def test_id_out_of_range_in_fit(layer):
    model = _trained(layer)
    snapshot = _snapshot(model)
    x, y = make_data(BATCH, seed=3)
    x[5, 2] = ROWS
    if BACKEND == "jax":
        # jit cannot raise: the lookup fills NaN for the bad id, the loss is
        # NaN, and the step goes NaN exactly as it does with Keras' Adam.
        loss = model.train_on_batch(x, y)
        assert np.isnan(loss)
        adam = _trained(layer, keras.optimizers.Adam(0.02))
        adam.set_weights(snapshot[0])
        adam.train_on_batch(x, y)
        for lazy_w, adam_w in zip(model.get_weights(), adam.get_weights()):
            np.testing.assert_array_equal(np.isnan(lazy_w), np.isnan(adam_w))
        return
    with pytest.raises(Exception, match=ERRORS[BACKEND]):
        model.train_on_batch(x, y)
    _assert_same(model, snapshot)


@pytest.mark.parametrize(
    "layer",
    [keras.layers.Embedding, Embedding],
    ids=list(LAYERS),
)
def test_negative_id_in_fit(layer):
    """keras.layers.Embedding wraps -1 to the last row (keras.ops.take) on
    every backend, and so does its drop-in LazyEmbedding."""
    model = _trained(layer)
    x, y = make_data(BATCH, seed=3)
    x_wrapped = x.copy()
    x[5, 2], x_wrapped[5, 2] = -1, ROWS - 1
    model.train_on_batch(x, y)
    wrapped = _trained(layer)
    wrapped.train_on_batch(x_wrapped, y)
    for a, b in zip(model.get_weights(), wrapped.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_integer_or_boolean_table_is_refused(dtype):
    table = keras.Variable(np.zeros((10, 4), dtype), trainable=False, name="int_table")
    dense = keras.Variable(np.ones((4, 2), "float32"), name="kernel")
    optimizer = LazyAdam()
    with pytest.raises(ValueError, match=f"floating-point.*int_table.*{dtype}"):
        optimizer.build([dense, table])
    assert not optimizer.built


@pytest.mark.skipif(
    BACKEND == "torch",
    reason="torch refuses a trainable integer weight itself, when the layer "
    "creates it (torch tensors of integer dtype cannot require gradients)",
)
def test_integer_trainable_weight_in_fit_is_refused():
    class Offset(keras.layers.Layer):
        def build(self, shape):
            self.count = self.add_weight(
                shape=(3,), dtype="int32", trainable=True, initializer="zeros", name="count"
            )

        def call(self, x):
            return x + keras.ops.cast(keras.ops.sum(self.count), x.dtype)

    ids = keras.Input((2,))
    model = keras.Model(ids, Offset(name="offset")(keras.layers.Dense(2)(ids)))
    model.compile(optimizer=LazyAdam(), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match="offset/count.*int32"):
        model.train_on_batch(np.ones((4, 2), "float32"), np.ones((4, 2), "float32"))
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def _two_variables():
    a = keras.Variable(np.ones((5, 3), "float32"), name="a")
    b = keras.Variable(np.ones((6, 3), "float32"), name="b")
    optimizer = LazyAdam(0.1)
    optimizer.build([a, b])
    optimizer.apply(
        [keras.ops.convert_to_tensor(np.full(s, 0.5, "float32")) for s in ((5, 3), (6, 3))],
        [a, b],
    )
    return optimizer, a, b


def _apply(optimizer, grads, variables, compiled):
    """One optimizer step, eagerly or compiled (tf.function / jax.jit;
    `compiled="xla"`: TF's `jit_compile=True`)."""
    if not compiled:
        return optimizer.apply(grads, variables)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        step = tf.function(
            lambda *g: optimizer.apply(list(g), variables), jit_compile=compiled == "xla"
        )
        return step(*grads)
    import jax

    step = jax.jit(lambda o, t, g: optimizer.stateless_apply(o, g, t))
    new_vars, new_opt = step(
        [v.value for v in optimizer.variables], [v.value for v in variables], grads
    )
    for ref, value in zip(variables, new_vars):
        ref.assign(value)
    for ref, value in zip(optimizer.variables, new_opt):
        ref.assign(value)


MODES = ["eager"] + (["compiled"] if BACKEND != "torch" else [])


def _state(optimizer, variables):
    return [to_numpy(v) for v in variables] + optimizer_state(optimizer)


def _assert_state(optimizer, variables, before):
    for x, y in zip(_state(optimizer, variables), before):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "bad,match",
    [
        (np.ones((6, 4), "float32"), "'b'.*shape \\(6, 3\\).*\\(6, 4\\)"),
        (np.ones((3, 6), "float32"), "'b'.*shape"),
        (np.ones((6, 3), "int32"), "'b'.*floating point.*int32"),
    ],
    ids=["wrong-width", "transposed", "int-dtype"],
)
def test_wrong_gradient_shape_or_dtype_raises_before_any_write(bad, match, mode):
    optimizer, a, b = _two_variables()
    before = _state(optimizer, [a, b])
    good = np.full((5, 3), 0.25, "float32")  # would change `a` if applied
    with pytest.raises(ValueError, match=match):
        _apply(
            optimizer,
            [keras.ops.convert_to_tensor(good), keras.ops.convert_to_tensor(bad)],
            [a, b],
            mode == "compiled",
        )
    _assert_state(optimizer, [a, b], before)


@pytest.mark.parametrize(
    "mode",
    ["eager"] + (["compiled"] if BACKEND != "torch" else []),
)
@pytest.mark.parametrize("row", [6, -1, 7], ids=["too-large", "negative", "rows-plus-one"])
def test_sparse_gradient_with_bad_rows(row, mode):
    optimizer, a, b = _two_variables()
    before = _state(optimizer, [a, b])
    good = keras.ops.convert_to_tensor(np.full((5, 3), 0.25, "float32"))
    values = np.full((3, 3), 0.5, "float32")
    bad = sparse_gradient([1, row, 4], values, (6, 3))
    if BACKEND == "jax" and mode == "compiled":
        # Documented: under jit the bad row is dropped, the rest applies.
        _apply(optimizer, [good, bad], [a, b], True)
        reference, ra, rb = _two_variables()
        reference.apply([good, sparse_gradient([1, 4], values[[0, 2]], (6, 3))], [ra, rb])
        for x, y in zip(_state(optimizer, [a, b]), _state(reference, [ra, rb])):
            np.testing.assert_array_equal(x, y)
        return
    with pytest.raises(Exception, match="gradient of .{0,3}b.{0,3} must be in \\[0, 6\\)"):
        _apply(optimizer, [good, bad], [a, b], mode == "compiled")
    _assert_state(optimizer, [a, b], before)


@pytest.mark.parametrize("skip_zero_rows", [True, False])
def test_nan_and_inf_gradients_behave_as_keras_adam(skip_zero_rows):
    rng = np.random.default_rng(0)
    init = rng.standard_normal((6, 3)).astype("float32")
    grad = rng.standard_normal((6, 3)).astype("float32")
    grad[1, 2], grad[3, 0], grad[4, 1] = np.nan, np.inf, -np.inf
    results = {}
    for name, opt in (
        ("lazy", LazyAdam(0.1, skip_zero_rows=skip_zero_rows)),
        ("adam", keras.optimizers.Adam(0.1)),
    ):
        var = keras.Variable(init, name="w")
        opt.build([var])
        opt.apply([keras.ops.convert_to_tensor(grad)], [var])
        with np.errstate(invalid="ignore"):  # Inf * 0: NaN where grad is NaN/Inf, on purpose
            second = np.abs(grad) * 0 + 0.1
        opt.apply([keras.ops.convert_to_tensor(second)], [var])
        slots = [to_numpy(s) for s in opt.variables[2:]]
        results[name] = [to_numpy(var)] + slots
    for lazy, adam in zip(results["lazy"], results["adam"]):
        assert np.isnan(adam).any()  # the gradient really did poison Adam
        np.testing.assert_array_equal(np.isnan(lazy), np.isnan(adam))
        np.testing.assert_array_equal(np.isposinf(lazy), np.isposinf(adam))
        np.testing.assert_array_equal(np.isneginf(lazy), np.isneginf(adam))
        finite = np.isfinite(adam)
        np.testing.assert_allclose(lazy[finite], adam[finite], rtol=1e-5, atol=1e-6)


def _mode_ids(*modes):
    """The modes this backend has: eager; compiled (tf.function, jax.jit);
    xla (TF's jit_compile=True)."""
    have = {"eager": True, "compiled": BACKEND != "torch", "xla": BACKEND == "tensorflow"}
    return [m for m in modes if have[m]]


def _compiled(mode):
    return {"eager": False, "compiled": True, "xla": "xla"}[mode]


# (index dtype, rows of the table, a row in range that a narrow compare or
# cast would wrap, a row out of range that one would wrap into range)
NARROW = [
    ("uint8", 1000, 240, None),
    ("int8", 300, 100, None),
    ("int16", 40_000, 30_000, None),
    ("uint16", 70_000, 60_000, None),
    ("uint8", 200, 150, 250),
    ("int16", 20_000, 14_464, 30_000),
    ("uint32", 70_000, 69_999, 2**32 - 16),
]


@pytest.mark.skipif(BACKEND == "torch", reason="torch's sparse COO indices are always int64")
@pytest.mark.parametrize("mode", _mode_ids("eager", "compiled", "xla"))
@pytest.mark.parametrize(
    "dtype,rows,row,bad", NARROW, ids=[f"{d}-{r}-{i}" for d, r, i, _ in NARROW]
)
def test_narrow_index_dtypes_are_widened_first(dtype, rows, row, bad, mode):
    """Indices of any integer dtype land on their own row, as int32 ones do;
    a row out of range is refused (eagerly, TF graphs) or dropped (JAX jit,
    TF XLA), never wrapped onto another row, and a refused step writes
    nothing."""

    def fresh():
        a = keras.Variable(np.ones((4, 3), "float32"), name="a")
        table = keras.Variable(np.zeros((rows, 3), "float32"), name="table")
        optimizer = LazyAdam(0.1)
        optimizer.build([a, table])
        return optimizer, [a, table]

    values = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], "float32")
    good = keras.ops.convert_to_tensor(np.full((4, 3), 0.25, "float32"))
    reference, ref_vars = fresh()
    reference.apply([good, sparse_gradient([row, 3], values, (rows, 3))], ref_vars)
    optimizer, variables = fresh()
    ids = [row, 3] if bad is None else [row, bad, 3]
    given = values if bad is None else np.stack([values[0], values[0] * 7, values[1]])
    gradient = sparse_gradient_with_index_dtype(ids, given, (rows, 3), dtype)
    before = _state(optimizer, variables)
    dropped = mode == "xla" or (BACKEND == "jax" and mode == "compiled")
    if bad is None or dropped:
        _apply(optimizer, [good, gradient], variables, _compiled(mode))
        for x, y in zip(_state(optimizer, variables), _state(reference, ref_vars)):
            np.testing.assert_array_equal(x, y)
        return
    with pytest.raises(Exception, match="gradient of .{0,3}table.{0,3} must be in \\[0, "):
        _apply(optimizer, [good, gradient], variables, _compiled(mode))
    _assert_state(optimizer, variables, before)


@pytest.mark.parametrize("mode", _mode_ids("eager", "compiled", "xla"))
@pytest.mark.parametrize("shape", [(5, 3), (7, 3), (6, 3, 1)], ids=["fewer", "more", "rank"])
def test_sparse_gradient_declared_shape_must_be_the_variables(shape, mode):
    """A sparse gradient declared for another shape (two tables' gradients
    swapped) is refused, as Keras' Adam refuses it, before any write."""
    optimizer, a, b = _two_variables()
    before = _state(optimizer, [a, b])
    good = keras.ops.convert_to_tensor(np.full((5, 3), 0.25, "float32"))
    values = np.full((2,) + shape[1:], 0.5, "float32")
    step = lambda: _apply(  # noqa: E731
        optimizer, [good, sparse_gradient([1, 2], values, shape)], [a, b], _compiled(mode)
    )
    if BACKEND == "tensorflow" and mode != "eager":
        import tensorflow as tf

        # Statically known in the graph, as a tape's gradient is (a shape
        # fed in as a function argument is not known while tracing).
        def apply(g):
            bad = tf.IndexedSlices(tf.constant(values), tf.constant([1, 2]), tf.constant(shape))
            optimizer.apply([g, bad], [a, b])

        step = lambda: tf.function(apply, jit_compile=mode == "xla")(good)  # noqa: E731
    with pytest.raises(ValueError, match=f"'b'.*shape \\(6, 3\\).*{re.escape(str(shape))}"):
        step()
    _assert_state(optimizer, [a, b], before)


@pytest.mark.parametrize("how", ["apply", "stateless_apply"])
@pytest.mark.parametrize("count", [0, 1, 3], ids=["unbuilt", "fewer", "more"])
def test_gradients_without_variables_must_match_the_built_ones(count, how):
    """`apply(grads)` (and JAX's `stateless_apply`) without variables: an
    unbuilt optimizer and a gradient count other than the variables' are
    refused, as Keras' Adam refuses them; nothing is written."""
    if how == "stateless_apply" and BACKEND != "jax":
        pytest.skip("stateless_apply is JAX's")
    if count == 0:
        optimizer = LazyAdam(0.1)
        with pytest.raises(ValueError, match="must already be built"):
            optimizer.apply([keras.ops.ones((5, 3))])
        assert not optimizer.built
        return
    optimizer, a, b = _two_variables()
    before = _state(optimizer, [a, b])
    grads = [keras.ops.ones((5, 3)), keras.ops.ones((6, 3)), keras.ops.ones((6, 3))][:count]
    with pytest.raises(ValueError, match=f"{count} gradients for 2 variables"):
        if how == "apply":
            optimizer.apply(grads)
        else:
            optimizer.stateless_apply(
                [v.value for v in optimizer.variables], grads, [a.value, b.value]
            )
    _assert_state(optimizer, [a, b], before)


def _zero_size_gradient(shape, kind):
    if kind == "dense":
        return keras.ops.zeros(shape)
    return sparse_gradient([], np.zeros((0,) + shape[1:], "float32"), shape)


ZERO_SIZE = [((3, 0), "dense"), ((0, 3), "dense"), ((0,), "dense"), ((0, 3), "sparse")]


@pytest.mark.parametrize("mode", _mode_ids("eager", "compiled", "xla"))
@pytest.mark.parametrize(
    "shape,kind", ZERO_SIZE, ids=[f"{kind}-{'x'.join(map(str, s))}" for s, kind in ZERO_SIZE]
)
def test_zero_size_variables_train_as_with_keras_adam(shape, kind, mode):
    """A zero-size variable next to others: the step applies (Keras' Adam
    applies it), and the other variable moves as it would alone."""
    results = []
    for with_empty in (True, False):
        a = keras.Variable(np.ones((4, 3), "float32"), name="a")
        variables = [a]
        grads = [keras.ops.convert_to_tensor(np.full((4, 3), 0.25, "float32"))]
        if with_empty:
            variables.append(keras.Variable(np.zeros(shape, "float32"), name="empty"))
            grads.append(_zero_size_gradient(shape, kind))
        optimizer = LazyAdam(0.1)
        optimizer.build(variables)
        _apply(optimizer, grads, variables, _compiled(mode))
        assert int(to_numpy(optimizer.iterations)) == 1
        results.append(to_numpy(a))
    np.testing.assert_array_equal(results[0], results[1])
