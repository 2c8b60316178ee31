"""Runs the whole benchmark suite and writes the results table and plot.

    python benchmarks/run_all.py            # full suite, ~10-15 min on 2 cores
    python benchmarks/run_all.py --quick    # fewer sizes and repeats, ~5 min
    python benchmarks/run_all.py --backends torch jax --skip-fit
    python benchmarks/run_all.py --report-only   # re-render from raw.json

One subprocess per backend and benchmark (KERAS_BACKEND is fixed per
process); each subprocess times its sides interleaved and writes JSON under
benchmarks/results/raw/. This driver then writes
benchmarks/results/results.md, benchmarks/results/raw.json and
benchmarks/results/step_time_vs_rows.png, and prints PASS/MISS per goal
(goals are checked, never asserted: timings on a shared machine are noisy).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

BACKENDS = ["tensorflow", "jax", "torch"]
RAW = os.path.join(common.RESULTS, "raw")
MEMORY_CASES = {
    "tensorflow": ["LazyAdam", "tfa-equivalent TF lazy step", "Keras Adam"],
    "jax": ["LazyAdam", "hand-written JAX lazy step", "Keras Adam"],
    "torch": ["LazyAdam", "torch SparseAdam", "Keras Adam"],
}
TIMEOUT = 900


def run(cmd, log):
    """Runs one benchmark subprocess, echoing its table lines."""
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(
        cmd, cwd=common.ROOT, capture_output=True, text=True, timeout=TIMEOUT
    )
    keep = [
        line
        for line in proc.stdout.splitlines()
        if line.strip() and "Warning" not in line
    ]
    print("\n".join(keep), flush=True)
    with open(log, "w") as f:
        f.write(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        print(f"  !! exit {proc.returncode} after {time.time() - t0:.0f}s:\n{tail}")
    return proc.returncode


def machine_bandwidth():
    """numpy streaming copy and random-row gather/scatter rates (GB/s)."""
    import numpy as np

    a = np.ones((common.ROWS, common.DIM), np.float32)
    b = np.empty_like(a)
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        ts.append(time.perf_counter() - t0)
    stream = 2 * a.nbytes / sorted(ts)[len(ts) // 2] / 1e9
    idx = np.random.default_rng(0).choice(common.ROWS, 65536, replace=False)
    rows = a[idx]
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        rows = a[idx]
        b[idx] = rows
        ts.append(time.perf_counter() - t0)
    # Each row is read once and written once per operation: 4 row transfers.
    random_rows = 4 * rows.nbytes / sorted(ts)[len(ts) // 2] / 1e9
    del a, b
    return {"stream_gbs": stream, "random_row_gbs": random_rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", nargs="+", default=BACKENDS)
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="pin every framework's intra-op threads (env "
                        "BENCH_THREADS); use 1 on a loaded shared machine")
    args = parser.parse_args(argv)
    os.makedirs(RAW, exist_ok=True)
    raw_path = os.path.join(common.RESULTS, "raw.json")

    if args.report_only:
        with open(raw_path) as f:
            raw = json.load(f)
        return report(raw)

    if args.threads:
        os.environ["BENCH_THREADS"] = str(args.threads)
    t_start = time.time()
    raw = {}
    if os.path.exists(raw_path):
        with open(raw_path) as f:
            raw = json.load(f)  # keep backends / parts not rerun now
    raw.setdefault("step", {})
    raw.setdefault("fit", {})
    raw.setdefault("memory", {})
    raw["machine"] = common.machine_info()
    raw["quick"] = args.quick
    raw["threads"] = args.threads or "framework default"
    raw["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    raw["load_start"] = common.load_avg()
    print(f"machine: {raw['machine']}\nload average: {raw['load_start']}")
    raw["bandwidth"] = machine_bandwidth()
    print(f"numpy bandwidth: {raw['bandwidth']}", flush=True)
    quick = ["--quick"] if args.quick else []
    py = sys.executable

    for backend in args.backends:
        if not args.skip_step:
            out = os.path.join(RAW, f"step_{backend}.json")
            if run([py, f"{HERE}/bench_step.py", "--backend", backend, "--out", out]
                   + quick, out.replace(".json", ".log")) == 0:
                raw["step"][backend] = _load(out)
        if not args.skip_fit:
            variants = [0, 1] if backend == "tensorflow" else [None]
            for jit in variants:
                key = backend if jit is None else f"{backend}-jit{jit}"
                out = os.path.join(RAW, f"fit_{key}.json")
                cmd = [py, f"{HERE}/bench_fit.py", "--backend", backend, "--out", out]
                if jit is not None:
                    cmd += ["--jit-compile", str(jit)]
                if run(cmd + quick, out.replace(".json", ".log")) == 0:
                    raw["fit"][key] = _load(out)
        if not args.skip_memory:
            raw["memory"][backend] = {}
            for case in MEMORY_CASES[backend]:
                slug = case.replace(" ", "_").replace("(", "").replace(")", "")
                out = os.path.join(RAW, f"memory_{backend}_{slug}.json")
                if run([py, f"{HERE}/bench_memory.py", "--backend", backend,
                        "--case", case, "--out", out],
                       out.replace(".json", ".log")) == 0:
                    raw["memory"][backend][case] = _load(out)
        common.write_json(raw_path, raw)
    raw["load_end"] = common.load_avg()
    raw["seconds"] = time.time() - t_start
    common.write_json(raw_path, raw)
    report(raw)
    print(f"\nsuite took {raw['seconds'] / 60:.1f} min")


def _load(path):
    with open(path) as f:
        return json.load(f)


def report(raw):
    import report as report_mod

    report_mod.write(raw)


if __name__ == "__main__":
    main()
