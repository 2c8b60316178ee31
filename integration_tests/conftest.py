"""Shared helpers for the integration tests.

The suite runs once per backend (KERAS_BACKEND picks it, as for `tests/`);
tests that need another engine or several backends start subprocesses.
"""

import importlib.machinery
import json
import os
import subprocess
import sys
import textwrap

# JAX: simulated CPU devices for keras.distribution, before JAX is imported.
# (tox runs integration_tests/ in its own pytest process for this; a run where
# JAX was imported earlier, e.g. together with tests/, sees one device and
# skips the multi-device tests.)
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_lazyadam  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "jax", "torch")

# The embedding model: a table of ROWS rows, of which the training data only
# ever looks up the first USED rows (the rest must stay untouched: lazy).
ROWS, USED, DIM, IDS, BATCH = 200, 120, 8, 4, 32

Embedding = keras_lazyadam.LazyEmbedding  # the drop-in layer under test


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {BACKEND}, layer {Embedding.__name__}"


def initial_weights(model, seed=0):
    """Backend-independent initial weights (numpy), same on every backend."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal(w.shape) * 0.1).astype(keras.backend.standardize_dtype(w.dtype))
        for w in model.weights
    ]


def embedding_model(layer=None, seed=0, rows=ROWS, dtype=None):
    """ids (IDS,) -> table -> mean -> Dense(16, relu) -> Dense(1)."""
    layer = layer or Embedding
    ids = keras.Input((IDS,), dtype="int32", name="ids")
    x = layer(rows, DIM, name="table", dtype=dtype)(ids)
    x = keras.layers.GlobalAveragePooling1D(dtype=dtype)(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden", dtype=dtype)(x)
    out = keras.layers.Dense(1, name="out", dtype=dtype)(x)
    model = keras.Model(ids, out)
    model.set_weights(initial_weights(model, seed))
    return model


def make_data(n, seed=1, used=USED, rows=ROWS):
    """Ids drawn from the first `used` rows, targets from a hidden linear rule."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, used, size=(n, IDS)).astype("int32")
    secret = np.random.default_rng(1234).standard_normal(rows).astype("float32")
    y = secret[ids].mean(axis=1, keepdims=True).astype("float32")
    return ids, y


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def table_of(model):
    return model.get_layer("table").embeddings


def inner_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def table_state(model, slots=("m", "v")):
    """[table, its slots...] as numpy arrays."""
    table = table_of(model)
    opt = inner_optimizer(model.optimizer)
    return [to_numpy(table)] + [to_numpy(opt.get_slot(table, s)) for s in slots]


def assert_untouched(before, after, rows):
    """The given rows of table (and slots) are bit-for-bit unchanged."""
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a[rows], b[rows])


def optimizer_state(optimizer):
    return [to_numpy(v) for v in optimizer.variables]


def _installed():
    """Whether keras_lazyadam is importable from outside the repository."""
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != ROOT]
    return importlib.machinery.PathFinder.find_spec("keras_lazyadam", path) is not None


def run_python(code, backend, cwd, env=None, timeout=300, check=True):
    """Runs `code` in a fresh interpreter with KERAS_BACKEND=backend.

    Started from `cwd` (not the repository), so the *installed* package is
    imported where one is installed. The last stdout line is parsed as JSON.
    """
    return run_many([(code, backend)], cwd, env, timeout, check)[0]


def run_many(jobs, cwd, env=None, timeout=300, check=True):
    """`run_python` for several (code, backend) jobs, run side by side."""
    procs = [_start(code, backend, cwd, env) for code, backend in jobs]
    results = []
    for proc, (_, backend) in zip(procs, jobs):
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        proc = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        if not check:
            results.append(proc)
            continue
        if proc.returncode != 0:
            raise AssertionError(
                f"{backend} subprocess failed ({proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
            )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def _start(code, backend, cwd, env):
    full_env = dict(os.environ)
    full_env.update({"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"})
    full_env.pop("PYTHONPATH", None)
    if not _installed():
        # A developer's checkout without the package installed: use the tree.
        full_env["PYTHONPATH"] = ROOT
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=str(cwd),
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(autouse=True)
def _clean_keras_state():
    yield
    keras.config.set_dtype_policy("float32")
    if BACKEND == "jax":
        keras.distribution.set_distribution(None)
    keras.backend.clear_session()


def sparse_gradient(indices, values, shape):
    """The backend's native row-sparse gradient (duplicate rows allowed)."""
    from keras_lazyadam import backend as lazy_backend

    return lazy_backend.sparse_gradient(
        np.asarray(indices, dtype=np.int64), np.asarray(values), shape
    )


def sparse_gradient_with_index_dtype(indices, values, shape, index_dtype):
    """A native row-sparse gradient whose indices keep `index_dtype` (JAX
    BCOO, TF IndexedSlices; torch's sparse COO indices are always int64)."""
    indices = np.asarray(indices).astype(index_dtype)
    if BACKEND == "jax":
        import jax.numpy as jnp
        from jax.experimental import sparse as jax_sparse

        return jax_sparse.BCOO(
            (jnp.asarray(values), jnp.asarray(indices)[:, None]), shape=tuple(shape)
        )
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.IndexedSlices(
            tf.constant(values), tf.constant(indices), tf.constant(shape, tf.int64)
        )
    raise NotImplementedError("torch's sparse COO indices are always int64")
