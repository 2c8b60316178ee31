"""The anchor's same-TF side: tfa 0.23's LazyAdam rule (its
`_resource_apply_sparse`, copied below) on `tf_keras.optimizers.legacy.Adam`,
run on the main environment's TensorFlow (`pip install --no-deps
tf_keras==<TF's version>`: tf_keras asks for `tensorflow`, the main env has
`tensorflow-cpu`). anchor.py starts it in its own process.

    python benchmarks/tfa_rule_bench.py [--data F] [--quick] [--out F]

Times one `apply_gradients` under tf.function on the 1,000,000 x 64 float32
table, tf.IndexedSlices of 4,096 Zipf ids (the anchor's ids and values, or
common.sparse_batch), exactly as bench_step.py times its headline
(common.interleaved with common.step_timing(True, quick)), round-robin with
LazyAdam's step on its own copy of the table in this same process (side
"LazyAdam, in the same process"; --rule-only leaves it out): the step time
of either moves by up to 2x from one process to the next, alike for both
(measured), so the ratio within a process is the fair one. Then, after the
timing, checks like with like: 3 steps of this optimizer and of LazyAdam
(Keras 3, TF backend) on a 10,000 x 64 table with the same duplicated ids;
prints and records the max abs differences of var, m, v (exit 1 above
1e-6).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common  # noqa: E402
from cases import EPS  # noqa: E402
from cases import LR  # noqa: E402
from cases import SAME_PROCESS  # noqa: E402
from cases import TFA_RULE  # noqa: E402
from cases import anchor_batch  # noqa: E402
from cases import initial_table  # noqa: E402
from cases import keras2_sparse_step  # noqa: E402

CHECK_ROWS, CHECK_STEPS, TOLERANCE = 10_000, 3, 1e-6


def tfa_rule_adam(tf, tf_keras):
    """tf_keras' legacy Adam with tfa 0.23's sparse rule."""

    class TfaRuleAdam(tf_keras.optimizers.legacy.Adam):
        # The three methods below are copied from tensorflow-addons 0.23.0,
        # tensorflow_addons/optimizers/lazy_adam.py (class LazyAdam),
        # Copyright 2019 The TensorFlow Authors, Apache License 2.0
        # (http://www.apache.org/licenses/LICENSE-2.0); unchanged but for
        # formatting. The legacy optimizer coalesces duplicate indices before
        # calling it (_resource_apply_sparse_duplicate_indices), as for tfa.
        def _resource_apply_sparse(self, grad, var, indices):
            var_dtype = var.dtype.base_dtype
            lr_t = self._decayed_lr(var_dtype)
            beta_1_t = self._get_hyper("beta_1", var_dtype)
            beta_2_t = self._get_hyper("beta_2", var_dtype)
            local_step = tf.cast(self.iterations + 1, var_dtype)
            beta_1_power = tf.math.pow(beta_1_t, local_step)
            beta_2_power = tf.math.pow(beta_2_t, local_step)
            epsilon_t = tf.convert_to_tensor(self.epsilon, var_dtype)
            lr = lr_t * tf.math.sqrt(1 - beta_2_power) / (1 - beta_1_power)

            # \\(m := beta1 * m + (1 - beta1) * g_t\\)
            m = self.get_slot(var, "m")
            m_t_slice = beta_1_t * tf.gather(m, indices) + (1 - beta_1_t) * grad
            m_update_op = self._resource_scatter_update(m, indices, m_t_slice)

            # \\(v := beta2 * v + (1 - beta2) * (g_t * g_t)\\)
            v = self.get_slot(var, "v")
            v_t_slice = beta_2_t * tf.gather(v, indices) + (1 - beta_2_t) * tf.math.square(grad)
            v_update_op = self._resource_scatter_update(v, indices, v_t_slice)

            # \\(variable += -learning_rate * m_t / (epsilon_t + sqrt(v_t))\\)
            var_slice = lr * m_t_slice / (tf.math.sqrt(v_t_slice) + epsilon_t)
            var_update_op = self._resource_scatter_sub(var, indices, var_slice)

            return tf.group(*[var_update_op, m_update_op, v_update_op])

        def _resource_scatter_update(self, resource, indices, update):
            return self._resource_scatter_operate(
                resource, indices, update, tf.raw_ops.ResourceScatterUpdate
            )

        def _resource_scatter_sub(self, resource, indices, update):
            return self._resource_scatter_operate(
                resource, indices, update, tf.raw_ops.ResourceScatterSub
            )

        def _resource_scatter_operate(self, resource, indices, update, resource_scatter_op):
            resource_update_kwargs = {
                "resource": resource.handle,
                "indices": indices,
                "updates": update,
            }

            return resource_scatter_op(**resource_update_kwargs)

    return TfaRuleAdam


def like_with_like(tf, rule_cls, ids, values):
    """Max abs differences (var, m, v) after CHECK_STEPS steps of the tfa rule
    and of LazyAdam (Keras 3, TF backend), same table, ids and values."""
    import keras  # Keras 3 (main() selected its TF backend)

    from keras_lazyadam import LazyAdam

    shape = (CHECK_ROWS, common.DIM)
    ids = ids % CHECK_ROWS  # still duplicated: coalescing is compared too
    g = tf.IndexedSlices(tf.constant(values), tf.constant(ids), tf.constant(shape, tf.int64))
    rule_var = tf.Variable(initial_table(shape))
    rule = rule_cls(learning_rate=LR, epsilon=EPS)
    lazy_var = keras.Variable(initial_table(shape), name="table")
    lazy = LazyAdam(learning_rate=LR, epsilon=EPS)
    lazy.build([lazy_var])
    for _ in range(CHECK_STEPS):
        rule.apply_gradients([(g, rule_var)])
        lazy.apply([g], [lazy_var])
    pairs = {"var": (rule_var, lazy_var)}
    pairs.update({s: (rule.get_slot(rule_var, s), lazy.get_slot(lazy_var, s)) for s in ("m", "v")})
    return {
        k: float(tf.reduce_max(tf.abs(tf.convert_to_tensor(a) - tf.convert_to_tensor(b))))
        for k, (a, b) in pairs.items()
    }


def lazyadam_step(tf, shape, g):
    """LazyAdam's step (Keras 3, TF backend) on its own copy of the table,
    timed in this process alternately with the rule's: what differs from
    one process to the next (it moves both alike) drops out of the ratio."""
    import keras

    from keras_lazyadam import LazyAdam

    var = keras.Variable(initial_table(shape), name="table")
    opt = LazyAdam(learning_rate=LR, epsilon=EPS)
    opt.build([var])

    @tf.function
    def step(g):
        opt.apply([g], [var])

    step(g)
    return lambda: step(g)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", help="npz of ids, values (anchor.py writes it)")
    parser.add_argument("--out")
    parser.add_argument(
        "--rule-only", action="store_true", help="time tfa's rule alone, without LazyAdam"
    )
    args = parser.parse_args(argv)
    common.select_backend("tensorflow")  # threads as bench_step; Keras 3 for the check
    import numpy as np
    import tensorflow as tf
    import tf_keras

    if tf_keras.__version__.rsplit(".", 1)[0] != tf.__version__.rsplit(".", 1)[0]:
        sys.exit(f"tf_keras {tf_keras.__version__} does not match TensorFlow {tf.__version__}")
    rule_cls = tfa_rule_adam(tf, tf_keras)
    shape = (common.ROWS, common.DIM)
    data = np.load(args.data) if args.data else None
    ids, values = anchor_batch(data)
    step, g = keras2_sparse_step(tf, rule_cls(learning_rate=LR, epsilon=EPS), ids, values)
    sides = {TFA_RULE: step}
    if not args.rule_only:
        sides[SAME_PROCESS] = lazyadam_step(tf, shape, g)
    stats = common.interleaved(sides, **common.step_timing(True, args.quick))
    common.print_table(f"[tf {tf.__version__}, tf_keras {tf_keras.__version__}] step", stats)
    diff = like_with_like(tf, rule_cls, ids, values)
    worst = max(diff.values())
    print(
        f"  like with like: after {CHECK_STEPS} steps, max |tfa rule - LazyAdam|: "
        + ", ".join(f"{k} {d:.2e}" for k, d in diff.items())
    )
    if args.out:
        common.write_json(
            args.out,
            {
                "kind": "step",
                "stats": stats,
                "max_abs_diff_vs_lazyadam": diff,
                "versions": {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__},
            },
        )
    if worst > TOLERANCE:
        sys.exit(f"tfa rule and LazyAdam differ by {worst:.2e} (> {TOLERANCE}): not like with like")


if __name__ == "__main__":
    main()
