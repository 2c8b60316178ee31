"""The optimizer steps being compared, one set per backend.

Import after `common.select_backend(...)`. Every case owns its own table
(and slots), takes the backend's native gradient made by `grad(ids, values)`
outside the timed region, and `step(grad)` runs one optimizer step and
returns when it is done (JAX: blocks on the new state).

Compiled where the backend compiles: `tf.function` on TensorFlow, `jax.jit`
with the state donated on JAX, eager on torch.
"""

import functools

import numpy as np

import keras

from common import DIM
from common import ROWS

BACKEND = keras.backend.backend()
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-7

_INIT = {}


def initial_table(rows=ROWS, dim=DIM):
    """One shared numpy initial value (every case copies it)."""
    key = (rows, dim)
    if key not in _INIT:
        rng = np.random.default_rng(1)
        _INIT[key] = (rng.standard_normal((rows, dim), np.float32) * 0.05).astype(
            np.float32
        )
    return _INIT[key]


class Case:
    """`grad(ids, values)` builds the gradient; `step(g)` applies it."""

    def __init__(self, grad, step, note=""):
        self.grad = grad
        self.step = step
        self.note = note


def _keras_optimizer(name, **kwargs):
    if name == "LazyAdam":
        from keras_lazyadam import LazyAdam

        return LazyAdam(learning_rate=LR, **kwargs)
    if name == "Adam":
        return keras.optimizers.Adam(learning_rate=LR, epsilon=EPS, **kwargs)
    raise ValueError(name)


# --------------------------------------------------------------- TensorFlow


def _tf_cases(shape, sparse, names):
    import tensorflow as tf

    def indexed_slices(ids, values):
        return tf.IndexedSlices(
            tf.constant(values), tf.constant(ids), tf.constant(shape, tf.int64)
        )

    def dense(ids, values):
        return tf.convert_to_tensor(_dense_np(ids, values, shape))

    grad = indexed_slices if sparse else dense
    cases = {}

    def keras_case(opt_name, **kw):
        var = keras.Variable(initial_table(*shape), name="table")
        opt = _keras_optimizer(opt_name, **kw)
        opt.build([var])

        @tf.function
        def step(g):
            opt.apply([g], [var])

        return Case(grad, step)

    if "LazyAdam" in names:
        cases["LazyAdam"] = keras_case("LazyAdam")
    if "LazyAdam(skip_zero_rows=False)" in names:
        cases["LazyAdam(skip_zero_rows=False)"] = keras_case(
            "LazyAdam", skip_zero_rows=False
        )
    if "Keras Adam" in names:
        case = keras_case("Adam")
        if sparse:
            case.note = "IndexedSlices in; Keras densifies them"
        cases["Keras Adam"] = case
    if "tfa-equivalent TF lazy step" in names:
        cases["tfa-equivalent TF lazy step"] = _tf_hand_lazy(shape, indexed_slices)
    return cases


def _tf_hand_lazy(shape, grad):
    """tfa's LazyAdam, as Keras 2 ran it: dedup (tf.unique +
    unsorted_segment_sum), then gather / scatter_update on resource vars."""
    import tensorflow as tf

    var = tf.Variable(initial_table(*shape))
    m = tf.Variable(tf.zeros(shape))
    v = tf.Variable(tf.zeros(shape))
    it = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def step(g):
        it.assign_add(1)
        t = tf.cast(it, tf.float32)
        alpha = LR * tf.sqrt(1 - tf.pow(B2, t)) / (1 - tf.pow(B1, t))
        rows, pos = tf.unique(g.indices)
        gs = tf.math.unsorted_segment_sum(g.values, pos, tf.shape(rows)[0])
        m_t = B1 * tf.gather(m, rows) + (1 - B1) * gs
        v_t = B2 * tf.gather(v, rows) + (1 - B2) * tf.square(gs)
        var_t = tf.gather(var, rows) - alpha * m_t / (tf.sqrt(v_t) + EPS)
        m.scatter_update(tf.IndexedSlices(m_t, rows))
        v.scatter_update(tf.IndexedSlices(v_t, rows))
        var.scatter_update(tf.IndexedSlices(var_t, rows))

    return Case(grad, step, "tf.unique + unsorted_segment_sum + gather/scatter")


