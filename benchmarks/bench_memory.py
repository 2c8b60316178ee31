"""Peak memory of ONE sparse-step case (4,096 ids), in this fresh process.

    python benchmarks/bench_memory.py --backend torch --case LazyAdam [--out F]

tracemalloc does not see framework allocations, so this reads VmRSS/VmHWM
from /proc/self/status: build, 3 warm-up steps, reset the high-water mark
(/proc/self/clear_refs <- 5), 10 steps, report VmHWM - VmRSS(before). A
table-sized temporary (244 MiB) raises the mark even if freed at once. One
case per process, so that no other case's buffers blur the numbers.
"""

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    common.select_backend(args.backend)
    import cases
    import numpy as np

    rss_start, _ = common.rss_kb()
    case = cases.select(cases.SPARSE, args.backend, [args.case])[args.case]
    grad, step, _ = case.builder((common.ROWS, common.DIM), True)
    ids, values = common.sparse_batch(cases.HEADLINE_IDS)
    g = grad(ids, values)
    gc.collect()
    rss_built, _ = common.rss_kb()
    common.reset_peak_rss()
    for _ in range(3):
        step(g)
    _, hwm_warm = common.rss_kb()
    gc.collect()
    common.reset_peak_rss()
    rss0, _ = common.rss_kb()
    for _ in range(args.steps):
        step(g)
    rss1, hwm = common.rss_kb()
    mb = 1 / 1024
    out = {
        "backend": args.backend,
        "case": args.case,
        "table_mb": common.ROWS * common.DIM * 4 / 2**20,
        "state_mb": (rss_built - rss_start) * mb,
        "warmup_peak_delta_mb": (hwm_warm - rss_built) * mb,
        "steady_peak_delta_mb": (hwm - rss0) * mb,
        "steady_rss_growth_mb": (rss1 - rss0) * mb,
        "unique_rows": len(np.unique(ids)),
    }
    print(
        f"[{args.backend}] {args.case}: steady peak +{out['steady_peak_delta_mb']:.1f} MB"
        f" over {args.steps} steps (table {out['table_mb']:.0f} MB; warm-up peak "
        f"+{out['warmup_peak_delta_mb']:.1f} MB; state {out['state_mb']:.0f} MB)"
    )
    if args.out:
        common.write_json(args.out, out)


if __name__ == "__main__":
    main()
