"""Workflow 6: many devices, on the engines users already have.

- JAX: `keras.distribution.DataParallel` over 4 simulated CPU devices, and
  `ModelParallel` with the embedding table sharded by rows (`LayoutMap`).
- TensorFlow: `tf.distribute.MirroredStrategy` over 2 logical CPU devices, in
  a subprocess (logical devices must be set before TF initialises). Its
  all-reduce of IndexedSlices concatenates the replicas' rows: the duplicates
  must be summed, or the result differs from one device.

Each must give the weights one device gives on the same global batches
(rtol 1e-5, atol 1e-6: the replicas' partial sums round differently), and
leave the rows the data never uses untouched.
torch has no multi-device engine in Keras 3: nothing to test there.
"""

import keras
import numpy as np
import pytest

from conftest import BACKEND
from conftest import BATCH
from conftest import HERE
from conftest import ROWS
from conftest import USED
from conftest import embedding_model
from conftest import make_data
from conftest import run_python
from conftest import table_of
from conftest import table_state
from conftest import to_numpy
from keras_lazyadam import LazyAdam

TOL = dict(rtol=1e-5, atol=1e-6)
UNUSED = np.arange(USED, ROWS)


def _devices():
    if BACKEND != "jax":
        return []
    import jax

    return jax.devices("cpu")


jax_only = pytest.mark.skipif(
    BACKEND != "jax", reason="keras.distribution runs on the JAX backend only"
)
four_devices = pytest.mark.skipif(
    BACKEND == "jax" and len(_devices()) < 4,
    reason="needs 4 JAX CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=4 "
    "before JAX is imported (integration_tests/conftest.py sets it)",
)


def _fit(x, y, **kwargs):
    model = embedding_model()
    model.compile(optimizer=LazyAdam(0.02, **kwargs), loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    return model


def _assert_lazy(model):
    init = to_numpy(table_of(embedding_model()))
    table, m, v = table_state(model)
    np.testing.assert_array_equal(table[UNUSED], init[UNUSED])
    assert not m[UNUSED].any() and not v[UNUSED].any()


def _jax_distributed(distribution, **kwargs):
    x, y = make_data(6 * BATCH)
    single = _fit(x, y, **kwargs)
    keras.distribution.set_distribution(distribution)
    try:
        model = _fit(x, y, **kwargs)
    finally:
        keras.distribution.set_distribution(None)
    for a, b in zip(model.get_weights(), single.get_weights()):
        np.testing.assert_allclose(a, b, **TOL)
    for a, b in zip(table_state(model)[1:], table_state(single)[1:]):
        np.testing.assert_allclose(a, b, **TOL)
    _assert_lazy(model)
    return model


@jax_only
@four_devices
def test_jax_data_parallel_matches_one_device():
    model = _jax_distributed(keras.distribution.DataParallel(devices=_devices()[:4]))
    table = table_of(model).value
    assert len(table.sharding.device_set) == 4  # replicated on 4 devices


@jax_only
@four_devices
@pytest.mark.parametrize("step_mode", ["global", "catch_up"])
def test_jax_model_parallel_table_sharded_by_rows(step_mode):
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], _devices()[:4])
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["table/embeddings"] = ("model", None)
    model = _jax_distributed(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"),
        step_mode=step_mode,
    )
    # Each device holds half of the rows, of the table and of its slots.
    table = table_of(model)
    for value in [table.value] + [model.optimizer.get_slot(table, s).value for s in "mv"]:
        shapes = {shard.data.shape for shard in value.addressable_shards}
        assert shapes == {(ROWS // 2, value.shape[1])}
    if step_mode != "global":
        # The row counter (one per row) follows its table's rows.
        row_step = model.optimizer.get_slot(table, "row_step")
        shapes = {shard.data.shape for shard in row_step.value.addressable_shards}
        assert shapes == {(ROWS // 2,)}
        counts = to_numpy(row_step)
        assert not counts[UNUSED].any() and counts[:USED].min() >= 1


@jax_only
@four_devices
@pytest.mark.parametrize("first_moment_dtype", ["bfloat16", "int8"])
def test_jax_model_parallel_compact_state_sharded_by_rows(first_moment_dtype):
    """Issue 16: the per-row v and m_scale are sharded with the table's
    rows (as row_step is), m's codes as the table; same result as one
    device."""
    mesh = keras.distribution.DeviceMesh((2, 2), ["batch", "model"], _devices()[:4])
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["table/embeddings"] = ("model", None)
    model = _jax_distributed(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"),
        second_moment="row",
        first_moment_dtype=first_moment_dtype,
    )
    table = table_of(model)
    slots = model.optimizer.get_slot_names()
    assert slots == ["m", "v"] + (["m_scale"] if first_moment_dtype == "int8" else [])
    for name in slots:
        value = model.optimizer.get_slot(table, name).value
        shapes = {shard.data.shape for shard in value.addressable_shards}
        assert shapes == {(ROWS // 2,) + tuple(value.shape[1:])}, name


SCRIPT = """
import json, sys
sys.path.insert(0, {here!r})
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from conftest import BATCH, embedding_model, make_data, table_state
from keras_lazyadam import LazyAdam

x, y = make_data(6 * BATCH)
def fit():
    model = embedding_model()
    model.compile(optimizer=LazyAdam(0.02, **{kwargs!r}), loss="mse")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    model.fit(data, epochs=2, verbose=0)
    return model

single = fit()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = fit()
out = {{"replicas": strategy.num_replicas_in_sync}}
for name, model in (("single", single), ("mirrored", mirrored)):
    # (float32: npz has no bfloat16)
    slots = [a.astype("float32") for a in table_state(model)[1:]]
    np.savez(f"{{name}}.npz", *model.get_weights(), *slots)
    if "step_mode" in {kwargs!r}:
        np.save(f"{{name}}_row_step.npy", table_state(model, ["row_step"])[1])
print(json.dumps(out))
"""


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="tf.distribute.MirroredStrategy is TensorFlow's engine (run in the TF env)",
)
@pytest.mark.parametrize("step_mode", ["global", "catch_up", "compact"])
def test_tf_mirrored_strategy_matches_one_device(step_mode, tmp_path):
    kwargs = {"global": {}, "catch_up": {"step_mode": "catch_up"}}.get(step_mode)
    if step_mode == "compact":  # issue 16: row-wise v, bfloat16 m
        kwargs = {"second_moment": "row", "first_moment_dtype": "bfloat16"}
    out = run_python(SCRIPT.format(here=HERE, kwargs=kwargs), "tensorflow", cwd=tmp_path)
    assert out["replicas"] == 2
    single, mirrored = np.load(tmp_path / "single.npz"), np.load(tmp_path / "mirrored.npz")
    for key in single.files:
        np.testing.assert_allclose(mirrored[key], single[key], **TOL)
    init = to_numpy(table_of(embedding_model()))
    table, m, v = mirrored["arr_0"], mirrored["arr_5"], mirrored["arr_6"]
    assert table.shape == (ROWS, init.shape[1]) and m.shape == table.shape
    assert v.shape == ((ROWS,) if step_mode == "compact" else table.shape)
    np.testing.assert_array_equal(table[UNUSED], init[UNUSED])
    assert not m[UNUSED].any() and not v[UNUSED].any()
    assert (table[:USED] != init[:USED]).any(axis=1).all()
    if step_mode == "catch_up":
        counts = np.load(tmp_path / "mirrored_row_step.npy")
        np.testing.assert_array_equal(counts, np.load(tmp_path / "single_row_step.npy"))
        assert not counts[UNUSED].any() and counts[:USED].min() >= 1
