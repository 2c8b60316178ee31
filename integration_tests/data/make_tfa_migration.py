"""Records tfa's side of the documented migration (docs/migrating-from-tfa.md).

Run on the old stack (tf.keras 2.15 + tensorflow-addons 0.23):

    bash benchmarks/tfa_env.sh
    benchmarks/.tfa-venv/bin/python integration_tests/data/make_tfa_migration.py

In a temporary folder it builds `build_model(tf.keras)`, runs the docs'
"Before" snippet exactly as written (tfa's LazyAdam, one epoch of `fit` on
X, Y; then opt_weights.npy, opt_config.json and model.h5), copies those three
files to tfa_migration/, lets tfa continue for a few more steps on NEXT_X,
NEXT_Y (`fit(shuffle=False)`, as the "After" snippet does) and writes what tfa
ends with to tfa_migration/continuation.npz. integration_tests/test_docs.py
runs the "After" snippet on those files on every backend and must get tfa's
continuation.
"""

import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tfa_migration")
FILES = ("opt_weights.npy", "opt_config.json", "model.h5")
ROWS, IDS = 200, 4


def build_model(keras):
    """The migrated model: the same code builds it in tf.keras 2 and Keras 3."""
    ids = keras.Input((IDS,), dtype="int32")
    h = keras.layers.Embedding(ROWS, 8, name="table")(ids)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dense(4, activation="tanh", name="hidden")(h)
    return keras.Model(ids, keras.layers.Dense(1, name="out")(h))


def data():
    """(X, Y) of the run before the export (8 batches of 32, ids 0-149 only,
    so rows 150-199 are never touched) and (NEXT_X, NEXT_Y) of the
    continuation (4 batches)."""
    rng = np.random.default_rng(17)
    x = rng.integers(0, 150, size=(256 + 128, IDS)).astype("int32")
    y = rng.normal(size=(256 + 128, 1)).astype("float32")
    return (x[:256], y[:256]), (x[256:], y[256:])


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_addons as tfa

    sys.path.insert(0, os.path.dirname(HERE))
    from doc_snippets import snippet

    (x, y), (next_x, next_y) = data()
    tf.keras.utils.set_random_seed(0)
    model = build_model(tf.keras)
    os.makedirs(OUT, exist_ok=True)
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            exec(snippet("tfa-before"), {"model": model, "x": x, "y": y})
            for name in FILES:
                shutil.copy(name, os.path.join(OUT, name))
        finally:
            os.chdir(cwd)
    start = model.optimizer.iterations.numpy()
    model.fit(next_x, next_y, shuffle=False, verbose=0)
    np.savez(
        os.path.join(OUT, "continuation.npz"),
        x=next_x,
        y=next_y,
        start_iterations=start,
        iterations=model.optimizer.iterations.numpy(),
        **{f"weight_{i}": w for i, w in enumerate(model.get_weights())},
        **{f"optimizer_{i}": w for i, w in enumerate(model.optimizer.get_weights())},
        versions=np.array([f"tensorflow {tf.__version__}", f"tensorflow-addons {tfa.__version__}"]),
    )
    print(f"wrote {OUT}: {', '.join(sorted(os.listdir(OUT)))}")


if __name__ == "__main__":
    main()
