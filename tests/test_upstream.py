"""Every private API listed in `keras_lazyadam.upstream` still exists and
still does what LazyAdam relies on. Fails loudly on an upstream change."""

import importlib
import inspect

import keras
import numpy as np
import pytest

from conftest import BACKEND
from conftest import dense_gradient
from keras_lazyadam import LazyAdam
from keras_lazyadam import upstream
from keras_lazyadam.upstream import PRIVATE_APIS


def _resolve(owner):
    try:
        return importlib.import_module(owner)
    except ImportError:
        module, _, name = owner.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _framework_of(owner):
    top = owner.split(".")[0]
    if top in ("tensorflow", "torch") or ".tensorflow." in owner:
        return "tensorflow" if "tensorflow" in owner else "torch"
    return None


@pytest.mark.parametrize("entry", sorted(PRIVATE_APIS), ids=lambda e: ".".join(e))
def test_private_api_exists(entry):
    owner, attribute = entry
    framework = _framework_of(owner)
    if framework is not None and framework != BACKEND:
        pytest.skip(f"{framework}'s private API is checked on the {framework} backend")
    if owner == "keras.optimizers.Optimizer":
        # Instance attributes too: look at a built Keras Adam (which
        # overrides none of these).
        target = keras.optimizers.Adam()
        target.build([keras.Variable(np.ones((2, 2), "float32"))])
    else:
        target = _resolve(owner)
    assert hasattr(target, attribute), f"{owner}.{attribute} is gone"
    assert PRIVATE_APIS[entry]  # every entry says why it is needed


def test_keras_calls_the_hooks_lazyadam_overrides():
    calls = []

    class Spy(keras.optimizers.SGD):
        def _clip_gradients(self, grads):
            calls.append("clip")
            return super()._clip_gradients(grads)

        def _apply_weight_decay(self, variables):
            calls.append("decay")
            return super()._apply_weight_decay(variables)

    variable = keras.Variable(np.ones((2, 2), "float32"))
    Spy(weight_decay=0.1, clipnorm=1.0).apply(
        [dense_gradient(np.ones((2, 2), "float32"))], [variable]
    )
    assert calls == ["clip", "decay"]


def test_keras_accessors_behave_as_used():
    a, b = keras.Variable(np.ones((2, 2), "float32")), keras.Variable(np.ones(3, "float32"))
    optimizer = LazyAdam(clipnorm=1.0)
    optimizer.build([a, b])
    assert optimizer._get_variable_index(b) == 1
    assert optimizer._var_key(a) in optimizer._trainable_variables_indices
    assert list(optimizer._trainable_variables) == [a, b]
    clipped = keras.ops.convert_to_numpy(optimizer._clip_by_norm(keras.ops.ones((4,)) * 3.0))
    np.testing.assert_allclose(clipped, 0.5, rtol=1e-6)  # norm 6 -> 1


def test_calling_model_optimizer_is_the_outermost_models():
    seen = []

    class Probe(keras.layers.Layer):
        def call(self, x):
            seen.append(upstream.calling_model_optimizer())
            return x

    x = np.ones((1, 2), "float32")
    outer = keras.Sequential([keras.Sequential([Probe()])])
    outer(x)
    assert seen.pop() is None  # not compiled
    optimizer = keras.optimizers.SGD()
    outer.compile(optimizer=optimizer, loss="mse")
    outer(x)
    assert seen.pop() is optimizer
    Probe()(x)  # a layer called on its own
    assert seen.pop() is None
    assert upstream.calling_model_optimizer() is None  # outside any call


@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="TF's KerasAutoTrackable skips `x = None` when x is None already; "
    "the mark only matters on torch (IndexedSlices pass loss scaling)",
)
def test_loss_scaling_resets_the_inner_loss_scale_factor():
    inner = LazyAdam()
    assert not inner._inner_of_loss_scaling
    keras.optimizers.LossScaleOptimizer(inner)
    assert inner._inner_of_loss_scaling


@pytest.mark.skipif(BACKEND != "torch", reason="torch's functional Adam")
def test_torch_functional_adam_takes_what_the_fused_update_passes():
    from torch.optim.adam import adam

    parameters = inspect.signature(adam).parameters
    for name in ("fused", "amsgrad", "beta1", "beta2", "lr", "weight_decay", "eps", "maximize"):
        assert name in parameters, name


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TF's distribution hook")
def test_tf_optimizer_sums_gradients_across_replicas_in_the_hook():
    from keras.src.backend.tensorflow.optimizer import TFOptimizer

    parameters = inspect.signature(TFOptimizer._all_reduce_sum_gradients).parameters
    assert list(parameters) == ["self", "grads_and_vars"]
