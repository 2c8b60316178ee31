"""The code in README.md and docs/*.md runs as written.

Every `python` / `bash` block carries a marker (see doc_snippets.py): the
blocks marked `snippet:` run here (or, for the old-stack "Before" block, in
data/make_tfa_migration.py); `not run:` says why a block is not run.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import doc_snippets
import keras
import numpy as np
import pytest
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


def test_readme_set_up_and_quickstart_are_the_getting_started_page():
    """docs/getting-started.md repeats the README's set-up and quickstart
    for the site: the same code blocks, in the same order."""
    readme = [b.code for b in doc_snippets.blocks("README.md")]
    page = [b.code for b in doc_snippets.blocks(os.path.join("docs", "getting-started.md"))]
    assert readme == page[: len(readme)]


@pytest.mark.parametrize("page", doc_snippets.pages())
def test_relative_links_resolve(page):
    """Links to repository files (readable on GitHub; mkdocs only reports the
    ones outside docs/, see mkdocs.yml) point at files that exist."""
    with open(os.path.join(doc_snippets.ROOT, page), encoding="utf-8") as f:
        text = f.read()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#", 1)[0]
        if not path or re.match(r"[a-z]+:", path):
            continue  # an anchor on the page, or a URL
        if not os.path.exists(os.path.join(doc_snippets.ROOT, os.path.dirname(page), path)):
            broken.append(target)
    assert not broken, f"{page}: links to missing files: {broken}"


def test_step_modes_snippet():
    scope = {}
    exec(doc_snippets.snippet("step-modes"), scope)
    assert scope["LazyAdam"].__module__ == "keras_lazyadam.lazy_adam"


def test_compact_state_snippets():
    scope = {}
    exec(doc_snippets.snippet("compact-states"), scope)
    exec(doc_snippets.snippet("compact-choice"), scope)
    optimizer = scope["optimizer"]
    # The kernel was chosen in, the table left out: row-wise v and int8 m for
    # the kernel only.
    assert tuple(optimizer.get_slot(scope["item_kernel"], "v").shape) == (32,)
    m = optimizer.get_slot(scope["item_kernel"], "m")
    assert keras.backend.standardize_dtype(m.dtype) == "int8"
    assert tuple(optimizer.get_slot(scope["small_table"], "v").shape) == (7, 32)


def test_quickstart_runs_and_its_file_is_the_size_it_says(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp() in tmp_path
    scope = {}
    exec(doc_snippets.snippet("quickstart"), scope)
    assert os.path.dirname(os.path.dirname(scope["path"])) == str(tmp_path)
    size_mb = os.path.getsize(scope["path"]) / 1e6
    assert 700 < size_mb < 800, f"{size_mb:.0f} MB (the comment says 768 MB)"
    table = scope["model"].layers[1].embeddings
    assert tuple(table.shape) == (1_000_000, 64)


def test_demo_runs_as_the_readme_says():
    """`python -m keras_lazyadam.demo` (on this backend, as KERAS_BACKEND
    says): the steady step is reported and the laziness check passes."""
    proc = subprocess.run(
        [sys.executable, "-m", "keras_lazyadam.demo"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "steady step:" in proc.stdout and "epochs 2-2" in proc.stdout
    assert "laziness check: PASSED" in proc.stdout
