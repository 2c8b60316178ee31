"""One optimizer step: (a) sparse gradient on the 1,000,000 x 64 table, swept
over batches of Zipf ids (4,096 is the headline, 262,144 the large batch; a
case with `ids`, e.g. the compact states, runs at those batches only), (b)
dense 4,096 x 4,096 kernel. Sides: cases.CASES of that kind and backend.

    python benchmarks/bench_step.py --backend jax [--quick] [--out F]
        [--only NAME ...] [--ids N ...] [--skip-dense]

All sides live in this process and are timed round-robin; medians, min-max
and ratios are printed side by side, then the goals as PASS/MISS.
"""

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SWEEP_IDS = [64, 512, 4096, 32768, 262144]
QUICK_SWEEP_IDS = [512, 4096]


def run_kind(kind, backend, shape, batches, names, quick):
    """Builds the cases of `kind`, times them per batch; [entry per batch]."""
    import cases
    import numpy as np

    built, out = {}, []
    selected = cases.select(kind, backend, names)
    for name, case in selected.items():
        try:
            built[name] = case.builder(shape, kind == cases.SPARSE)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            built[name] = common.error_text(e)
    for ids, values in batches:
        steps, notes, errors = {}, {}, {}
        for name, b in built.items():
            if kind == cases.SPARSE and not selected[name].runs_at(len(ids)):
                continue  # e.g. the compact states: headline and large batch only
            if isinstance(b, str):
                errors[name] = b
                continue
            grad, step, notes[name] = b
            try:
                g = grad(ids, values)
                step(g)  # compile / warm, and surface errors early
                steps[name] = lambda step=step, g=g: step(g)
            except Exception as e:  # noqa: BLE001
                errors[name] = common.error_text(e)
        n, k = len(ids), len(np.unique(ids))
        headline = kind == cases.DENSE or n in (cases.HEADLINE_IDS, cases.LARGE_IDS)
        stats = common.interleaved(steps, **common.step_timing(headline, quick))
        title = (
            f"[{backend}] {kind}, {n} Zipf ids -> {k} unique rows of {shape[0]} x {shape[1]}"
            if kind == cases.SPARSE
            else f"[{backend}] {kind}, {shape[0]} x {shape[1]} kernel"
        )
        common.print_table(title, {**stats, **errors}, reference="LazyAdam")
        cases.print_goals(cases.check(kind, backend, stats, n if kind == cases.SPARSE else None))
        out.append(
            {
                "ids": n,
                "unique": k,
                "stats": stats,
                "errors": errors,
                "notes": notes,
                "headline": n == cases.HEADLINE_IDS,
                "load": common.load_avg(),
            }
        )
    hand = [built.get(h) for h in cases.JAX_HAND]
    if all(isinstance(h, tuple) for h in hand):  # same steps, same inputs
        same = all(
            np.array_equal(np.asarray(a), np.asarray(b))
            for a, b in zip(hand[0][1].state(), hand[1][1].state())
        )
        print(
            f"  sort-free vs jnp.unique hand-written JAX steps after "
            f"{len(out)} batches: {'bitwise equal' if same else 'DIFFER'}"
        )
        out[-1]["sort_free_bitwise_equal"] = same
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--only", nargs="+", help="case names (default: all)")
    parser.add_argument("--ids", nargs="+", type=int, help="batch sizes to sweep")
    parser.add_argument("--skip-dense", action="store_true")
    args = parser.parse_args(argv)
    common.select_backend(args.backend)
    import cases
    import numpy as np

    sweep = args.ids or (QUICK_SWEEP_IDS if args.quick else SWEEP_IDS)
    result = {"backend": args.backend}
    result["sparse"] = run_kind(
        cases.SPARSE,
        args.backend,
        (common.ROWS, common.DIM),
        [common.sparse_batch(n) for n in sweep],
        args.only,
        args.quick,
    )
    gc.collect()
    if not args.skip_dense:
        dense = np.random.default_rng(7).standard_normal((4096, 4096), np.float32)
        result["dense"] = run_kind(
            cases.DENSE,
            args.backend,
            dense.shape,
            [(np.arange(4096), dense)],
            args.only,
            args.quick,
        )[0]
    if args.out:
        common.write_json(args.out, result)


if __name__ == "__main__":
    main()
