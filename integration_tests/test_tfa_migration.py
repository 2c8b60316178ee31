"""Workflow 7: migrating from tfa.optimizers.LazyAdam.

The reference trajectories in tests/tfa_lazyadam_reference.npz were recorded
with tensorflow-addons 0.23 (TF 2.15): tfa's variable, m and v after every
step. Here tfa's state half-way through two runs becomes a tfa
`get_weights()` list, is loaded with `load_tfa_weights`, and LazyAdam
continues the recorded gradients to tfa's final state.
"""

import os

import keras
import numpy as np
import pytest

import keras_lazyadam
from conftest import ROOT
from conftest import sparse_gradient
from conftest import to_numpy
from keras_lazyadam import LazyAdam
from keras_lazyadam import load_tfa_weights

REFERENCE = os.path.join(ROOT, "tests", "tfa_lazyadam_reference.npz")
DATA = np.load(REFERENCE)
# Two runs with the same hyper-parameters: a (sparse steps) and e (sparse and
# dense steps, no zero rows in the dense ones), 12 steps of each.
CASES, STEPS, STOP = ("a_sparse_f32", "e_mixed_f32"), 12, 6

# What tfa's `optimizer.get_config()` returned (Keras 2.15 optimizer).
TFA_CONFIG = {
    "name": "LazyAdam",
    "learning_rate": 0.01,
    "decay": 0.0,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-07,
    "amsgrad": False,
    "is_legacy_optimizer": False,
}


def _case(name):
    return {k.split("/", 1)[1]: DATA[k] for k in DATA.files if k.startswith(name + "/")}


def _gradient(case, t):
    if case["kinds"][t] == 0:
        return sparse_gradient(case[f"idx_{t}"], case[f"val_{t}"], case["init"].shape)
    return keras.ops.convert_to_tensor(case[f"dense_{t}"])


def test_tfa_config_deserializes_into_lazyadam():
    optimizer = keras.optimizers.deserialize(
        {"class_name": "Addons>LazyAdam", "config": dict(TFA_CONFIG, decay=0.01)}
    )
    assert type(optimizer) is LazyAdam
    assert optimizer.beta_1 == 0.9 and optimizer.beta_2 == 0.999
    assert optimizer.epsilon == 1e-7 and optimizer.decay == 0.01
    assert optimizer.amsgrad is False
    assert float(to_numpy(optimizer.learning_rate)) == pytest.approx(0.01)
    # tfa's legacy `lr` key too, and a config that went through keras.optimizers.get.
    legacy = dict(TFA_CONFIG, lr=0.02)
    del legacy["learning_rate"]
    optimizer = keras.optimizers.get({"class_name": "Addons>LazyAdam", "config": legacy})
    assert type(optimizer) is LazyAdam
    assert float(to_numpy(optimizer.learning_rate)) == pytest.approx(0.02)


def test_tfa_state_loads_and_training_continues_as_tfa():
    cases = [_case(n) for n in CASES]
    for case in cases:
        assert float(case["lr"]) == TFA_CONFIG["learning_rate"]
        assert float(case["beta_1"]) == TFA_CONFIG["beta_1"]
    t = STOP - 1  # the last step tfa took before the export
    variables = [keras.Variable(case["var"][t], name=f"v{i}") for i, case in enumerate(cases)]
    # tfa's get_weights(): [iterations, a/m, e/m, a/v, e/v].
    tfa_weights = (
        [np.array(STOP, np.int64)]
        + [case["m"][t] for case in cases]
        + [case["v"][t] for case in cases]
    )
    optimizer = keras.optimizers.deserialize(
        {"class_name": "Addons>LazyAdam", "config": TFA_CONFIG}
    )
    assert load_tfa_weights(optimizer, tfa_weights, variables) is optimizer
    assert int(to_numpy(optimizer.iterations)) == STOP
    for case, variable in zip(cases, variables):
        np.testing.assert_array_equal(to_numpy(optimizer.get_slot(variable, "m")), case["m"][t])
        np.testing.assert_array_equal(to_numpy(optimizer.get_slot(variable, "v")), case["v"][t])

    for step in range(STOP, STEPS):
        optimizer.apply([_gradient(c, step) for c in cases], variables)
        for case, variable in zip(cases, variables):
            for got, key in (
                (variable, "var"),
                (optimizer.get_slot(variable, "m"), "m"),
                (optimizer.get_slot(variable, "v"), "v"),
            ):
                np.testing.assert_allclose(
                    to_numpy(got),
                    case[key][step],
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"step {step}, {key}",
                )
    assert int(to_numpy(optimizer.iterations)) == STEPS


