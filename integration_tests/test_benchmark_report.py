"""benchmarks/report.py gives verdicts only for what the run measured.

A run that kept parts of an earlier one (run_all.py --write-results with a
subset) shows them in its tables but never prints their PASS/MISS.
"""

import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import report  # noqa: E402


def _stats(ms):
    return {"median_ms": ms, "min_ms": ms, "max_ms": ms, "n": 1, "samples_ms": [ms]}


def _raw(measured):
    sparse = {"ids": 4096, "unique": 1353, "stats": {"LazyAdam": _stats(2.0)}, "errors": {}}
    sparse["stats"]["Keras Adam"] = _stats(100.0)
    fit = {"stats": {"LazyAdam + Embedding": _stats(9.0), "Keras Adam + Embedding": _stats(90.0)}}
    fit["errors"] = {}
    anchor = {"goals": [["tensorflow anchor fit: LazyAdam / tfa (goal <= 1.3)", "1.1x", "PASS"]]}
    return {
        "step": {"jax": {"sparse": [sparse], "dense": None}},
        "fit": {"torch": fit},
        "anchor": anchor,
        "measured": measured,
    }


@pytest.mark.parametrize(
    "measured, backends, kept",
    [
        (["step/jax", "fit/torch", "anchor"], {"jax", "torch", "tensorflow"}, 0),
        (["step/jax"], {"jax"}, 2),
        ([], set(), 3),  # e.g. a raw.json from before `measured` was recorded
    ],
    ids=["all-measured", "jax-step-only", "none-measured"],
)
def test_verdicts_only_for_parts_measured_in_the_run(measured, backends, kept):
    rows, kept_parts = report.goals(_raw(measured))
    assert kept_parts == kept
    assert {label.split()[0] for label, _, _ in rows} == backends
    verdicts = {label.split()[0]: v for label, _, v in rows if v in ("PASS", "MISS")}
    assert set(verdicts) == backends
