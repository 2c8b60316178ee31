"""`use_lazy_embedding` reaches every table: nested towers, subclassed models,
Embedding subclasses (keras-rs and keras-hub where they install)."""

import importlib.util
import os
import warnings

import keras
import numpy as np
import pytest

from conftest import numpy
from keras_lazyadam import LazyAdam
from keras_lazyadam import LazyEmbedding
from keras_lazyadam import use_lazy_embedding

ROWS, DIM, IDS, BATCH = 40, 4, 3, 8

HAS_KERAS_RS = importlib.util.find_spec("keras_rs") is not None
HAS_KERAS_HUB = importlib.util.find_spec("keras_hub") is not None
needs_keras_rs = pytest.mark.skipif(
    not HAS_KERAS_RS, reason="keras-rs is not installed (a test-only dependency)"
)
needs_keras_hub = pytest.mark.skipif(
    not HAS_KERAS_HUB, reason="keras-hub is not installed (a test-only dependency)"
)


@keras.saving.register_keras_serializable(package="test_use_lazy_embedding")
class ScaledEmbedding(keras.layers.Embedding):
    """A user's Embedding subclass: its own work around `super().call`."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


class Tower(keras.layers.Layer):
    """A subclassed layer holding a table."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.table = keras.layers.Embedding(ROWS, DIM, name="tower_table")

    def call(self, ids):
        return keras.ops.mean(self.table(ids), axis=1)


