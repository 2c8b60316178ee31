"""Peak memory of ONE optimizer step case, in this (fresh) process.

    python benchmarks/bench_memory.py --backend torch --case LazyAdam [--out F]

Method. Framework allocations (TF's CPU allocator, XLA buffers, torch CPU
tensors) are invisible to `tracemalloc`, so this measures the process's
resident set from /proc/self/status. The case (1,000,000 x 64 float32 table,
its slots, a 4,096-Zipf-id gradient) is built and run for 3 warm-up steps
(compilation, first-touch of the slots); then the peak RSS mark is reset
(`/proc/self/clear_refs` <- 5 sets VmHWM to the current VmRSS), 10 more steps
run, and the report is VmHWM - VmRSS(before): the most memory the steady
steps needed on top of what was resident. A temporary as large as the table
(256 MB) shows up as >= 256 MB even if it is freed at once, because big
blocks are mmap-ed and unmapped by malloc (and returned by the frameworks'
CPU allocators), and VmHWM records the high-water mark. One case per process
so that no other case's buffers or caches blur the numbers. Where the
framework reports its own peak (torch/JAX device memory stats on CPU: none
today) it is added.
"""

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

N_IDS = 4096


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    common.select_backend(args.backend)

    import resource

    import numpy as np

    import cases as cases_mod

    rss_start, _ = common.rss_kb()
    case = cases_mod.build((common.ROWS, common.DIM), True, [args.case])[args.case]
    ids = common.zipf_ids(N_IDS, seed=N_IDS)
    values = np.random.default_rng(7).standard_normal((N_IDS, common.DIM), np.float32)
    grad = case.grad(ids, values)
    gc.collect()
    rss_built, _ = common.rss_kb()
    common.reset_peak_rss()
    for _ in range(3):
        case.step(grad)
    rss_warm, hwm_warm = common.rss_kb()
    gc.collect()
    common.reset_peak_rss()
    rss0, _ = common.rss_kb()
    for _ in range(args.steps):
        case.step(grad)
    rss1, hwm = common.rss_kb()
    table_mb = common.ROWS * common.DIM * 4 / 2**20
    out = {
        "backend": args.backend,
        "case": args.case,
        "table_mb": table_mb,
        "state_mb": (rss_built - rss_start) / 1024,
        "warmup_peak_delta_mb": (hwm_warm - rss_built) / 1024,
        "steady_peak_delta_mb": (hwm - rss0) / 1024,
        "steady_rss_growth_mb": (rss1 - rss0) / 1024,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "unique_rows": int(len(np.unique(ids))),
    }
    if args.backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats:
            out["jax_memory_stats"] = {
                k: v for k, v in stats.items() if "peak" in k or "in_use" in k
            }
    print(
        f"[{args.backend}] {args.case}: steady peak +{out['steady_peak_delta_mb']:.1f} MB"
        f" over {args.steps} steps (table {table_mb:.0f} MB; warm-up peak "
        f"+{out['warmup_peak_delta_mb']:.1f} MB; state {out['state_mb']:.0f} MB)"
    )
    if args.out:
        common.write_json(args.out, out)


if __name__ == "__main__":
    main()
