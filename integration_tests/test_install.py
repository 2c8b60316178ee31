"""Workflow 1: install as a user would.

The tox environments `tensorflow`, `jax` and `torch` are fresh virtual
environments (no system site-packages) holding the built wheel, keras and
exactly one backend. This test checks that, from a directory outside the repository, and
trains a few steps with the installed package.
"""

import os

import pytest

from conftest import BACKEND
from conftest import ROOT
from conftest import run_python

ISOLATED = os.environ.get("KERAS_LAZYADAM_ISOLATED_BACKEND")

SCRIPT = """
import importlib.metadata, importlib.util, json, sys, sysconfig
present = {m: importlib.util.find_spec(m) is not None for m in ("tensorflow", "jax", "torch")}
import keras, numpy as np
import keras_lazyadam
from keras_lazyadam import LazyAdam

rng = np.random.default_rng(0)
ids = keras.Input((3,), dtype="int32")
x = keras.layers.Embedding(50, 4, name="table")(ids)
x = keras.layers.GlobalAveragePooling1D()(x)
model = keras.Model(ids, keras.layers.Dense(1)(x))
model.compile(optimizer=LazyAdam(0.05), loss="mse")
before = keras.ops.convert_to_numpy(model.get_layer("table").embeddings).copy()
x = rng.integers(0, 25, size=(64, 3)).astype("int32")   # rows 25.. never used
y = rng.standard_normal((64, 1)).astype("float32")
history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
after = keras.ops.convert_to_numpy(model.get_layer("table").embeddings)
print(json.dumps({
    "present": present,
    "backend": keras.backend.backend(),
    "file": keras_lazyadam.__file__,
    "purelib": sysconfig.get_paths()["purelib"],
    "in_venv": sys.prefix != sys.base_prefix,
    "base_on_path": any(p.startswith(sys.base_prefix) and "site-packages" in p for p in sys.path),
    "version": keras_lazyadam.__version__,
    "dist_version": importlib.metadata.version("keras-lazyadam"),
    "losses": history.history["loss"],
    "used_changed": bool((after[:25] != before[:25]).any(axis=1).all()),
    "unused_same": bool((after[25:] == before[25:]).all()),
    "optimizer": type(model.optimizer).__name__,
    "registered": keras.saving.get_registered_name(LazyAdam),
}))
"""


@pytest.mark.skipif(
    not ISOLATED,
    reason="needs a fresh venv with the wheel and one backend: run "
    "`tox -e <backend>` (it sets KERAS_LAZYADAM_ISOLATED_BACKEND)",
)
def test_installed_wheel_with_exactly_one_backend_trains(tmp_path):
    assert ISOLATED == BACKEND
    out = run_python(SCRIPT, BACKEND, cwd=tmp_path)
    # Exactly one backend importable, in a real venv without the base site.
    assert out["present"] == {b: b == BACKEND for b in out["present"]}
    assert out["in_venv"] and not out["base_on_path"]
    assert out["backend"] == BACKEND
    # The wheel's copy, not the source tree.
    assert out["file"].startswith(out["purelib"])
    assert not out["file"].startswith(os.path.join(ROOT, "keras_lazyadam") + os.sep)
    assert out["dist_version"] == out["version"]
    assert out["registered"] == "keras_lazyadam>LazyAdam"
    assert out["optimizer"] == "LazyAdam"
    losses = out["losses"]
    assert all(x == x and abs(x) < 1e6 for x in losses)  # finite
    assert losses[-1] < losses[0]
    assert out["used_changed"] and out["unused_same"]


@pytest.mark.skipif(not ISOLATED, reason="needs the installed wheel (tox -e <backend>)")
def test_console_scripts_of_the_wheel_resolve(tmp_path):
    code = """
    import importlib.metadata, json
    dist = importlib.metadata.distribution("keras-lazyadam")
    result = {}
    for ep in dist.entry_points:
        try:
            ep.load()
            result[ep.name] = "ok"
        except Exception as e:
            result[ep.name] = f"{type(e).__name__}: {e}"
    print(json.dumps(result))
    """
    out = run_python(code, BACKEND, cwd=tmp_path)
    assert out == {name: "ok" for name in out}, out
