"""TensorFlow's own saving (issue 14, item 1): `tf.train.Checkpoint`,
`tf.train.CheckpointManager` and SavedModel, for a model holding a LazyAdam,
built or not. A restore into a fresh model and LazyAdam brings back every
slot (`m`, `v`, `vhat`, `row_step`) and the iteration count."""

import numpy as np
import pytest

from conftest import BACKEND
from conftest import BATCH
from conftest import embedding_model
from conftest import make_data
from conftest import to_numpy
from keras_lazyadam import LazyAdam

if BACKEND != "tensorflow":
    pytest.skip("tf.train.Checkpoint and SavedModel are TensorFlow's", allow_module_level=True)

import tensorflow as tf  # noqa: E402

OPTIMIZERS = {
    "default": {},
    "every_slot": dict(amsgrad=True, step_mode="per_row"),  # m, v, vhat, row_step
}


def _compiled(kwargs, steps):
    model = embedding_model()
    model.compile(optimizer=LazyAdam(0.02, **kwargs), loss="mse")
    for step in range(steps):
        model.train_on_batch(*make_data(BATCH, seed=step))
    return model


def _state(model):
    """Model weights, then every optimizer variable by path (slots, iterations)."""
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)  # a no-op once built
    slots = {v.path.split("/", 1)[-1]: to_numpy(v) for v in optimizer.variables}
    return [to_numpy(w) for w in model.weights], slots


def _assert_same(model, other):
    (weights, slots), (other_weights, other_slots) = _state(model), _state(other)
    for a, b in zip(weights, other_weights):
        np.testing.assert_array_equal(a, b)
    assert sorted(slots) == sorted(other_slots)
    for path in slots:
        np.testing.assert_array_equal(slots[path], other_slots[path], err_msg=path)


def _checkpoint(model):
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer)


@pytest.mark.parametrize("fresh", ["unbuilt", "built"])
@pytest.mark.parametrize("steps", [0, 3], ids=["saved_unbuilt", "saved_trained"])
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_checkpoint_restores_every_slot_and_iterations(kind, steps, fresh, tmp_path):
    model = _compiled(OPTIMIZERS[kind], steps)
    path = _checkpoint(model).save(str(tmp_path / "ckpt"))
    restored = _compiled(OPTIMIZERS[kind], 0)  # fresh weights, optimizer unbuilt
    if fresh == "built":
        restored.optimizer.build(restored.trainable_variables)
    status = _checkpoint(restored).restore(path)
    assert int(restored.optimizer.iterations) == steps
    _assert_same(restored, model)  # (builds an unbuilt one: deferred restore)
    if steps:
        status.assert_consumed()
        assert "row_step" not in kind or any("row_step" in p for p in _state(model)[1])
        # And training continues identically.
        for m in (model, restored):
            m.train_on_batch(*make_data(BATCH, seed=9))
        _assert_same(restored, model)


def test_checkpoint_manager_restores_the_latest(tmp_path):
    model = _compiled(OPTIMIZERS["every_slot"], 1)
    manager = tf.train.CheckpointManager(_checkpoint(model), str(tmp_path), max_to_keep=2)
    for step in range(3):
        model.train_on_batch(*make_data(BATCH, seed=10 + step))
        manager.save()
    assert len(manager.checkpoints) == 2
    restored = _compiled(OPTIMIZERS["every_slot"], 0)
    _checkpoint(restored).restore(manager.latest_checkpoint).assert_existing_objects_matched()
    assert int(restored.optimizer.iterations) == 4
    _assert_same(restored, model)


@pytest.mark.parametrize("steps", [0, 2], ids=["unbuilt", "trained"])
def test_saved_model_of_a_model_compiled_with_lazyadam(steps, tmp_path):
    model = _compiled(OPTIMIZERS["every_slot"], steps)
    tf.saved_model.save(model, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    x, _ = make_data(8, seed=5)
    serve = loaded.signatures["serving_default"]
    (served,) = serve(tf.constant(x)).values()
    np.testing.assert_allclose(served.numpy(), to_numpy(model(x)), rtol=1e-6, atol=1e-6)
