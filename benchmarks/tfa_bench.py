"""The anchor's old side: tf.keras 2.15 + tfa.optimizers.LazyAdam, run in the
environment that tfa_env.sh builds (anchor.py starts it there).

    benchmarks/.tfa-venv/bin/python benchmarks/tfa_bench.py step|fit [--quick] [--out F]

step: one `apply_gradients` under tf.function on the 1,000,000 x 64 float32
table, tf.IndexedSlices of 4,096 Zipf ids (common.sparse_batch, as
bench_step.py), timed as bench_step.py times its headline.
fit: model.fit per-step time of the recommender of bench_fit.py (the same
common.recommender code, here on tf.keras 2), no XLA, timed as bench_fit.py.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common  # noqa: E402
from cases import EPS  # noqa: E402
from cases import LR  # noqa: E402
from cases import anchor_batch  # noqa: E402
from cases import keras2_sparse_step  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["step", "fit"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument(
        "--data",
        help="npz of ids, values, x, y (anchor.py writes it "
        "with the main env's numpy: numpy<2 draws other Zipf ids)",
    )
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    import numpy as np

    data = np.load(args.data) if args.data else {}
    import tensorflow as tf
    import tensorflow_addons as tfa

    if args.kind == "step":
        name = "tfa LazyAdam"
        opt = tfa.optimizers.LazyAdam(learning_rate=LR, epsilon=EPS)
        step, _ = keras2_sparse_step(tf, opt, *anchor_batch(data if args.data else None))
        stats = common.interleaved({name: step}, **common.step_timing(True, args.quick))
    else:
        name = "tfa LazyAdam + Embedding"
        x, y = (data["x"], data["y"]) if args.data else common.fit_data(5 if args.quick else 8)
        model = common.recommender(
            tf.keras,
            tfa.optimizers.LazyAdam(LR, epsilon=EPS),
            tf.keras.layers.Embedding,
            jit_compile=False,
        )
        common.fit_step_times(tf.keras, model, x[: 3 * common.BATCH], y[: 3 * common.BATCH])
        samples = []
        for _ in range(args.rounds or (2 if args.quick else 3)):
            samples += common.fit_step_times(tf.keras, model, x, y)
        stats = {name: common.summarize(samples)}
    common.print_table(f"[tf {tf.__version__}, tfa {tfa.__version__}] {args.kind}", stats)
    if args.out:
        common.write_json(
            args.out,
            {"kind": args.kind, "stats": stats, "versions": common.machine_info()["versions"]},
        )


if __name__ == "__main__":
    main()
