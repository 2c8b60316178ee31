"""Peak memory of ONE sparse-step case (4,096 ids), in this fresh process.

    python benchmarks/bench_memory.py --backend torch --case LazyAdam [--out F]

Or the optimizer state's size (issue 16: `second_moment`, `first_moment_dtype`):

    python benchmarks/bench_memory.py --backend jax --states [--quick] [--rows N]

one fresh process per state ("full", "row", "row-bf16", "row-int8", "int8"):
optimizer-state bytes per table element (of the table's slots, from their
shapes and dtypes), the `.keras` file size, and the peak RSS (VmHWM) of
`fit` of the benchmark recommender with a rows x 64 `LazyEmbedding` table
(1M rows; `--quick`: 50,000), against the RSS once the model is built (every
slot written once first, so that its pages are resident).
`--state NAME` runs one state in this process. No timing.

tracemalloc does not see framework allocations, so this reads VmRSS/VmHWM
from /proc/self/status: build, 3 warm-up steps, reset the high-water mark
(/proc/self/clear_refs <- 5), 10 steps, report VmHWM - VmRSS(before). A
table-sized temporary (244 MiB) raises the mark even if freed at once. One
case per process, so that no other case's buffers blur the numbers.
"""

import argparse
import gc
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--case")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out")
    parser.add_argument("--states", action="store_true", help="every state, a process each")
    parser.add_argument("--state", choices=sorted(STATES))
    parser.add_argument("--rows", type=int)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.states:
        return all_states(args)
    if args.state:
        return state_memory(args)
    if not args.case:
        parser.error("one of --case, --state, --states is required")
    common.select_backend(args.backend)
    import cases

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


# name -> LazyAdam kwargs of the compact state (issue 16)
STATES = {
    "full": {},
    "row": {"second_moment": "row"},
    "row-bf16": {"second_moment": "row", "first_moment_dtype": "bfloat16"},
    "row-int8": {"second_moment": "row", "first_moment_dtype": "int8"},
    "int8": {"first_moment_dtype": "int8"},
}


def state_memory(args):
    """One state: bytes per element, .keras size, peak RSS of fit."""
    import tempfile

    common.select_backend(args.backend)
    rows = args.rows or (50_000 if args.quick else common.ROWS)
    steps = 5 if args.quick else 20
    rss_start, _ = common.rss_kb()
    import keras

    from keras_lazyadam import LazyAdam
    from keras_lazyadam import LazyEmbedding

    optimizer = LazyAdam(1e-3, **STATES[args.state])
    model = common.recommender(keras, optimizer, LazyEmbedding, jit_compile="auto", rows=rows)
    optimizer.build(model.trainable_variables)
    table = model.layers[1].embeddings
    slot_bytes = 0
    for name in optimizer.get_slot_names():
        slot = optimizer.get_slot(table, name)
        dtype = keras.backend.standardize_dtype(slot.dtype)
        itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
        slot_bytes += int(np.prod(slot.shape)) * itemsize
    # Zero-filled buffers are not resident until written (a short fit would
    # only fault in the pages of the rows it touches): write every slot, as
    # a long run eventually does, so that RSS holds the whole state.
    for variable in optimizer.variables:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    x, y = common.fit_data(steps, rows=rows)
    gc.collect()
    rss_built, _ = common.rss_kb()
    common.reset_peak_rss()
    model.fit(x, y, batch_size=common.BATCH, epochs=1, shuffle=False, verbose=0)
    _, hwm = common.rss_kb()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        file_mb = os.path.getsize(path) / 2**20
    mb = 1 / 1024
    out = {
        "backend": args.backend,
        "state": args.state,
        "rows": rows,
        "dim": common.DIM,
        "state_bytes_per_element": slot_bytes / (rows * common.DIM),
        "table_mb": rows * common.DIM * 4 / 2**20,
        "state_mb": slot_bytes / 2**20,
        "keras_file_mb": file_mb,
        "rss_built_mb": (rss_built - rss_start) * mb,
        "fit_peak_rss_mb": hwm * mb,
        "fit_peak_over_built_mb": (hwm - rss_built) * mb,
        "fit_steps": steps,
    }
    print(json.dumps(out))
    if args.out:
        common.write_json(args.out, out)
    return out


def all_states(args):
    """Every state in a fresh process each; a table."""
    import subprocess

    rows = []
    for name in STATES:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--backend",
            args.backend,
            "--state",
            name,
        ]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--rows", str(args.rows)] if args.rows else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not rows:
        return None
    print(
        f"[{args.backend}] {rows[0]['rows']:,} x {rows[0]['dim']} table "
        f"({rows[0]['table_mb']:.0f} MB), fit of {rows[0]['fit_steps']} steps"
    )
    print(
        f"  {'state':10s} {'bytes/elem':>10s} {'state MB':>9s} {'.keras MB':>10s} "
        f"{'peak RSS MB':>12s}"
    )
    for r in rows:
        print(
            f"  {r['state']:10s} {r['state_bytes_per_element']:10.4f} {r['state_mb']:9.1f} "
            f"{r['keras_file_mb']:10.1f} {r['fit_peak_rss_mb']:12.0f}"
        )
    if args.out:
        common.write_json(args.out, {"backend": args.backend, "states": rows})
    return rows


if __name__ == "__main__":
    main()
