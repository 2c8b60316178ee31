"""A sparse gradient of a small table is applied to the whole table, masked by
its rows: the row update's values and slots (bit for bit where each op runs on
its own; XLA, fusing the two differently, may round a last bit differently,
and torch's row update of float32 runs in its fused Adam kernel), and rows not
listed keep theirs bit for bit. On torch LazyAdam never chooses the whole
update (every op costs a dispatch there); forced, it still agrees."""

import numpy as np
import pytest

from conftest import BACKEND
from conftest import Stepper
from conftest import numpy
from conftest import sparse_gradient
from keras_lazyadam import LazyAdam
from keras_lazyadam import backend
from keras_lazyadam import lazy_adam

ROWS, DIM = 12, 3

KWARGS = {
    "plain": {},
    "amsgrad": {"amsgrad": True},
    "weight_decay": {"weight_decay": 0.1},
    "clipnorm": {"clipnorm": 0.5},
}


def _steps():
    rng = np.random.default_rng(1)
    steps = []
    for t in range(6):
        ids = rng.integers(0, ROWS, size=7)
        values = rng.normal(size=(7, DIM))
        if t == 2:  # row 0 listed twice with opposite values: summed to zero
            ids[:2], values[1] = 0, -values[0]
        if t == 4:  # no rows at all: only the iteration count moves
            ids, values = ids[:0], values[:0]
        steps.append((ids, values))
    return steps


def _trajectory(monkeypatch, whole, kwargs, dtype, compiled):
    import keras

    with monkeypatch.context() as patch:
        patch.setattr(lazy_adam, "_prefers_whole", lambda variable, rows: whole)
        init = np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(dtype)
        variable = keras.Variable(init, dtype=dtype)
        step = Stepper(LazyAdam(0.1, **kwargs), variable, compiled)
        slots = ["m", "v"] + (["vhat"] if kwargs.get("amsgrad") else [])
        out = []
        for ids, values in _steps():
            step(sparse_gradient(ids, values.astype(dtype), (ROWS, DIM)))
            out.append([numpy(variable)] + [step.slot(s) for s in slots])
        return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("option", sorted(KWARGS))
def test_whole_update_is_the_row_update_bit_for_bit(option, dtype, compiled, monkeypatch):
    whole = _trajectory(monkeypatch, True, KWARGS[option], dtype, compiled)
    rows = _trajectory(monkeypatch, False, KWARGS[option], dtype, compiled)
    tol = dict(rtol=1e-14, atol=1e-16) if dtype == "float64" else dict(rtol=1e-6, atol=1e-9)
    listed = [{int(i) for i in ids} for ids, _ in _steps()]
    fused = BACKEND == "torch" and dtype == "float32" and option != "amsgrad"
    for t in range(len(whole)):
        absent = sorted(set(range(ROWS)) - listed[t])
        for k, (x, y) in enumerate(zip(whole[t], rows[t])):
            if fused:  # as the tfa reference trajectories are compared
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
            elif compiled:
                np.testing.assert_allclose(x, y, err_msg=f"step {t}", **tol)
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"step {t}")
            if t:  # rows absent from a step kept value and slots bit for bit
                np.testing.assert_array_equal(x[absent], whole[t - 1][k][absent])


@pytest.mark.parametrize(
    "rows, row_size, slots, whole",
    [
        (2, 32, 256, True),  # MovieLens' tiny tables: fewer rows than ids
        (21, 32, 256, True),
        (3439, 32, 256, False),
        (3439, 32, None, False),  # slots unknown while tracing (TF graphs)
        (100, 32, 100, True),  # every row in a slot: the row path does more
        (1_000_000, 64, 4096, False),
    ],
)
def test_the_cheaper_path_is_chosen_from_static_sizes(rows, row_size, slots, whole):
    assert backend.prefers_whole_update(rows, row_size, slots) is (whole and BACKEND != "torch")
