"""LazyAdam inside model.fit / train_on_batch: lazy with stock and drop-in layers."""

import re

import keras
import numpy as np
import pytest

from conftest import BACKEND
from conftest import TORCH_CUDA
from conftest import numpy
from keras_lazyadam import LazyAdam
from keras_lazyadam import LazyEmbedding

ROWS, DIM, IDS = 64, 4, 3

LAYERS = {"stock": keras.layers.Embedding, "lazy": LazyEmbedding}


def _model(layer, seed=0):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((IDS,), dtype="int32")
    x = LAYERS[layer](ROWS, DIM, name="table")(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(8, activation="relu")(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(ids, out)


def _batch(rows, seed):
    rng = np.random.default_rng(seed)
    ids = rng.choice(rows, size=(16, IDS)).astype("int32")
    return ids, rng.integers(0, 2, size=(16, 1)).astype("float32")


def _table_state(model):
    table = model.get_layer("table").embeddings
    opt = model.optimizer
    return [numpy(table), numpy(opt.get_slot(table, "m")), numpy(opt.get_slot(table, "v"))]


# torch's jit_compile means torch.compile: not part of this product's claims.
JIT = [False, True] if BACKEND in ("tensorflow", "jax") else [False]
KWARGS = {
    "plain": {},
    "weight_decay": {"weight_decay": 0.05},
    "global_clipnorm": {"global_clipnorm": 0.01},
    "clipnorm": {"clipnorm": 0.01},
    "amsgrad": {"amsgrad": True},
    "ema": {"use_ema": True},
    "loss_scale_factor": {"loss_scale_factor": 64.0},
}


@pytest.mark.parametrize("jit_compile", JIT, ids=lambda j: f"jit={j}")
@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("option", sorted(KWARGS))
def test_fit_leaves_absent_rows_untouched(layer, option, jit_compile):
    model = _model(layer)
    model.compile(
        optimizer=LazyAdam(0.05, **KWARGS[option]),
        loss="binary_crossentropy",
        jit_compile=jit_compile,
    )
    first, second = np.arange(0, 32), np.arange(32, ROWS)
    model.train_on_batch(*_batch(first, 1))
    before = _table_state(model)
    model.train_on_batch(*_batch(second, 2))
    after = _table_state(model)
    touched = np.unique(_batch(second, 2)[0])
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a[first], b[first])
        assert np.all(np.any(a[touched] != b[touched], axis=1))


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_gradient_accumulation_updates_only_accumulated_rows(layer):
    model = _model(layer)
    model.compile(
        optimizer=LazyAdam(0.05, gradient_accumulation_steps=2),
        loss="binary_crossentropy",
    )
    model.train_on_batch(*_batch(np.arange(0, 16), 1))
    model.train_on_batch(*_batch(np.arange(16, 32), 2))  # applies both
    before = _table_state(model)
    touched_1, touched_2 = _batch(np.arange(32, 48), 3)[0], _batch(np.arange(48, 64), 4)[0]
    model.train_on_batch(*_batch(np.arange(32, 48), 3))
    mid = _table_state(model)
    for b, a in zip(before, mid):
        np.testing.assert_array_equal(a, b)  # accumulating only
    model.train_on_batch(*_batch(np.arange(48, 64), 4))
    after = _table_state(model)
    touched = np.union1d(touched_1, touched_2)
    untouched = np.setdiff1d(np.arange(ROWS), touched)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a[untouched], b[untouched])
        assert np.all(np.any(a[touched] != b[touched], axis=1))


