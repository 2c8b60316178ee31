"""model.fit per-step time of the recommender (common.recommender: Embedding
1,000,000 x 64 <- 1,024 x 8 Zipf ids, mean, Dense 64, Dense 1), one side per
FIT case of cases.CASES: Keras Adam, LazyAdam with the stock Embedding and
with LazyEmbedding, Keras SGD (a floor: the rest of the step).

    python benchmarks/bench_fit.py --backend torch [--jit-compile 0|1]
        [--quick] [--only NAME ...] [--rounds R] [--out F]

All sides are built and compiled in this process, then timed interleaved by
rounds (one short `fit` each per round); medians, ratios and goals printed.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument(
        "--jit-compile",
        type=int,
        default=None,
        help="TF only: 0 or 1 (default 0, Keras 3's default on CPU)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", help="case names (default: all)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    common.select_backend(args.backend)
    import cases
    import keras

    jit_compile = {"tensorflow": bool(args.jit_compile), "jax": True}.get(args.backend, False)
    key = f"tensorflow-jit{int(jit_compile)}" if args.backend == "tensorflow" else args.backend
    x, y = common.fit_data(5 if args.quick else 8)
    models, errors, samples = {}, {}, {}
    for name, case in cases.select(cases.FIT, args.backend, args.only).items():
        try:
            t0 = time.perf_counter()
            models[name] = common.recommender(keras, *case.builder(), jit_compile)
            common.fit_step_times(keras, models[name], x[: 3 * common.BATCH], y[: 3 * common.BATCH])
            print(f"  built + compiled {name} in {time.perf_counter() - t0:.1f}s", flush=True)
            samples[name] = []
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            errors[name] = common.error_text(e)
            models.pop(name, None)
    names = list(models)
    for r in range(args.rounds or (2 if args.quick else 5)):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name] += common.fit_step_times(keras, models[name], x, y)
    stats = {name: common.summarize(s) for name, s in samples.items()}
    common.print_table(
        f"[{key}] model.fit per-step time, batch {common.BATCH} x {common.IDS_PER_ROW} ids",
        {**stats, **errors},
        reference="Keras Adam + Embedding",
    )
    cases.print_goals(cases.check(cases.FIT, key, stats))
    if args.out:
        common.write_json(
            args.out,
            {
                "backend": args.backend,
                "key": key,
                "jit_compile": jit_compile,
                "stats": stats,
                "errors": errors,
                "lazy_embedding_available": True,
            },
        )


if __name__ == "__main__":
    main()
