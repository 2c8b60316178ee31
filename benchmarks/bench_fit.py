"""model.fit per-step time on the small recommender, LazyAdam vs Keras Adam.

    python benchmarks/bench_fit.py --backend tensorflow [--jit-compile 0|1]
        [--quick] [--out F]

Model: Embedding 1,000,000 x 64 float32 -> mean over the 8 ids of a row ->
Dense 64 relu -> Dense 1 sigmoid, binary cross-entropy, batch 1,024 rows of
8 Zipf ids. Configurations, all built and timed in this one process,
interleaved by rounds (one short `fit` each per round):

- Keras Adam + keras.layers.Embedding (the reference)
- LazyAdam + keras.layers.Embedding
- LazyAdam + keras_lazyadam.LazyEmbedding (when the package has it)
- Keras SGD + keras.layers.Embedding (a floor: what the rest of the step costs)

Per-step time is the gap between consecutive `on_train_batch_end` calls
(the callback makes Keras pull the loss, so each step is finished); the
first step of every `fit` call (iterator set-up) is dropped.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

BATCH = 1024
IDS_PER_ROW = 8


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--jit-compile", type=int, default=None,
                        help="TF only: 0 or 1 (default: backend default)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    common.select_backend(args.backend)

    import numpy as np
    import keras

    import keras_lazyadam

    have_lazy_embedding = hasattr(keras_lazyadam, "LazyEmbedding")
    steps_per_round = 5 if args.quick else 8
    rounds = 2 if args.quick else 3

    jit = args.jit_compile
    if args.backend == "tensorflow":
        jit_compile = bool(jit) if jit is not None else False
    elif args.backend == "jax":
        jit_compile = True
    else:
        jit_compile = False

    n = BATCH * steps_per_round
    rng = np.random.default_rng(3)
    x = common.zipf_ids(n * IDS_PER_ROW, seed=11).reshape(n, IDS_PER_ROW)
    x = x.astype(np.int32)
    y = rng.integers(0, 2, size=(n, 1)).astype(np.float32)

    def build(optimizer, embedding_cls):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((IDS_PER_ROW,), dtype="int32")
        h = embedding_cls(common.ROWS, common.DIM)(inputs)
        h = keras.layers.GlobalAveragePooling1D()(h)
        h = keras.layers.Dense(64, activation="relu")(h)
        outputs = keras.layers.Dense(1, activation="sigmoid")(h)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=optimizer, loss="binary_crossentropy",
                      jit_compile=jit_compile)
        return model

    configs = {
        "Keras Adam + Embedding": (
            lambda: keras.optimizers.Adam(1e-3), keras.layers.Embedding),
        "LazyAdam + Embedding": (
            lambda: keras_lazyadam.LazyAdam(1e-3), keras.layers.Embedding),
    }
    if have_lazy_embedding:
        configs["LazyAdam + LazyEmbedding"] = (
            lambda: keras_lazyadam.LazyAdam(1e-3), keras_lazyadam.LazyEmbedding)
    configs["Keras SGD + Embedding"] = (
        lambda: keras.optimizers.SGD(1e-3), keras.layers.Embedding)

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    models, errors, samples = {}, {}, {}
    for name, (make_opt, emb) in configs.items():
        try:
            model = build(make_opt(), emb)
            t0 = time.perf_counter()
            model.fit(x[: 3 * BATCH], y[: 3 * BATCH], batch_size=BATCH,
                      epochs=1, shuffle=False, verbose=0)
            print(f"  built + compiled {name} in {time.perf_counter() - t0:.1f}s",
                  flush=True)
            models[name] = model
            samples[name] = []
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    names = list(models)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            timer = StepTimer()
            models[name].fit(x, y, batch_size=BATCH, epochs=1, shuffle=False,
                             verbose=0, callbacks=[timer])
            samples[name].extend(np.diff(timer.ends).tolist())
    stats = {name: common.summarize(s) for name, s in samples.items()}
    for name in stats:
        stats[name]["samples_ms"] = [round(s * 1e3, 3) for s in samples[name]]
    tag = args.backend + (
        f", jit_compile={jit_compile}" if args.backend == "tensorflow" else "")
    common.print_table(
        f"[{tag}] model.fit per-step time, batch {BATCH} x {IDS_PER_ROW} ids "
        f"(load {common.load_avg()[0]:.2f})",
        {**stats, **errors},
        reference="Keras Adam + Embedding",
    )
    if not have_lazy_embedding:
        print("  LazyEmbedding: pending (keras_lazyadam has no LazyEmbedding)")
    if args.out:
        common.write_json(args.out, {
            "backend": args.backend,
            "jit_compile": jit_compile,
            "stats": stats,
            "errors": errors,
            "lazy_embedding_available": have_lazy_embedding,
            "load": common.load_avg(),
        })


if __name__ == "__main__":
    main()