def _assert_layers_train_alike(make_optimizer, seed, epochs, **compile_kwargs):
    """Fits the stock and the drop-in layer alike; their weights must agree."""
    x, y = _batch(np.arange(ROWS), seed)
    weights = {}
    for name in LAYERS:
        model = _model(name)
        model.compile(optimizer=make_optimizer(), loss="binary_crossentropy", **compile_kwargs)
        model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, shuffle=False)
        weights[name] = [numpy(w) for w in model.weights]
    for a, b in zip(weights["stock"], weights["lazy"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_matches_between_layers():
    """The drop-in layer trains exactly like the stock one."""
    _assert_layers_train_alike(lambda: LazyAdam(0.01), seed=5, epochs=2)


class _RecordingLazyAdam(LazyAdam):
    def update_step(self, gradient, variable, learning_rate):
        self.kinds[tuple(variable.shape)] = type(gradient).__name__
        return super().update_step(gradient, variable, learning_rate)


SPARSE_PATH = {
    ("tensorflow", "stock"): "SparseRows",
    ("tensorflow", "lazy"): "SparseRows",
    ("jax", "lazy"): "SparseRows",
    ("torch", "lazy"): "SparseRows",
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_table_gradient_kind(layer):
    """Which layers give the optimizer a sparse table gradient, per backend."""
    model = _model(layer)
    opt = _RecordingLazyAdam(0.01, name="recording")
    opt.kinds = {}
    model.compile(optimizer=opt, loss="binary_crossentropy")
    for seed in (1, 2):  # torch: the optimizer is built during the first step
        model.train_on_batch(*_batch(np.arange(ROWS), seed))
    kind = opt.kinds[(ROWS, DIM)]
    expected = SPARSE_PATH.get((BACKEND, layer), "dense")
    assert (kind == "SparseRows") == (expected == "SparseRows"), kind


class _DoublingLazyAdam(LazyAdam):
    def apply(self, grads, trainable_variables=None):
        grads = [None if g is None else g * 2 for g in grads]
        return super().apply(grads, trainable_variables)


@pytest.mark.skipif(BACKEND != "jax", reason="the recorded-rows path of LazyEmbedding is JAX's")
@pytest.mark.parametrize("jit_compile", [False, True], ids=lambda j: f"jit={j}")
def test_transformed_table_gradient_is_not_replaced_by_recorded_rows(jit_compile):
    """LazyEmbedding's recorded rows stand in only for the untouched gradient."""
    _assert_layers_train_alike(
        lambda: _DoublingLazyAdam(0.01), seed=6, epochs=1, jit_compile=jit_compile
    )


class _SlicedTable(keras.layers.Layer):
    """A table read as a slice of consecutive rows (keras-hub's position
    embedding): a weight named `embeddings` that is no Embedding's."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(ROWS, DIM), name="embeddings")

    def call(self, ids):
        return keras.ops.cast(ids, "float32")[..., None] * self.table[: ids.shape[-1]]


def _tied_model():
    if not hasattr(keras.layers, "ReversibleEmbedding"):
        pytest.skip(f"keras {keras.__version__} has no keras.layers.ReversibleEmbedding")
    ids = keras.Input((IDS,), dtype="int32")
    table = keras.layers.ReversibleEmbedding(ROWS, DIM, name="tied")
    return keras.Model(ids, table(table(ids), reverse=True))


_DENSE_TABLE_CASES = {
    # case: (model, warns on JAX/torch, warns on TF, text)
    "stock": (lambda: _model("stock"), True, False, r"'table/embeddings'.*use_lazy_embedding"),
    "stock_below_cost": (lambda: _model("stock"), False, False, None),
    "lazy": (lambda: _model("lazy"), False, False, None),
    "lazy_regularized": (
        lambda: _regularized_model(),
        True,
        True,
        r"LazyEmbedding`'s, but its `embeddings_regularizer` gives every row",
    ),
    "sliced_table": (
        lambda: keras.Sequential([keras.Input((IDS,), dtype="int32"), _SlicedTable()]),
        False,
        False,
        None,
    ),
    "tied_projection": (_tied_model, False, False, None),
}


def _regularized_model():
    keras.utils.set_random_seed(0)
    ids = keras.Input((IDS,), dtype="int32")
    x = LazyEmbedding(ROWS, DIM, embeddings_regularizer="l2", name="table")(ids)
    return keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(x)))


@pytest.mark.parametrize("case", sorted(_DENSE_TABLE_CASES))
def test_dense_table_warning_is_right_or_silent(case, monkeypatch):
    """Once per table, where its fix applies and the table is past the cost
    threshold (lowered here to this test's table), pointing at this file."""
    import warnings

    from keras_lazyadam import dense_tables

    build, warns, warns_tf, text = _DENSE_TABLE_CASES[case]
    below = case.endswith("below_cost")
    monkeypatch.setattr(dense_tables, "DENSE_COST_ELEMENTS", ROWS * DIM + (1 if below else 0))
    model = build()
    model.compile(optimizer=LazyAdam(0.01), loss="mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in (1, 2):
            ids, _ = _batch(np.arange(ROWS), seed)
            model.train_on_batch(ids, np.zeros(numpy(model(ids)).shape, "float32"))
    said = [w for w in caught if "dense gradient for the embedding table" in str(w.message)]
    if not (warns_tf if BACKEND == "tensorflow" else warns):
        assert not said, [str(w.message) for w in said]
        return
    assert len(said) == 1, [str(w.message) for w in said]  # once per table
    assert re.search(text, str(said[0].message)), str(said[0].message)
    assert said[0].filename == __file__  # the train_on_batch call above


@pytest.mark.parametrize("name, warns", [("embeddings", True), ("kernel", False)])
def test_dense_table_warning_in_a_custom_loop_points_at_apply(name, warns, monkeypatch):
    """No model to ask: a variable named as an Embedding's table is taken for one."""
    import warnings

    from keras_lazyadam import dense_tables

    monkeypatch.setattr(dense_tables, "DENSE_COST_ELEMENTS", ROWS * DIM)
    table = keras.Variable(np.ones((ROWS, DIM), "float32"), name=name)
    gradient = np.zeros((ROWS, DIM), "float32")
    gradient[0] = 1.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LazyAdam(0.01).apply([keras.ops.convert_to_tensor(gradient)], [table])
    said = [w for w in caught if "dense gradient for the embedding table" in str(w.message)]
    assert len(said) == int(warns)
    if warns:
        assert said[0].filename == __file__


@pytest.mark.parametrize("row", [-1, -(ROWS + 1), ROWS], ids=["minus_one", "below", "past_end"])
def test_lazy_embedding_looks_up_any_id_as_the_stock_layer(row):
    """Out-of-range ids: whatever `keras.layers.Embedding` does on this backend
    (wrap -1, raise, or look up NaN), `LazyEmbedding` does too."""
    if TORCH_CUDA and row != -1:
        pytest.skip(
            "torch on CUDA: an out-of-range id fails a device-side assert in "
            "both layers' lookup, which no test can catch (the process's CUDA "
            "context is lost for every later test)"
        )
    stock, lazy = keras.layers.Embedding(ROWS, DIM), LazyEmbedding(ROWS, DIM)
    stock.build((None, 2))
    lazy.build((None, 2))
    lazy.set_weights(stock.get_weights())
    ids = np.array([[3, row]], "int32")
    try:
        expected = numpy(stock(ids))
    except Exception as error:  # noqa: BLE001 - the same error is expected
        with pytest.raises(type(error)):
            lazy(ids)
        return
    np.testing.assert_array_equal(numpy(lazy(ids)), expected)
