"""Shared helpers. The suite runs once per backend: KERAS_BACKEND picks it."""

import os
import sys

import keras
import numpy as np
import pytest

from keras_lazyadam import backend as lazy_backend

sys.path.insert(0, os.path.dirname(__file__))

BACKEND = keras.backend.backend()
# torch places Keras variables on CUDA when it has a GPU (benchmarks/gpu_check.sh).
TORCH_CUDA = BACKEND == "torch" and __import__("torch").cuda.is_available()
REFERENCE = os.path.join(os.path.dirname(__file__), "tfa_lazyadam_reference.npz")


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}"


def sparse_gradient(indices, values, shape):
    """The backend's native row-sparse gradient (duplicates allowed)."""
    return lazy_backend.sparse_gradient(
        np.asarray(indices, dtype=np.int64), np.asarray(values), shape
    )


def dense_gradient(values):
    return keras.ops.convert_to_tensor(np.asarray(values))


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def hyperparameters(lr=0.1, weight_decay=None, amsgrad=False, step=3, step_mode="global"):
    """`rule.Hyperparameters` of float32 tensors, for tests of the rule."""
    from keras_lazyadam.rule import Hyperparameters

    t = keras.ops.convert_to_tensor
    return Hyperparameters(
        learning_rate=t(lr, "float32"),
        beta_1=t(0.9, "float32"),
        beta_2=t(0.999, "float32"),
        epsilon=t(1e-7, "float32"),
        step=t(float(step), "float32"),
        weight_decay_rate=None if weight_decay is None else t(lr * weight_decay, "float32"),
        amsgrad=amsgrad,
        step_mode=step_mode,
        global_step=t(step, "int32") if step_mode == "catch_up" else None,
    )


def assert_matches_oracle(kwargs, steps, shape, dtype, compiled, compact_state=False):
    """Runs `steps` (("sparse", ids, values) or ("dense", values) each) on a
    LazyAdam(**kwargs) variable (given the compact state with
    `compact_state`) and on the numpy oracle from the same random start; the variables
    must agree after every step. Returns the `Stepper` and the oracle."""
    from numpy_reference import NumpyLazyAdam

    from keras_lazyadam import LazyAdam

    init = np.random.default_rng(0).normal(size=shape).astype(dtype)
    variable = keras.Variable(init, dtype=dtype)
    optimizer = LazyAdam(**kwargs)
    if compact_state:
        optimizer.use_compact_state([variable])
    step = Stepper(optimizer, variable, compiled)
    oracle_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
    oracle = NumpyLazyAdam(shape, dtype, **oracle_kwargs)
    expected = init.copy()
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=1e-6)
    for kind, *data in steps:
        if kind == "sparse":
            step(sparse_gradient(data[0], data[1].astype(dtype), shape))
            oracle.sparse(expected, data[0], data[1].astype(dtype))
        else:
            step(dense_gradient(data[0].astype(dtype)))
            oracle.dense(expected, data[0].astype(dtype))
        np.testing.assert_allclose(numpy(variable), expected, **tol)
    return step, oracle


class Stepper:
    """Applies gradients to one variable, eagerly or compiled.

    compiled: tf.function on TensorFlow ("xla": with jit_compile=True),
    jax.jit over `stateless_apply` on JAX; torch has no compiled mode here
    (eager only).
    """

    def __init__(self, optimizer, variable, compiled):
        self.optimizer = optimizer
        self.variable = variable
        self.compiled = compiled
        optimizer.build([variable])
        if not compiled:
            self._step = lambda g: optimizer.apply([g], [variable])
        elif BACKEND == "tensorflow":
            import tensorflow as tf

            self._step = tf.function(
                lambda g: optimizer.apply([g], [variable]),
                reduce_retracing=True,
                jit_compile=compiled == "xla",
            )
        elif BACKEND == "jax":
            import jax

            fn = jax.jit(
                lambda o, t, g: optimizer.stateless_apply(o, [g], t),
                donate_argnums=(0, 1),
            )

            def step(g):
                t, o = fn([v.value for v in optimizer.variables], [variable.value], g)
                variable.assign(t[0])
                for ref, value in zip(optimizer.variables, o):
                    ref.assign(value)

            self._step = step
        else:
            pytest.skip("torch has no compiled optimizer step to test here")

    def __call__(self, gradient):
        self._step(gradient)

    def slot(self, name):
        return numpy(self.optimizer.get_slot(self.variable, name))


@pytest.fixture(params=["eager", "compiled", "xla"])
def compiled(request):
    """False (eager), True (compiled) or "xla" (TF's `jit_compile=True`)."""
    if request.param != "eager" and BACKEND == "torch":
        pytest.skip("torch: the optimizer step runs eagerly (no compiled mode)")
    if request.param == "xla" and BACKEND != "tensorflow":
        pytest.skip("XLA through jit_compile is TF's; JAX's jit is 'compiled'")
    return {"eager": False, "compiled": True, "xla": "xla"}[request.param]


if BACKEND == "jax":
    # float64 variables need JAX's 64-bit mode (off by default in JAX).
    import jax

    jax.config.update("jax_enable_x64", True)


@pytest.fixture
def row_path(monkeypatch):
    """LazyAdam applies a sparse gradient of a small variable to the whole
    of it, masked (dense writes, as Adam's). Tests about the row path of the
    tables it is for, on small test variables, force it with this."""
    from keras_lazyadam import lazy_adam

    monkeypatch.setattr(lazy_adam, "_prefers_whole", lambda variable, rows: False)