# ---------------------------------------------------------------------- JAX


def _jax_cases(shape, sparse, names):
    import jax
    import jax.numpy as jnp
    from jax.experimental import sparse as jax_sparse

    def bcoo(ids, values):
        return jax_sparse.BCOO(
            (jnp.asarray(values), jnp.asarray(ids, jnp.int32)[:, None]),
            shape=tuple(shape),
        )

    def dense(ids, values):
        return jnp.asarray(_dense_np(ids, values, shape))

    cases = {}

    def keras_case(opt_name, grad, note="", **kw):
        var = keras.Variable(initial_table(*shape), name="table")
        opt = _keras_optimizer(opt_name, **kw)
        opt.build([var])
        state = [[var.value], [v.value for v in opt.variables]]
        # The donated buffers are the variables' own: `var` is stale after
        # the first step (never read again) and no copy stays alive.

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def jitted(train_vars, opt_vars, g):
            return opt.stateless_apply(opt_vars, [g], train_vars)

        def step(g):
            state[0], state[1] = jitted(state[0], state[1], g)
            jax.block_until_ready(state)

        return Case(grad, step, note)

    if "LazyAdam" in names:
        cases["LazyAdam"] = keras_case(
            "LazyAdam", bcoo if sparse else dense, "BCOO in" if sparse else ""
        )
    if "LazyAdam(skip_zero_rows=False)" in names:
        cases["LazyAdam(skip_zero_rows=False)"] = keras_case(
            "LazyAdam", dense, skip_zero_rows=False
        )
    if "LazyAdam (dense grad)" in names:
        cases["LazyAdam (dense grad)"] = keras_case(
            "LazyAdam", dense, "densified gradient, as model.fit hands it"
        )
    if "Keras Adam" in names:
        cases["Keras Adam"] = keras_case(
            "Adam",
            dense,
            "densified gradient (BCOO with duplicate ids fails under jit)"
            if sparse
            else "",
        )
    if "Keras Adam (BCOO)" in names:
        cases["Keras Adam (BCOO)"] = keras_case("Adam", bcoo, "BCOO in")
    if "hand-written JAX lazy step" in names:
        cases["hand-written JAX lazy step"] = _jax_hand_lazy(shape, bcoo)
    return cases


def _jax_hand_lazy(shape, bcoo):
    """A jitted lazy Adam step: jnp.unique (static size) + segment_sum +
    gather, then .at[].set scatters on donated buffers."""
    import jax
    import jax.numpy as jnp

    rows_total = shape[0]
    state = [
        (
            jnp.asarray(initial_table(*shape)),
            jnp.zeros(shape, jnp.float32),
            jnp.zeros(shape, jnp.float32),
            jnp.zeros((), jnp.float32),
        )
    ]

    @functools.partial(jax.jit, donate_argnums=(0,))
    def jitted(st, ids, values):
        var, m, v, t = st
        t = t + 1
        n = ids.shape[0]
        rows, pos = jnp.unique(
            ids, size=n, fill_value=rows_total, return_inverse=True
        )
        g = jax.ops.segment_sum(values, pos.reshape(-1), num_segments=n)
        alpha = LR * jnp.sqrt(1 - B2**t) / (1 - B1**t)
        m_t = B1 * m.at[rows].get(mode="fill", fill_value=0) + (1 - B1) * g
        v_t = B2 * v.at[rows].get(mode="fill", fill_value=0) + (1 - B2) * g * g
        var_t = var.at[rows].get(mode="fill", fill_value=0) - alpha * m_t / (
            jnp.sqrt(v_t) + EPS
        )
        return (
            var.at[rows].set(var_t, mode="drop"),
            m.at[rows].set(m_t, mode="drop"),
            v.at[rows].set(v_t, mode="drop"),
            t,
        )

    def step(g):
        state[0] = jitted(state[0], g.indices[:, 0], g.data)
        jax.block_until_ready(state[0])

    return Case(bcoo, step, "jnp.unique(size=n) + segment_sum + .at[] scatters")


