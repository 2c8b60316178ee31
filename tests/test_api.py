"""Construction, errors, serialization, saving and tfa's optimizer API."""

import keras
import numpy as np
import pytest

from conftest import BACKEND
from conftest import dense_gradient
from conftest import numpy
from conftest import sparse_gradient
from keras_lazyadam import LazyAdam

SHAPE = (6, 2)

BAD_ARGUMENTS = [
    dict(
        testcase_name="negative_lr",
        kwargs=dict(learning_rate=-0.1),
        match="`learning_rate` must be >= 0. Received: learning_rate=-0.1",
    ),
    dict(
        testcase_name="string_lr",
        kwargs=dict(learning_rate="fast"),
        match="`learning_rate` must be a float",
    ),
    dict(
        testcase_name="beta_1_one",
        kwargs=dict(beta_1=1.0),
        match=r"`beta_1` must be in \[0, 1\). Received: beta_1=1.0",
    ),
    dict(
        testcase_name="beta_2_negative",
        kwargs=dict(beta_2=-0.5),
        match=r"`beta_2` must be in \[0, 1\). Received: beta_2=-0.5",
    ),
    dict(
        testcase_name="negative_epsilon", kwargs=dict(epsilon=-1e-7), match="`epsilon` must be >= 0"
    ),
    dict(
        testcase_name="amsgrad_not_bool", kwargs=dict(amsgrad=1), match="`amsgrad` must be a bool"
    ),
    dict(
        testcase_name="skip_zero_rows_not_bool",
        kwargs=dict(skip_zero_rows="yes"),
        match="`skip_zero_rows` must be a bool",
    ),
    dict(testcase_name="negative_decay", kwargs=dict(decay=-1.0), match="`decay` must be >= 0"),
    dict(testcase_name="unknown_keyword", kwargs=dict(momentum=0.9), match="not recognized"),
    dict(
        testcase_name="nan_lr",
        kwargs=dict(learning_rate=float("nan")),
        match="`learning_rate` must be finite",
    ),
    dict(
        testcase_name="inf_epsilon",
        kwargs=dict(epsilon=float("inf")),
        match="`epsilon` must be finite",
    ),
    dict(
        testcase_name="negative_weight_decay",
        kwargs=dict(weight_decay=-0.1),
        match="`weight_decay` must be >= 0",
    ),
    dict(
        testcase_name="negative_clipnorm",
        kwargs=dict(clipnorm=-1.0),
        match="`clipnorm` must be >= 0",
    ),
    dict(testcase_name="lr_and_alias", kwargs=dict(learning_rate=0.1, lr=0.5), match="not both"),
    # Compact state (second_moment, first_moment_dtype).
    dict(
        testcase_name="second_moment",
        kwargs=dict(second_moment="rows"),
        match=r"`second_moment` must be one of .* Received: ",
    ),
    dict(
        testcase_name="second_moment_none",
        kwargs=dict(second_moment=None),
        match=r"`second_moment` must be one of .* Received: ",
    ),
    dict(
        testcase_name="first_moment_dtype",
        kwargs=dict(first_moment_dtype="float16"),
        match=r"`first_moment_dtype` must be one of .* Received: ",
    ),
    dict(
        testcase_name="first_moment_dtype_int",
        kwargs=dict(first_moment_dtype=8),
        match=r"`first_moment_dtype` must be one of .* Received: ",
    ),
]


@pytest.mark.parametrize("case", BAD_ARGUMENTS, ids=lambda c: c["testcase_name"])
def test_bad_arguments_raise(case):
    with pytest.raises(ValueError, match=case["match"]):
        LazyAdam(**case["kwargs"])


def test_scalar_tensor_hyperparameters_and_lr_alias():
    opt = LazyAdam(
        learning_rate=keras.ops.convert_to_tensor(0.5),
        beta_1=np.float32(0.8),
        beta_2=keras.ops.convert_to_tensor(0.9),
    )
    assert opt.get_config()["learning_rate"] == pytest.approx(0.5)
    assert opt.get_config()["beta_1"] == pytest.approx(0.8)
    with pytest.warns(DeprecationWarning, match="`lr` argument is deprecated"):
        assert LazyAdam(lr=0.25).get_config()["learning_rate"] == 0.25