def test_amsgrad_lists_put_vhat_in_place():
    a = keras.Variable(np.zeros((4, 2), "float32"), name="a")
    b = keras.Variable(np.zeros((3,), "float32"), name="b")
    rng = np.random.default_rng(0)
    shapes = [(4, 2), (3,)] * 3
    arrays = [rng.random(s).astype("float32") for s in shapes]
    optimizer = LazyAdam(amsgrad=True)
    load_tfa_weights(optimizer, [np.int64(42)] + arrays, [a, b])
    assert int(to_numpy(optimizer.iterations)) == 42
    for s, slot in enumerate(("m", "v", "vhat")):
        for i, var in enumerate((a, b)):
            np.testing.assert_array_equal(
                to_numpy(optimizer.get_slot(var, slot)), arrays[2 * s + i]
            )


def test_mismatched_lists_raise_before_writing_anything():
    a = keras.Variable(np.ones((4, 2), "float32"), name="a")
    b = keras.Variable(np.ones((3,), "float32"), name="b")
    optimizer = LazyAdam()
    optimizer.build([a, b])
    before = [to_numpy(v) for v in optimizer.variables]
    good = [np.zeros((4, 2), "float32"), np.zeros((3,), "float32")]
    with pytest.raises(ValueError, match="amsgrad=True"):
        load_tfa_weights(optimizer, [np.int64(3)] + good * 3, [a, b])
    with pytest.raises(ValueError, match="shape"):
        # Variables in the wrong order.
        load_tfa_weights(optimizer, [np.int64(3)] + good[::-1] * 2, [a, b])
    for x, y in zip(before, [to_numpy(v) for v in optimizer.variables]):
        np.testing.assert_array_equal(x, y)


# name -> (the list, given the right arrays [a's, b's]; the error)
BAD_ARRAYS = {
    "strings": (
        lambda good: [np.int64(3), good[0], np.array(["x", "y", "z"]), good[0], good[1]],
        "Array 2 of tfa's get_weights\\(\\) must hold real numbers.*<U1",
    ),
    "object-none": (
        lambda good: [np.int64(3), good[0], good[1], good[0], np.array([None] * 3)],
        "Array 4 .* must hold real numbers.*object.*None",
    ),
    "fractional-iterations": (
        lambda good: [np.float64(2.5)] + good * 2,
        "iteration count, a scalar integer >= 0.*2.5",
    ),
    "negative-iterations": (
        lambda good: [np.int64(-1)] + good * 2,
        "iteration count, a scalar integer >= 0.*-1",
    ),
}


@pytest.mark.parametrize("bad", sorted(BAD_ARRAYS))
def test_non_numeric_arrays_raise_before_writing_anything(bad):
    """Every array is checked and converted before the first write: no
    iteration count or earlier slot is written by a call that raises, and
    an object array of None is refused (not NaN in the slots)."""
    a = keras.Variable(np.ones((4, 2), "float32"), name="a")
    b = keras.Variable(np.ones((3,), "float32"), name="b")
    optimizer = LazyAdam()
    optimizer.build([a, b])
    before = [to_numpy(v) for v in optimizer.variables]
    good = [np.full((4, 2), 0.5, "float32"), np.full((3,), 0.5, "float32")]
    make, match = BAD_ARRAYS[bad]
    with pytest.raises(ValueError, match=match):
        load_tfa_weights(optimizer, make(good), [a, b])
    for x, y in zip(before, [to_numpy(v) for v in optimizer.variables]):
        np.testing.assert_array_equal(x, y)


def test_object_arrays_of_numbers_load():
    a = keras.Variable(np.ones((2,), "float32"), name="a")
    optimizer = LazyAdam()
    load_tfa_weights(optimizer, [np.array(4, object), np.array([0.5, 1], object), np.ones(2)], [a])
    assert int(to_numpy(optimizer.iterations)) == 4
    np.testing.assert_array_equal(to_numpy(optimizer.get_slot(a, "m")), [0.5, 1.0])


def test_loads_with_gradient_accumulation():
    """`iterations` counts updates there (Keras derives it from the count of
    calls): the loaded count is tfa's, and the next update is a whole window
    later."""
    a = keras.Variable(np.ones((4, 2), "float32"), name="a")
    optimizer = LazyAdam(0.1, gradient_accumulation_steps=3)
    m, v = np.full((4, 2), 0.5, "float32"), np.full((4, 2), 0.25, "float32")
    load_tfa_weights(optimizer, [np.int64(7), m, v], [a])
    assert int(to_numpy(optimizer.iterations)) == 7
    np.testing.assert_array_equal(to_numpy(optimizer.get_slot(a, "m")), m)
    for _ in range(3):
        optimizer.apply([keras.ops.ones((4, 2))], [a])
    assert int(to_numpy(optimizer.iterations)) == 8


def test_documented_and_exported():
    assert "load_tfa_weights" in keras_lazyadam.__all__
    assert "get_weights()" in load_tfa_weights.__doc__
    page = os.path.join(ROOT, "docs", "migrating-from-tfa.md")
    with open(page) as f:
        text = f.read()
    assert "load_tfa_weights" in text and "Addons>LazyAdam" in text
