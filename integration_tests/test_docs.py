"""The code in README.md and docs/*.md runs as written.

Every `python` / `bash` block carries a marker (see doc_snippets.py): the
blocks marked `snippet:` run here (or, for the old-stack "Before" block, in
data/make_tfa_migration.py); `not run:` says why a block is not run.
"""

import os
import shutil

import doc_snippets
import keras
import numpy as np
from data import make_tfa_migration

MIGRATION = os.path.join(os.path.dirname(__file__), "data", "tfa_migration")


def test_every_code_block_is_marked():
    unmarked = [
        f"{b.path}:{b.line}"
        for b in doc_snippets.all_blocks()
        if b.lang in doc_snippets.CODE_LANGUAGES and b.kind is None
    ]
    assert not unmarked, f"code blocks without a `snippet:` / `not run:` marker: {unmarked}"
    names = [b.name for b in doc_snippets.all_blocks() if b.kind == "snippet"]
    assert len(names) == len(set(names)), names


def test_tfa_after_snippet_continues_tfa_run(tmp_path, monkeypatch):
    """The "After" block, on the files the "Before" block wrote on the old
    stack, takes the steps tfa took from there (continuation.npz)."""
    tfa = np.load(os.path.join(MIGRATION, "continuation.npz"))
    for name in make_tfa_migration.FILES:
        shutil.copy(os.path.join(MIGRATION, name), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(1)  # other initial weights: load_weights must replace them
    model = make_tfa_migration.build_model(keras)
    scope = {"model": model, "x": tfa["x"], "y": tfa["y"]}
    exec(doc_snippets.snippet("tfa-after"), scope)

    optimizer = model.optimizer
    assert type(optimizer).__name__ == "LazyAdam"
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == int(tfa["iterations"])
    assert int(tfa["iterations"]) > int(tfa["start_iterations"]) > 0
    for i, variable in enumerate(model.trainable_variables):
        got = keras.ops.convert_to_numpy(variable)
        want = tfa[f"weight_{i}"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=variable.path)
    # tfa's optimizer list: [iterations, m of every variable, v of every variable].
    n = len(model.trainable_variables)
    for i, variable in enumerate(model.trainable_variables):
        for k, slot in enumerate(("m", "v")):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(optimizer.get_slot(variable, slot)),
                tfa[f"optimizer_{1 + k * n + i}"],
                rtol=1e-5,
                atol=1e-8,
                err_msg=f"{slot} of {variable.path}",
            )
    # Rows the data never looked up are where tfa left them: untouched.
    table = keras.ops.convert_to_numpy(model.get_layer("table").embeddings)
    np.testing.assert_array_equal(table[150:], tfa["weight_0"][150:])
