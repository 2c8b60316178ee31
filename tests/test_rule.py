"""The update rule (`keras_lazyadam.rule`) and the fused kernel fed from it."""

import keras
import numpy as np
import pytest

from conftest import BACKEND
from conftest import hyperparameters
from conftest import numpy
from keras_lazyadam import backend
from keras_lazyadam.rule import State
from keras_lazyadam.rule import adam_update

SHAPE = (8, 3)


def _arrays(seed):
    rng = np.random.default_rng(seed)
    var, m, g = (rng.normal(size=SHAPE).astype("float32") for _ in range(3))
    v = rng.uniform(0.0, 2.0, size=SHAPE).astype("float32")
    return var, m, v, v * 1.5, g


def test_masked_rows_come_out_bit_for_bit():
    var, m, v, vhat, g = _arrays(0)
    g[[1, 5]] = 0.0
    touched = np.any(g != 0, axis=1, keepdims=True)
    state = State(*(keras.ops.convert_to_tensor(x) for x in (var, m, v, vhat)))
    new = adam_update(
        state, keras.ops.convert_to_tensor(g), hyperparameters(0.1, 0.1, True), touched
    )
    for before, after in zip((var, m, v, vhat), new):
        np.testing.assert_array_equal(numpy(after)[[1, 5]], before[[1, 5]])
    for before, after in zip((var, m, v), new):  # (vhat = 1.5 v stays)
        assert np.all(numpy(after)[[0, 2, 3, 4, 6, 7]] != before[[0, 2, 3, 4, 6, 7]])


@pytest.mark.parametrize("dense", [False, True], ids=["sparse_form", "dense_form"])
def test_rule_is_adam(dense):
    var, m, v, _, g = _arrays(1)
    hyper = hyperparameters(0.01)
    state = State(*(keras.ops.convert_to_tensor(x) for x in (var, m, v)))
    new = adam_update(state, keras.ops.convert_to_tensor(g), hyper, True if dense else None)
    m1, v1 = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
    alpha = 0.01 * np.sqrt(1 - 0.999**3) / (1 - 0.9**3)
    expected = var - alpha * m1 / (np.sqrt(v1) + 1e-7)
    for got, want in ((new.m, m1), (new.v, v1), (new.var, expected)):
        np.testing.assert_allclose(numpy(got), want, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(BACKEND != "torch", reason="the fused dense kernel is torch's")
@pytest.mark.parametrize("lr", [0.0, 1e-3, 0.1])
@pytest.mark.parametrize("weight_decay", [None, 0.1], ids=["no_decay", "decay"])
def test_fused_kernel_agrees_with_the_rule(lr, weight_decay):
    var, m, v, _, g = _arrays(2)
    hyper = hyperparameters(lr, weight_decay)
    arrays = (var, m, v, None)
    fused = State(*(None if x is None else keras.Variable(x) for x in arrays))
    assert backend.fused_dense_update(fused, keras.ops.convert_to_tensor(g), hyper)
    state = State(*(None if x is None else keras.ops.convert_to_tensor(x) for x in arrays))
    rule = adam_update(state, keras.ops.convert_to_tensor(g), hyper, True)
    for a, b in zip(fused, rule):
        if a is not None:
            np.testing.assert_allclose(numpy(a), numpy(b), rtol=2e-6, atol=1e-7)
    if lr == 0:
        np.testing.assert_array_equal(numpy(fused.var), var)


def test_backend_modules_define_only_hooks():
    """A backend module holds what it does differently, under hook names."""
    from keras_lazyadam.backend import _impl
    from keras_lazyadam.backend import defaults

    hooks = {n for n in vars(defaults) if not n.startswith("_")} - {"contextlib", "ops"}
    public = {
        name
        for name, value in vars(_impl).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == _impl.__name__
    }
    assert public <= hooks, public - hooks
    for name in hooks:
        expected = getattr(_impl, name, getattr(defaults, name))
        assert getattr(backend, name) is expected, name


@pytest.mark.skipif(BACKEND != "torch", reason="the fused dense kernel is torch's")
def test_fused_kernel_declines_what_it_does_not_do_as_the_rule():
    """amsgrad (its max drops NaN) and float64 take the generic rule."""
    g = keras.ops.convert_to_tensor(np.ones(SHAPE, "float32"))
    state = State(*(keras.Variable(np.ones(SHAPE, "float32")) for _ in range(4)))
    assert not backend.fused_dense_update(state, g, hyperparameters(0.1, amsgrad=True))
    state64 = State(*(keras.Variable(np.ones(SHAPE), dtype="float64") for _ in range(3)))
    assert not backend.fused_dense_update(
        state64, keras.ops.cast(g, "float64"), hyperparameters(0.1)
    )


@pytest.mark.skipif(BACKEND != "torch", reason="the grouped fused dense kernel is torch's")
def test_grouped_fused_updates_equal_one_at_a_time(monkeypatch):
    """One multi-tensor kernel for a step's dense variables gives each of
    them what it gets alone, bit for bit (weight decay on some only)."""
    from keras_lazyadam import LazyAdam
    from keras_lazyadam.backend import torch as torch_backend

    calls = []
    kernel = torch_backend.functional_adam
    monkeypatch.setattr(
        torch_backend,
        "functional_adam",
        lambda p, *a, **k: calls.append(len(p)) or kernel(p, *a, **k),
    )

    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    inits = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(3)]
    together = [keras.Variable(x, name=f"v{i}") for i, x in enumerate(inits)]
    alone = [keras.Variable(x, name=f"v{i}") for i, x in enumerate(inits)]
    kwargs = {"weight_decay": 0.1}
    grouped = LazyAdam(0.1, **kwargs)
    grouped.exclude_from_weight_decay(var_names=["v1"])
    singles = [LazyAdam(0.1, **kwargs) for _ in alone]
    singles[1].exclude_from_weight_decay(var_names=["v1"])
    for step in grads:
        calls.clear()
        grouped.apply([keras.ops.convert_to_tensor(g) for g in step], together)
        assert sorted(calls) == [1, 2]  # with and without weight decay
        for optimizer, g, v in zip(singles, step, alone):
            optimizer.apply([keras.ops.convert_to_tensor(g)], [v])
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(numpy(a), numpy(b))