@pytest.mark.parametrize(
    "call",
    [
        lambda: LazyAdam(learning_rate=0.001, lr=0.5),
        lambda: LazyAdam(0.001, lr=0.5),
        lambda: LazyAdam(0.1, lr=0.5),
        lambda: LazyAdam.from_config({"learning_rate": 0.001, "lr": 0.5}),
    ],
    ids=["default-value-by-keyword", "default-value-by-position", "other-value", "from_config"],
)
def test_lr_alias_together_with_learning_rate_is_refused(call):
    """Whatever `learning_rate` says, the default's value included: `lr`
    must not silently win."""
    with pytest.raises(ValueError, match="`learning_rate` or its deprecated alias `lr`, not both"):
        call()


def test_learning_rate_default_is_a_plain_0_001():
    import inspect

    default = inspect.signature(LazyAdam).parameters["learning_rate"].default
    assert default == 0.001 and repr(default) == "0.001"
    assert LazyAdam().get_config()["learning_rate"] == pytest.approx(0.001)
    with pytest.warns(DeprecationWarning):
        assert LazyAdam(lr=0.5).get_config()["learning_rate"] == 0.5


@pytest.mark.parametrize(
    "name", ["learning_rate", "beta_1", "beta_2", "epsilon", "decay", "weight_decay", "clipnorm"]
)
def test_variable_hyperparameters_are_refused(name):
    """LazyAdam reads a hyperparameter once: a variable given for one would
    silently stop counting when assigned later. Refused, as Keras' own
    optimizers refuse a variable learning rate (`optimizer.learning_rate =`
    and schedules change the learning rate during training)."""
    value = keras.Variable(0.5, name="hyper")
    hint = "optimizer.learning_rate = value" if name == "learning_rate" else "Pass its value"
    with pytest.raises(ValueError, match=f"`{name}` must be .*not a variable.*{hint}"):
        LazyAdam(**{name: value})
    if name == "learning_rate":
        with pytest.raises(ValueError, match="learning_rate"):
            keras.optimizers.Adam(learning_rate=value)  # Keras refuses it too


def test_config_round_trip():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    opt = LazyAdam(
        schedule,
        beta_1=0.8,
        epsilon=1e-4,
        amsgrad=True,
        skip_zero_rows=False,
        decay=0.01,
        weight_decay=0.1,
        global_clipnorm=2.0,
        name="mine",
    )
    config = opt.get_config()
    again = LazyAdam.from_config(config)
    assert again.get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is LazyAdam and restored.get_config() == config


def test_tfa_config():
    tfa_config = {
        "name": "LazyAdam",
        "learning_rate": 0.01,
        "decay": 0.001,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
        "amsgrad": False,
        "is_legacy_optimizer": True,
    }
    opt = LazyAdam.from_config(tfa_config)
    assert opt.decay == 0.001 and float(numpy(opt.learning_rate)) == pytest.approx(0.01)
    assert LazyAdam.from_config({"lr": 0.5}).get_config()["learning_rate"] == 0.5


