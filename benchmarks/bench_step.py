"""Optimizer step alone: (a) sparse table step, rows sweep, (b) dense kernel.

    python benchmarks/bench_step.py --backend tensorflow [--quick] [--out F]

(a) 1,000,000 x 64 float32 table, batch of Zipf ids (duplicates included, so
coalescing is inside the timed step), the backend's native sparse gradient:
LazyAdam against Keras Adam and the backend's own baselines. Swept over
batch sizes for the step-time-vs-rows plot; 4,096 ids is the headline.
(b) dense 4,096 x 4,096 kernel, dense gradient.

Every side is timed in this process, interleaved round-robin; medians and
min-max are printed with ratios.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

HEADLINE_IDS = 4096
SWEEP_IDS = [64, 512, 4096, 32768, 262144]
QUICK_SWEEP_IDS = [512, 4096, 32768]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args(argv)
    common.select_backend(args.backend)

    import numpy as np

    import cases as cases_mod

    result = {"backend": args.backend, "sparse": [], "dense": None}
    t_start = time.time()

    # (a) sparse step, swept over batch sizes.
    shape = (common.ROWS, common.DIM)
    sparse_cases = cases_mod.build(shape, sparse=True)
    rng = np.random.default_rng(7)
    sweep = QUICK_SWEEP_IDS if args.quick else SWEEP_IDS
    for n in sweep:
        ids = common.zipf_ids(n, seed=n)
        k = int(len(np.unique(ids)))
        values = rng.standard_normal((n, common.DIM), np.float32)
        steps, notes, errors = {}, {}, {}
        for name, case in sparse_cases.items():
            try:
                g = case.grad(ids, values)
                case.step(g)  # compile / warm, and surface errors early
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                continue
            steps[name] = functools_partial(case.step, g)
            notes[name] = case.note
        headline = n == HEADLINE_IDS
        if headline:
            repeats = 10 if args.quick else 30
            budget = 3.0 if args.quick else 12.0
        else:
            repeats = 10 if args.quick else 20
            budget = 1.0 if args.quick else 3.0
        stats = common.interleaved(
            steps, repeats=repeats, warmup=2, budget_s=budget,
            min_repeats=3 if args.quick else 5,
        )
        title = (
            f"[{args.backend}] sparse step, {n} Zipf ids -> {k} unique rows "
            f"of {common.ROWS} x {common.DIM} (load {common.load_avg()[0]:.2f})"
        )
        common.print_table(title, {**stats, **errors}, reference="LazyAdam")
        result["sparse"].append(
            {
                "ids": n,
                "unique": k,
                "stats": stats,
                "errors": errors,
                "notes": notes,
                "headline": headline,
                "load": common.load_avg(),
            }
        )
    # Free the tables before the dense part.
    del sparse_cases, steps
    import gc

    gc.collect()

    # (b) dense kernel.
    if not args.skip_dense:
        dshape = (4096, 4096)
        dense_cases = cases_mod.build(dshape, sparse=False)
        ids = np.arange(dshape[0])
        values = rng.standard_normal(dshape, np.float32)
        steps, notes, errors = {}, {}, {}
        for name, case in dense_cases.items():
            try:
                g = case.grad(ids, values)
                case.step(g)
            except Exception as e:  # noqa: BLE001
                errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                continue
            steps[name] = functools_partial(case.step, g)
            notes[name] = case.note
        stats = common.interleaved(
            steps,
            repeats=10 if args.quick else 30,
            warmup=2,
            budget_s=3.0 if args.quick else 10.0,
        )
        common.print_table(
            f"[{args.backend}] dense step, 4096 x 4096 kernel "
            f"(load {common.load_avg()[0]:.2f})",
            {**stats, **errors},
            reference="LazyAdam",
        )
        result["dense"] = {"stats": stats, "errors": errors, "notes": notes,
                           "load": common.load_avg()}
    result["seconds"] = time.time() - t_start
    if args.out:
        common.write_json(args.out, result)


def functools_partial(fn, arg):
    def call():
        return fn(arg)

    return call


if __name__ == "__main__":
    main()