@pytest.mark.skipif(BACKEND != "torch", reason="the fused row update is torch's")
@pytest.mark.parametrize("weight_decay", [None, 0.1], ids=["no_decay", "decay"])
@pytest.mark.parametrize("every_row", [False, True], ids=["some_rows", "every_row"])
def test_fused_row_update_is_the_rule_on_its_rows_and_leaves_the_others(weight_decay, every_row):
    """Every row (as coalescing lists them: ascending) is updated in place."""
    import torch

    var, m, v, _, g = _arrays(3)
    rows = np.arange(SHAPE[0]) if every_row else np.array([6, 0, 3])
    hyper = hyperparameters(0.1, weight_decay)
    fused = State(*(keras.Variable(x) for x in (var, m, v)))
    index = torch.as_tensor(rows)
    assert backend.fused_row_update(fused, index, keras.ops.convert_to_tensor(g[rows]), hyper)
    gathered = State(*(keras.ops.convert_to_tensor(x[rows]) for x in (var, m, v)))
    rule = adam_update(gathered, keras.ops.convert_to_tensor(g[rows]), hyper)
    others = np.setdiff1d(np.arange(SHAPE[0]), rows)
    for after, want, before in zip(fused, rule, (var, m, v)):
        np.testing.assert_allclose(numpy(after)[rows], numpy(want), rtol=2e-6, atol=1e-7)
        np.testing.assert_array_equal(numpy(after)[others], before[others])


@pytest.mark.skipif(BACKEND != "torch", reason="torch picks a dense gradient's rows eagerly")
@pytest.mark.parametrize("small", [True, False], ids=["small_table_test", "large_table_test"])
def test_nonzero_rows_of_a_dense_gradient(small, monkeypatch):
    """Rows whose entries cancel, NaN rows and -0.0 rows: the same rows as
    any(g != 0) by either test."""
    from keras_lazyadam.backend import torch as torch_backend

    monkeypatch.setattr(torch_backend, "_SMALL_VALUES", 10**9 if small else 0)
    g = np.zeros((6, 2), "float32")
    g[1] = [1.0, -1.0]  # sums to zero
    g[2, 0] = np.nan
    g[3] = -0.0  # a zero
    g[5, 1] = 1e-30
    rows, values = backend.nonzero_rows(keras.ops.convert_to_tensor(g))
    assert numpy(rows).tolist() == [1, 2, 5]
    np.testing.assert_array_equal(numpy(values), g[[1, 2, 5]])
    assert backend.nonzero_rows(keras.ops.convert_to_tensor(np.ones((3, 2), "float32"))) is True