def _model(optimizer):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _data(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 20, size=(32, 3)).astype("int32"), rng.normal(size=(32, 1)).astype(
        "float32"
    )


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_keras_file_round_trip_continues_identically(tmp_path, amsgrad):
    model = _model(LazyAdam(0.01, amsgrad=amsgrad))
    model.fit(*_data(1), batch_size=8, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert type(loaded.optimizer) is LazyAdam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(numpy(a), numpy(b))
    assert int(numpy(loaded.optimizer.iterations)) == 4
    model.fit(*_data(2), batch_size=8, verbose=0, shuffle=False)
    loaded.fit(*_data(2), batch_size=8, verbose=0, shuffle=False)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(numpy(a), numpy(b), rtol=1e-6, atol=1e-7)


def _built(**kwargs):
    variables = [
        keras.Variable(np.ones(SHAPE, "float32"), name="a"),
        keras.Variable(np.ones(2, "float32"), name="b"),
    ]
    opt = LazyAdam(0.1, **kwargs)
    opt.build(variables)
    return opt, variables


def test_tfa_slot_api():
    opt, (a, b) = _built(amsgrad=True)
    assert opt.get_slot_names() == ["m", "v", "vhat"]
    assert opt.get_slot(a, "vhat").shape == SHAPE
    assert opt.add_slot(a, "m") is opt.get_slot(a, "m")
    with pytest.raises(ValueError, match="cannot add 'trace'.*would not be saved"):
        opt.add_slot(b, "trace", initializer="ones")
    with pytest.raises(ValueError, match="`slot_name` must be one of"):
        opt.get_slot(a, "momentum")
    with pytest.raises(ValueError, match="Unknown variable"):
        opt.get_slot(keras.Variable(np.ones(3)), "m")
    with pytest.raises(TypeError, match="`var` must be one of the variables.*ndarray"):
        opt.get_slot(np.ones(SHAPE), "m")
    weight = opt.add_weight("counter", shape=(), dtype="int32")
    assert any(w is weight for w in opt.weights)


@pytest.mark.parametrize("bad", ["count", "shape"])
def test_set_weights_checks_everything_before_writing(bad):
    opt, (a, b) = _built()
    opt.apply([dense_gradient(np.ones(SHAPE, "float32")), dense_gradient(np.ones(2, "float32"))])
    before = opt.get_weights()
    weights = [w + 1 for w in before]
    if bad == "count":
        weights = weights[:-1]
    else:
        weights[-1] = np.ones((3,), "float32")  # the last: the others would be written first
    with pytest.raises(ValueError, match=r"expects \d+ arrays|has shape"):
        opt.set_weights(weights)
    for x, y in zip(opt.get_weights(), before):
        np.testing.assert_array_equal(x, y)


def test_callable_beta_is_refused_at_save_time(tmp_path):
    model = _model(LazyAdam(0.01, beta_1=lambda: 0.8))
    model.fit(*_data(1), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="`beta_1` is a callable, which a saved file cannot hold"):
        model.save(str(tmp_path / "model.keras"))


def test_tfa_weights_api():
    opt, (a, b) = _built()
    opt.apply([dense_gradient(np.ones(SHAPE, "float32")), dense_gradient(np.ones(2, "float32"))])
    weights = opt.get_weights()
    assert len(weights) == len(opt.variables) == len(opt.variables()) == len(opt.weights)
    assert int(weights[0]) == 1 == int(numpy(opt.iterations))
    fresh, _ = _built()
    fresh.set_weights(weights)
    for x, y in zip(fresh.get_weights(), weights):
        np.testing.assert_array_equal(x, y)


def test_minimize_and_get_gradients():
    opt = LazyAdam(0.1)
    table = keras.Variable(np.ones(SHAPE, "float32"))

    def loss():
        return keras.ops.sum(
            keras.ops.take(table, keras.ops.convert_to_tensor([1, 1, 4]), axis=0) ** 2
        )

    grads = opt.get_gradients(loss, [table])
    dense = numpy(keras.ops.convert_to_tensor(grads[0]))
    assert dense.shape == SHAPE and dense[1, 0] == pytest.approx(4.0)
    opt.minimize(loss, [table])
    after = numpy(table)
    assert np.all(after[[1, 4]] < 1) and np.all(after[[0, 2, 3, 5]] == 1)
    assert int(numpy(opt.iterations)) == 1
    with pytest.raises(ValueError, match="must be a callable"):
        opt.get_gradients(keras.ops.ones(()), [table])
    with pytest.raises(NotImplementedError, match="Use `minimize"):
        opt.get_updates(loss, [table])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a GradientTape exists on TensorFlow only")
def test_minimize_with_tape():
    import tensorflow as tf

    opt, table = LazyAdam(0.1), keras.Variable(np.ones(SHAPE, "float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table.value, [2]))
    opt.minimize(loss, [table], tape=tape)
    assert numpy(table)[2, 0] < 1 and numpy(table)[0, 0] == 1


BAD_GRADIENTS = [
    dict(
        testcase_name="wrong_dense_shape",
        grad=lambda: dense_gradient(np.ones((6, 3), "float32")),
        match="must have the variable's shape",
    ),
    dict(
        testcase_name="wrong_row_shape",
        grad=lambda: sparse_gradient([1], np.ones((1, 3), "float32"), (6, 3)),
        match="must have the variable's shape",
    ),
    dict(
        testcase_name="integer_gradient",
        grad=lambda: dense_gradient(np.ones(SHAPE, "int32")),
        match="must be floating point",
    ),
    dict(
        testcase_name="row_out_of_range",
        grad=lambda: sparse_gradient([1, 6], np.ones((2, 2), "float32"), SHAPE),
        match=r"must be in \[0, 6\)",
    ),
    dict(
        testcase_name="negative_row",
        grad=lambda: sparse_gradient([-1], np.ones((1, 2), "float32"), SHAPE),
        match=r"must be in \[0, 6\)",
    ),
    dict(
        testcase_name="mismatched_lists",
        grad=lambda: dense_gradient(np.ones(SHAPE, "float32")),
        variables=lambda a, b: [b, a, b],
        match="must have the same length. Received: 2 gradients for 3 variables",
    ),
]


def _native(kind):
    """Malformed native sparse gradients of the (6, 2) variable `a`."""
    ones = np.ones((2, 2), "float32")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        if kind == "float_indices":
            return tf.IndexedSlices(tf.constant(ones), tf.constant([1.0, 2.7]), SHAPE)
        if kind == "count_mismatch":
            return tf.IndexedSlices(tf.constant(ones), tf.constant([1, 2, 3]), SHAPE)
    if BACKEND == "jax" and kind == "column_out_of_range":
        from jax.experimental import sparse as jax_sparse

        return jax_sparse.BCOO((np.ones(2, "float32"), np.array([[1, 0], [2, -1]])), shape=SHAPE)
    if BACKEND == "torch":
        import torch

        if kind == "column_out_of_range":
            return torch.sparse_coo_tensor([[1, 2], [0, -1]], np.ones(2, "float32"), SHAPE)
        if kind == "csr":
            return torch.ones(SHAPE).to_sparse_csr()
    pytest.skip(f"no {kind} sparse gradient on {BACKEND}")


for kind, match in [
    ("float_indices", "Row indices of the gradient of 'a' must be integers"),
    ("count_mismatch", "'a' must have one row index per row of values"),
    ("column_out_of_range", "Element indices of the gradient of 'a' must be inside"),
    ("csr", "'a' must be dense or sparse COO.*to_sparse_coo"),
]:
    BAD_GRADIENTS.append(
        dict(testcase_name=kind, grad=lambda kind=kind: _native(kind), match=match)
    )


@pytest.mark.parametrize("case", BAD_GRADIENTS, ids=lambda c: c["testcase_name"])
def test_bad_gradient_raises_and_changes_nothing(case):
    opt, (a, b) = _built()
    good = dense_gradient(np.ones(2, "float32"))
    before = [numpy(v) for v in [a, b] + opt.variables]
    # The bad gradient comes second: the first variable must not move either.
    variables = case.get("variables", lambda a, b: [b, a])(a, b)
    with pytest.raises(Exception, match=case["match"]):
        opt.apply([good, case["grad"]()], variables)
    after = [numpy(v) for v in [a, b] + opt.variables]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_non_float_variable_rejected():
    with pytest.raises(ValueError, match="only train floating-point variables"):
        LazyAdam().build([keras.Variable(np.ones(SHAPE, "int32"), trainable=False)])
