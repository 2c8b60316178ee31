"""A model that LazyAdam trained can be compiled again with any other
optimizer, loss scaling included, and trains on every backend. (On torch,
`LazyEmbedding` hands LazyAdam sparse COO gradients, which loss scaling's
finiteness check cannot read: the table must go back to dense gradients.)"""

import keras
import numpy as np
import pytest

from conftest import BACKEND
from conftest import BATCH
from conftest import USED
from conftest import embedding_model
from conftest import make_data
from conftest import table_of
from conftest import to_numpy
from keras_lazyadam import LazyAdam

OTHERS = {
    "adam": lambda: keras.optimizers.Adam(0.01),
    "sgd": lambda: keras.optimizers.SGD(0.5),
    "loss-scaled-adam": lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01)),
}


def assert_torch_gradient_layout(model, layout):
    """torch: the table's last gradient has `layout` ("sparse_coo" or
    "strided"); other backends have no such gradient to look at."""
    if BACKEND == "torch":
        import torch

        grad = table_of(model).value.grad
        assert grad is not None and grad.layout == getattr(torch, layout)


@pytest.mark.parametrize("other", list(OTHERS.values()), ids=list(OTHERS))
def test_another_optimizer_trains_after_lazyadam(other):
    model = embedding_model()
    x, y = make_data(4 * BATCH)
    lazy = LazyAdam(0.01)
    model.compile(optimizer=lazy, loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert_torch_gradient_layout(model, "sparse_coo")  # the fast path

    model.compile(optimizer=other(), loss="mse")
    before = to_numpy(table_of(model)).copy()
    history = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    after = to_numpy(table_of(model))
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(after[:USED], before[:USED])  # the table trained
    assert_torch_gradient_layout(model, "strided")

    # And back to LazyAdam: sparse again, and the old instance trains on.
    model.compile(optimizer=lazy, loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert int(to_numpy(lazy.iterations)) == 8
    assert_torch_gradient_layout(model, "sparse_coo")
