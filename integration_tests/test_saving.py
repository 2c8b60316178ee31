"""Workflow 2 (same backend): fit, save a `.keras` file, load it with no
`custom_objects`, continue; the continued run equals the uninterrupted one.

Bitwise on every backend: the same compiled (TF, JAX) or eager (torch) step
runs on the same inputs in the same order on CPU.
"""

import keras
import numpy as np
import pytest

from conftest import BATCH
from conftest import ROWS
from conftest import USED
from conftest import Embedding
from conftest import embedding_model
from conftest import make_data
from conftest import optimizer_state
from conftest import table_state
from conftest import to_numpy
from keras_lazyadam import LazyAdam

CASES = {
    # (layer, optimizer kwargs)
    "drop-in-layer": (Embedding, {}),
    "stock-layer-amsgrad": (keras.layers.Embedding, {"amsgrad": True}),
    # issue 10: the row_step slot is saved and restored with the others
    "drop-in-layer-catch_up": (Embedding, {"step_mode": "catch_up"}),
    "stock-layer-per_row-amsgrad": (
        keras.layers.Embedding,
        {"step_mode": "per_row", "amsgrad": True},
    ),
}


def _compiled(layer, kwargs):
    model = embedding_model(layer)
    model.compile(optimizer=LazyAdam(0.02, **kwargs), loss="mse")
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_save_load_continue_equals_uninterrupted(case, tmp_path):
    layer, kwargs = CASES[case]
    x, y = make_data(8 * BATCH)
    fit = dict(batch_size=BATCH, shuffle=False, verbose=0)

    straight = _compiled(layer, kwargs)
    straight.fit(x, y, epochs=4, **fit)

    first = _compiled(layer, kwargs)
    first.fit(x, y, epochs=2, **fit)
    path = tmp_path / "model.keras"
    first.save(path)
    saved_state = optimizer_state(first.optimizer)

    loaded = keras.models.load_model(path)  # no custom_objects
    assert type(loaded.optimizer) is LazyAdam
    assert loaded.optimizer.get_config() == first.optimizer.get_config()
    slots = ("m", "v", "vhat") if kwargs.get("amsgrad") else ("m", "v")
    if kwargs.get("step_mode", "global") != "global":
        slots += ("row_step",)
    assert [v.path for v in loaded.optimizer.variables] == [
        v.path for v in first.optimizer.variables
    ]
    for a, b in zip(optimizer_state(loaded.optimizer), saved_state):
        np.testing.assert_array_equal(a, b)
    assert int(to_numpy(loaded.optimizer.iterations)) == 2 * 8
    for a, b in zip(table_state(loaded, slots), table_state(first, slots)):
        np.testing.assert_array_equal(a, b)

    loaded.fit(x, y, epochs=2, **fit)
    for a, b in zip(loaded.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer_state(loaded.optimizer), optimizer_state(straight.optimizer)):
        np.testing.assert_array_equal(a, b)
    # Still lazy after the reload: rows the data never uses are untouched.
    unused = np.arange(USED, ROWS)
    init = embedding_model(layer)
    np.testing.assert_array_equal(
        table_state(loaded, slots)[0][unused], to_numpy(init.get_layer("table").embeddings)[unused]
    )
    for slot in table_state(loaded, slots)[1:]:
        assert not slot[unused].any()