# -------------------------------------------------------------------- torch


def _torch_cases(shape, sparse, names):
    import torch

    def coo(ids, values):
        return torch.sparse_coo_tensor(
            torch.as_tensor(ids)[None], torch.as_tensor(values), tuple(shape)
        )  # uncoalesced, duplicates kept

    def dense(ids, values):
        return torch.as_tensor(_dense_np(ids, values, shape))

    cases = {}

    def keras_case(opt_name, grad, note="", **kw):
        var = keras.Variable(initial_table(*shape), name="table")
        opt = _keras_optimizer(opt_name, **kw)
        opt.build([var])

        def step(g):
            opt.apply([g], [var])

        return Case(grad, step, note)

    def torch_case(cls, grad, note, **kw):
        p = torch.nn.Parameter(torch.tensor(initial_table(*shape)))
        opt = cls([p], lr=LR, **kw)

        def step(g):
            p.grad = g
            opt.step()

        return Case(grad, step, note)

    if "LazyAdam" in names:
        cases["LazyAdam"] = keras_case(
            "LazyAdam", coo if sparse else dense, "sparse COO in" if sparse else ""
        )
    if "LazyAdam(skip_zero_rows=False)" in names:
        cases["LazyAdam(skip_zero_rows=False)"] = keras_case(
            "LazyAdam", dense, skip_zero_rows=False
        )
    if "LazyAdam (dense grad)" in names:
        cases["LazyAdam (dense grad)"] = keras_case(
            "LazyAdam", dense, "densified gradient, as the stock Embedding gives"
        )
    if "Keras Adam" in names:
        cases["Keras Adam"] = keras_case(
            "Adam", dense, "densified gradient" if sparse else ""
        )
    if "torch SparseAdam" in names:
        cases["torch SparseAdam"] = torch_case(
            torch.optim.SparseAdam, coo, "sparse COO in", eps=EPS
        )
    if "torch Adam(fused=True)" in names:
        cases["torch Adam(fused=True)"] = torch_case(
            torch.optim.Adam, dense, "densified gradient", eps=EPS, fused=True
        )
    return cases


def _dense_np(ids, values, shape):
    out = np.zeros(shape, np.float32)
    np.add.at(out, ids, values)
    return out


SPARSE_NAMES = {
    "tensorflow": ["LazyAdam", "Keras Adam", "tfa-equivalent TF lazy step"],
    "jax": ["LazyAdam", "Keras Adam", "hand-written JAX lazy step"],
    "torch": [
        "LazyAdam",
        "Keras Adam",
        "torch SparseAdam",
        "torch Adam(fused=True)",
    ],
}
DENSE_NAMES = {
    "tensorflow": ["LazyAdam", "LazyAdam(skip_zero_rows=False)", "Keras Adam"],
    "jax": ["LazyAdam", "LazyAdam(skip_zero_rows=False)", "Keras Adam"],
    "torch": [
        "LazyAdam",
        "LazyAdam(skip_zero_rows=False)",
        "Keras Adam",
        "torch Adam(fused=True)",
    ],
}


def build(shape, sparse, names=None):
    """{name: Case} for this backend; `names` picks a subset."""
    table = SPARSE_NAMES if sparse else DENSE_NAMES
    names = names or table[BACKEND]
    maker = {"tensorflow": _tf_cases, "jax": _jax_cases, "torch": _torch_cases}
    return maker[BACKEND](tuple(shape), sparse, names)
