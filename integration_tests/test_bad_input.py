"""Workflow 8: bad input in a real run. Each case is a clear error naming the
problem, raised before anything is written (weights, slots and iterations are
as they were), or, where the backend cannot check inside compiled code (JAX
jit), the documented behaviour (docs/bad-input.md)."""

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
    """One optimizer step, eagerly or compiled (tf.function / jax.jit)."""
    if not compiled:
        return optimizer.apply(grads, variables)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda *g: optimizer.apply(list(g), variables))(*grads)
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
@pytest.mark.parametrize("row", [6, -1], ids=["too-large", "negative"])
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
