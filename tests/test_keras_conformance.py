"""Keras' own optimizer tests, run against `LazyAdam(skip_zero_rows=False)`.

Keras ships its optimizer tests inside the wheel. They are imported from
there, not copied, and the optimizer is substituted:

- `keras.src.optimizers.adam_test.AdamTest`: every test of the class, with
  the name `Adam` of that module bound to `LazyAdam(skip_zero_rows=False)`
  while each test runs (the tests construct the optimizer through that name).
- `keras.src.optimizers.optimizer_sparse_test`: its two test functions
  (`test_sparse_gradients`, `test_sparse_correctness`) take the optimizer
  class as a parameter; they are called with `LazyAdam(skip_zero_rows=False)`
  for each of Keras' own cases whose optimizer is `Adam` (plain and amsgrad).
  Keras skips this suite where the backend has no sparse tensors (torch).

Where LazyAdam differs from Adam by design, the case is a strict expected
failure that says why.
"""

import functools
import warnings
from unittest import mock

import pytest
from keras import optimizers
from keras.src import backend
from keras.src import testing

REASON = "this Keras wheel does not ship its optimizer tests (3.15.1 is the first that does)"
with warnings.catch_warnings():
    # adam_test marks a test `requires_trainable_backend`, a marker that
    # Keras' own conftest registers (it skips the numpy backend).
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    adam_test = pytest.importorskip("keras.src.optimizers.adam_test", reason=REASON)
optimizer_sparse_test = pytest.importorskip(
    "keras.src.optimizers.optimizer_sparse_test", reason=REASON
)

from conftest import BACKEND  # noqa: E402
from keras_lazyadam import LazyAdam  # noqa: E402

LAZY_ADAM = functools.partial(LazyAdam, skip_zero_rows=False)


class LazyAdamKerasAdamTest(adam_test.AdamTest):
    """Every test of Keras' `AdamTest`, with `Adam` replaced by LazyAdam."""

    def setUp(self):
        super().setUp()
        patcher = mock.patch.object(adam_test, "Adam", LAZY_ADAM)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_substitution_is_in_effect(self):
        # Guards the substitution itself: should Keras stop constructing the
        # optimizer through the module name `Adam`, the tests above would
        # silently test Keras' Adam again.
        assert isinstance(adam_test.Adam(), LazyAdam)


# Keras' sparse-suite cases whose optimizer is Adam (today: plain, amsgrad).
ADAM_CASES = [
    case for case in optimizer_sparse_test.TEST_CASES if case["optimizer_class"] is optimizers.Adam
]


def _keras_test_function(name):
    """One of Keras' sparse-suite test functions, as written in Keras.

    absl's parameterization wraps it with `functools.wraps`: `__wrapped__` is
    the function itself. (The class is not bound at module level here:
    pytest would collect Keras' whole suite, every optimizer, from it.)
    """
    generated = getattr(
        optimizer_sparse_test.OptimizerSparseTest,
        f"{name}_{ADAM_CASES[0]['testcase_name']}",
    )
    return generated.__wrapped__


_sparse_gradients = _keras_test_function("test_sparse_gradients")
_sparse_correctness = _keras_test_function("test_sparse_correctness")

requires_sparse = pytest.mark.skipif(
    not backend.SUPPORTS_SPARSE_TENSORS,
    reason="Keras' sparse suite skips backends without sparse tensors (torch)",
)

TF_LAZY_WRITES = pytest.mark.xfail(
    BACKEND == "tensorflow",
    strict=True,
    reason=(
        "lazy by design: on TensorFlow LazyAdam writes only the touched rows, "
        "as tf.IndexedSlices through `Optimizer.assign` (sparse updates of "
        "the variable and of m/v), where Keras' Adam expects dense updates"
    ),
)


def _run_keras_test(function, **params):
    """Runs one of Keras' TestCase test functions as Keras would."""
    case = testing.TestCase()
    case.setUp()
    try:
        function(case, **params)
    finally:
        case.doCleanups()


def _ids(cases):
    return [case["testcase_name"] for case in cases]


@requires_sparse
@pytest.mark.parametrize("case", ADAM_CASES, ids=_ids(ADAM_CASES))
def test_sparse_correctness(case):
    """Keras: a sparse gradient gives the same result as its dense form.

    True of LazyAdam too: rows absent from the sparse gradient have a zero
    dense gradient from the first step on, so Adam leaves them where they are.
    """
    _run_keras_test(
        _sparse_correctness,
        optimizer_class=LAZY_ADAM,
        init_kwargs=case.get("init_kwargs", {}),
    )


def _keras_sparse_test(case):
    """Keras' sparse-gradient test with the expectations it sets for Adam."""
    _run_keras_test(
        _sparse_gradients,
        optimizer_class=LAZY_ADAM,
        init_kwargs=case.get("init_kwargs", {}),
        expect_model_sparse_variable_updates=case.get(
            "expect_model_sparse_variable_updates", False
        ),
        expect_optimizer_sparse_variable_updates=case.get(
            "expect_optimizer_sparse_variable_updates", False
        ),
    )


@requires_sparse
@pytest.mark.parametrize("case", ADAM_CASES, ids=_ids(ADAM_CASES))
def test_sparse_gradients_of_a_small_variable_keras_expectations(case):
    """Keras' test as written for Adam holds for its small variable: LazyAdam
    writes it whole, through `Optimizer.assign`, as Keras' Adam does."""
    _keras_sparse_test(case)


@requires_sparse
@pytest.mark.parametrize("case", ADAM_CASES, ids=_ids(ADAM_CASES))
@TF_LAZY_WRITES
def test_sparse_gradients_keras_expectations(case, row_path):
    """Keras' test as written for Adam: writes only through `Optimizer.assign`
    (never `variable.assign`), and no sparse variable update.

    On TensorFlow the case fails by design (TF_LAZY_WRITES) on the row path,
    and the lazy expectations below hold instead.
    """
    _keras_sparse_test(case)


@requires_sparse
@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="only TensorFlow has sparse variable updates (IndexedSlices); "
    "JAX writes whole arrays, so Keras' own expectations apply there",
)
@pytest.mark.parametrize("case", ADAM_CASES, ids=_ids(ADAM_CASES))
def test_sparse_gradients_lazy_expectations(case, row_path):
    """Keras' test with LazyAdam's expectations: every write goes through
    `Optimizer.assign`, and the variable and the slots get sparse updates."""
    _run_keras_test(
        _sparse_gradients,
        optimizer_class=LAZY_ADAM,
        init_kwargs=case.get("init_kwargs", {}),
        expect_model_sparse_variable_updates=True,
        expect_optimizer_sparse_variable_updates=True,
    )


def test_keras_adam_cases_found():
    """Guards the case selection: Keras' sparse suite still tests Adam."""
    assert _ids(ADAM_CASES) == ["adam", "adam_amsgrad"]