class TwoTower(keras.Model):
    """A subclassed model (the style of keras-rs' examples)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.user = keras.layers.Embedding(ROWS, DIM, name="user_table")
        self.item = Tower(name="item_tower")

    def call(self, ids):
        user = keras.ops.mean(self.user(ids), axis=1)
        return keras.ops.sum(user * self.item(ids), axis=1, keepdims=True)


def _ids():
    return keras.Input((IDS,), dtype="int32")


def _head(x):
    return keras.layers.Dense(1)(keras.layers.Flatten()(x))


def _functional():
    ids = _ids()
    return keras.Model(ids, _head(keras.layers.Embedding(ROWS, DIM, name="t")(ids)))


def _sequential():
    return keras.Sequential(
        [_ids(), keras.layers.Embedding(ROWS, DIM), keras.layers.Flatten(), keras.layers.Dense(1)]
    )


def _nested_functional():
    def tower(name):
        ids = _ids()
        x = keras.layers.Embedding(ROWS, DIM, name=f"{name}_table")(ids)
        return keras.Model(ids, keras.layers.GlobalAveragePooling1D()(x), name=name)

    ids = _ids()
    out = keras.layers.Dot(axes=1)([tower("user")(ids), tower("item")(ids)])
    return keras.Model(ids, out)


def _nested_sequential():
    tower = keras.Sequential([keras.layers.Embedding(ROWS, DIM), keras.layers.Flatten()])
    ids = _ids()
    return keras.Model(ids, keras.layers.Dense(1)(tower(ids)))


def _subclassed_layer_in_functional():
    ids = _ids()
    return keras.Model(ids, keras.layers.Dense(1)(Tower()(ids)))


def _subclassed_model():
    model = TwoTower()
    model(np.zeros((1, IDS), "int32"))
    return model


def _embedding_subclass():
    ids = _ids()
    return keras.Model(ids, _head(ScaledEmbedding(ROWS, DIM)(ids)))


MODELS = {
    "functional": (_functional, "copy"),
    "sequential": (_sequential, "copy"),
    "nested_functional": (_nested_functional, "copy"),
    "nested_sequential": (_nested_sequential, "copy"),
    "subclassed_layer": (_subclassed_layer_in_functional, "copy"),
    "subclassed_model": (_subclassed_model, "in_place"),
    "embedding_subclass": (_embedding_subclass, "copy"),
}


def _tables(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Embedding)]


def _batch(rows, seed):
    rng = np.random.default_rng(seed)
    ids = rng.choice(rows, size=(BATCH, IDS)).astype("int32")
    return ids, rng.normal(size=(BATCH, 1)).astype("float32")


def assert_trains_lazily(model, tables):
    """Two steps on disjoint rows with `skip_zero_rows=False`: a table whose
    gradient is a lookup's (sparse) leaves the first step's rows alone in
    the second; a dense gradient would move them (their `m` is non-zero)."""
    model.compile(optimizer=LazyAdam(0.05, skip_zero_rows=False), loss="mse")
    first, second = np.arange(0, ROWS // 2), np.arange(ROWS // 2, ROWS)
    model.train_on_batch(*_batch(first, 1))
    before = [numpy(t.embeddings) for t in tables]
    model.train_on_batch(*_batch(second, 2))
    for table, old in zip(tables, before):
        new = numpy(table.embeddings)
        np.testing.assert_array_equal(new[first], old[first], err_msg=table.name)
        assert np.any(new[second] != old[second]), table.name


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_table_is_converted_with_its_weights(kind):
    build, expected = MODELS[kind]
    keras.utils.set_random_seed(0)
    model = build()
    config = [keras.saving.serialize_keras_object(t) for t in _tables(model)]
    weights = [np.array(w) for w in model.get_weights()]
    ids = _batch(np.arange(ROWS), 0)[0]
    expected_out = numpy(model(ids))
    lazy = use_lazy_embedding(model)
    assert (lazy is model) == (expected == "in_place")
    tables = _tables(lazy)
    assert tables and all(isinstance(t, LazyEmbedding) for t in tables)
    for before, table in zip(config, tables):
        after = keras.saving.serialize_keras_object(table)
        if before["class_name"] == "Embedding":
            assert after["registered_name"] == "keras_lazyadam>LazyEmbedding"
        else:  # a subclass keeps its class and is saved as it was
            assert after == before
    for a, b in zip(weights, lazy.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(numpy(lazy(ids)), expected_out, rtol=1e-6)
    assert [w.name for w in lazy.weights] == [w.name for w in model.weights]
    assert [t.name for t in tables] == [t.name for t in _tables(model)]
    assert_trains_lazily(lazy, tables)


def test_copied_model_leaves_the_original_stock():
    model = _nested_functional()
    use_lazy_embedding(model)
    assert all(type(t) is keras.layers.Embedding for t in _tables(model))


@pytest.mark.parametrize("kind", ["nested_functional", "embedding_subclass"])
def test_converted_model_saves_and_loads(kind, tmp_path):
    model = use_lazy_embedding(MODELS[kind][0]())
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    kinds = {type(t).__name__ for t in _tables(loaded)}
    assert kinds == ({"LazyEmbedding"} if kind == "nested_functional" else {"ScaledEmbedding"})


def test_in_place_converts_a_copyable_model_itself():
    model = _nested_functional()
    assert use_lazy_embedding(model, in_place=True) is model
    assert all(isinstance(t, LazyEmbedding) for t in _tables(model))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: use_lazy_embedding(keras.layers.Embedding(ROWS, DIM)), "`model` must be a keras"),
        (lambda: use_lazy_embedding(_functional(), in_place="yes"), "`in_place` must be None"),
        (
            lambda: use_lazy_embedding(_subclassed_model(), in_place=False),
            "can copy only a plain Functional or Sequential model.*in_place=True",
        ),
    ],
    ids=["not_a_model", "bad_in_place", "copy_of_subclassed"],
)
def test_refusals_are_in_its_own_words(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_model_without_tables_is_not_a_silent_no_op():
    ids = keras.Input((IDS,))
    model = keras.Model(ids, keras.layers.Dense(1)(ids))
    with pytest.warns(UserWarning, match="found no keras.layers.Embedding"):
        use_lazy_embedding(model)


@needs_keras_rs
def test_keras_rs_distributed_embedding_tables_are_converted():
    import keras_rs

    keras.utils.set_random_seed(0)
    configs = {
        name: keras_rs.layers.FeatureConfig(
            name=name,
            table=keras_rs.layers.TableConfig(
                name=f"{name}_table", vocabulary_size=ROWS, embedding_dim=DIM
            ),
            input_shape=(BATCH, IDS),
            output_shape=(BATCH, DIM),
        )
        for name in ("user", "item")
    }

    class Ranking(keras.Model):
        def __init__(self):
            super().__init__()
            self.embedding = keras_rs.layers.DistributedEmbedding(configs)
            self.cross = keras_rs.layers.FeatureCross()
            self.out = keras.layers.Dense(1)

        def call(self, ids):
            x = self.embedding({"user": ids, "item": ids})
            x = keras.ops.concatenate([x["user"], x["item"]], axis=1)
            return self.out(self.cross(x))

    model = Ranking()
    model(_batch(np.arange(ROWS), 0)[0])
    tables = _tables(model)
    assert len(tables) == 2 and not any(isinstance(t, LazyEmbedding) for t in tables)
    assert use_lazy_embedding(model) is model
    assert all(isinstance(t, LazyEmbedding) for t in tables)
    assert all(isinstance(t, keras_rs.layers.EmbedReduce) for t in tables)
    assert_trains_lazily(model, tables)


def _gpt2_backbone():
    import keras_hub

    keras.utils.set_random_seed(0)
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=ROWS,
        num_layers=1,
        num_heads=2,
        hidden_dim=DIM * 2,
        intermediate_dim=DIM * 4,
        max_sequence_length=IDS,
    )


@needs_keras_hub
def test_keras_hub_token_table_is_converted_and_tied_projection_said():
    backbone = _gpt2_backbone()
    tokens = backbone.token_embedding
    with pytest.warns(UserWarning, match="tied output projections"):
        assert use_lazy_embedding(backbone) is backbone
    assert isinstance(tokens, LazyEmbedding)
    assert type(tokens).__name__ == "ReversibleEmbedding"
    position = backbone.get_layer("position_embedding")
    assert not isinstance(position, LazyEmbedding)  # a slice, not a lookup
    ids = keras.Input((IDS,), dtype="int32")
    hidden = backbone({"token_ids": ids, "padding_mask": keras.ops.ones_like(ids)})
    # Forward lookups only: the table's gradient is a lookup's.
    assert_trains_lazily(keras.Model(ids, _head(hidden)), [tokens])


@needs_keras_hub
def test_keras_hub_tied_projection_trains_with_a_dense_gradient():
    backbone = _gpt2_backbone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        use_lazy_embedding(backbone)
    ids = keras.Input((IDS,), dtype="int32")
    hidden = backbone({"token_ids": ids, "padding_mask": keras.ops.ones_like(ids)})
    logits = backbone.token_embedding(hidden, reverse=True)  # GPT-2's LM head
    model = keras.Model(ids, logits)
    model.compile(optimizer=LazyAdam(0.05), loss="sparse_categorical_crossentropy")
    table = backbone.token_embedding.embeddings
    before = numpy(table)
    ids_batch = _batch(np.arange(ROWS // 2), 1)[0]
    model.train_on_batch(ids_batch, ids_batch)
    # Rows never looked up moved: the projection's gradient reaches them.
    moved = np.any(numpy(table) != before, axis=1)
    assert moved[ROWS // 2 :].mean() > 0.5
