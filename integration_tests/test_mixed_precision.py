"""Workflow 5: mixed precision. Under `mixed_float16` (Keras wraps the
optimizer in a `LossScaleOptimizer`) and `mixed_bfloat16`, the embedding model
trains, stays lazy, and a step whose scaled gradient overflows is skipped
without changing any weight or slot."""

import keras
import numpy as np
import pytest

from conftest import BATCH
from conftest import ROWS
from conftest import USED
from conftest import Embedding
from conftest import embedding_model
from conftest import inner_optimizer
from conftest import make_data
from conftest import optimizer_state
from conftest import table_of
from conftest import table_state
from conftest import to_numpy
from keras_lazyadam import LazyAdam

# A target so large that (loss scale) * d(loss)/d(output) overflows the
# policy's compute dtype: float16 tops out at 65504, bfloat16 at ~3.4e38.
HUGE = {"mixed_float16": 1e4, "mixed_bfloat16": 1e37}


LAYERS = {
    "stock-layer": keras.layers.Embedding,
    "drop-in-layer": Embedding,
}


@pytest.mark.parametrize("layer", list(LAYERS.values()), ids=list(LAYERS))
@pytest.mark.parametrize("policy", sorted(HUGE))
def test_mixed_precision_trains_lazily_and_skips_overflow(policy, layer):
    keras.config.set_dtype_policy(policy)
    model = embedding_model(layer)
    assert model.get_layer("table").compute_dtype == policy.split("_")[1]
    assert model.get_layer("table").embeddings.dtype == "float32"
    optimizer = LazyAdam(0.02)
    if policy == "mixed_bfloat16":
        # Not wrapped automatically for bfloat16: do it by hand.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, LazyAdam)

    x, y = make_data(8 * BATCH)
    init = to_numpy(table_of(embedding_model()))  # never-trained copy
    first = model.evaluate(x, y, batch_size=BATCH, verbose=0)
    model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    last = model.evaluate(x, y, batch_size=BATCH, verbose=0)
    assert np.isfinite(last) and last < first
    lazy = inner_optimizer(model.optimizer)
    assert int(to_numpy(lazy.iterations)) == 24
    state = table_state(model)
    unused = np.arange(USED, ROWS)
    np.testing.assert_array_equal(state[0][unused], init[unused])
    assert not state[1][unused].any() and not state[2][unused].any()
    assert np.isfinite(state[0]).all()

    # An overflowing step: skipped, nothing changes but the loss scale.
    weights = model.get_weights()
    slots = optimizer_state(lazy)
    scale = float(to_numpy(model.optimizer.dynamic_scale))
    xo, _ = make_data(BATCH, seed=5)
    model.train_on_batch(xo, np.full((BATCH, 1), HUGE[policy], "float32"))
    for a, b in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer_state(lazy), slots):
        np.testing.assert_array_equal(a, b)
    assert float(to_numpy(model.optimizer.dynamic_scale)) == scale / 2

    # And training goes on afterwards.
    model.train_on_batch(*make_data(BATCH, seed=6))
    assert int(to_numpy(lazy.iterations)) == 25
    assert all(np.isfinite(w).all() for w in model.get_weights())
