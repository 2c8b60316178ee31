"""LazyAdam reproduces trajectories recorded from tfa.optimizers.LazyAdam.

`tfa_lazyadam_reference.npz` was recorded with tensorflow-addons 0.23 on
TF 2.15 (see its README in the project's shared reference folder). Each case
is replayed with this backend's native sparse gradients, eagerly and compiled.
"""

import json

import keras
import numpy as np
import pytest

from conftest import REFERENCE
from conftest import Stepper
from conftest import dense_gradient
from conftest import numpy
from conftest import sparse_gradient
from keras_lazyadam import LazyAdam

DATA = np.load(REFERENCE, allow_pickle=False)
CASES = json.loads(str(DATA["meta/cases"]))


def _case(name):
    return {k.split("/", 1)[1]: DATA[k] for k in DATA.files if k.startswith(name + "/")}


def _optimizer(case):
    if "lr_schedule" in case:
        lr = keras.optimizers.schedules.ExponentialDecay(**json.loads(str(case["lr_schedule"])))
    else:
        lr = float(case["lr"])
    return LazyAdam(
        learning_rate=lr,
        beta_1=float(case["beta_1"]),
        beta_2=float(case["beta_2"]),
        epsilon=float(case["epsilon"]),
    )


def _close(actual, expected, dtype):
    if dtype == "float64":
        return np.allclose(actual, expected, rtol=1e-10, atol=1e-12)
    return np.allclose(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_tfa_trajectory(name, compiled):
    case = _case(name)
    dtype = str(case["dtype"])
    shape = case["init"].shape
    variable = keras.Variable(case["init"], dtype=dtype)
    step = Stepper(_optimizer(case), variable, compiled)
    trajectories = {"main": ("var", "m", "v")}
    if "alt_var" in case:
        trajectories["alt"] = ("alt_var", "alt_m", "alt_v")
    matching = set(trajectories)
    for t, kind in enumerate(case["kinds"]):
        if kind == 0:
            step(sparse_gradient(case[f"idx_{t}"], case[f"val_{t}"], shape))
        else:
            step(dense_gradient(case[f"dense_{t}"]))
        got = (numpy(variable), step.slot("m"), step.slot("v"))
        for label, keys in trajectories.items():
            if not all(_close(g, case[k][t], dtype) for g, k in zip(got, keys)):
                matching.discard(label)
        assert matching, f"{name}: step {t} matches no tfa trajectory"
    assert int(numpy(step.optimizer.iterations)) == len(case["kinds"])
