"""Shared helpers of the benchmark scripts (no Keras import here).

Every script runs ONE Keras backend per process: `KERAS_BACKEND` must be set
before `keras` is imported, so the scripts take `--backend` and set it first
(see `select_backend`).
"""

import json
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

ROWS = 1_000_000  # table rows
DIM = 64  # table columns
ZIPF_A = 1.2  # 4,096 ids -> ~1,365 unique rows


def select_backend(name):
    """Sets KERAS_BACKEND (before keras is imported) and quiets the logs."""
    if "keras" in sys.modules:
        raise RuntimeError("select_backend must run before keras is imported")
    os.environ["KERAS_BACKEND"] = name
    threads = os.environ.get("BENCH_THREADS")
    if threads:  # pin intra-op threads of every framework (before import)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ[var] = threads
        if threads == "1":
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                " intra_op_parallelism_threads=1").strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def zipf_ids(n, rows=ROWS, a=ZIPF_A, seed=0):
    """`n` Zipf-distributed row ids (duplicates kept), hot rows scattered.

    numpy's Zipf draw (a=1.2), folded into [0, rows) and sent through a fixed
    random permutation so that the hot rows are spread over the table.
    """
    rng = np.random.default_rng(seed)
    perm = _permutation(rows)
    return perm[(rng.zipf(a, n) - 1) % rows].astype(np.int64)


_PERMS = {}


def _permutation(rows):
    if rows not in _PERMS:
        _PERMS[rows] = np.random.default_rng(12345).permutation(rows)
    return _PERMS[rows]


def summarize(samples):
    """Median, min and max (ms) of a list of seconds."""
    ms = [s * 1e3 for s in samples]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "n": len(ms),
    }


def interleaved(steps, repeats, warmup=2, budget_s=None, min_repeats=5):
    """Times callables round-robin in this process: one call each per round.

    `steps` maps a name to a zero-argument callable that runs one step and
    returns only when the work is done (callers block on JAX arrays). Every
    round calls every step once, in a rotating order, so that load from other
    processes hits all sides alike. With `budget_s`, the number of rounds is
    cut so that the slowest side gets about that many seconds (but at least
    `min_repeats` rounds).

    Returns {name: summarize(samples)} plus raw samples under "samples_ms".
    """
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    if budget_s is not None:
        slowest = 0.0
        for name in names:
            t0 = time.perf_counter()
            steps[name]()
            slowest = max(slowest, time.perf_counter() - t0)
        repeats = max(min_repeats, min(repeats, int(budget_s / max(slowest, 1e-6))))
    samples = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - t0)
    out = {}
    for name in names:
        out[name] = summarize(samples[name])
        out[name]["samples_ms"] = [round(s * 1e3, 4) for s in samples[name]]
    return out


def fmt(stat):
    return f"{stat['median_ms']:.3f} ms [{stat['min_ms']:.3f}-{stat['max_ms']:.3f}]"


def print_table(title, stats, reference=None):
    """Prints medians, min-max and each side's time over `reference`'s."""
    print(f"\n== {title}")
    ref = stats[reference]["median_ms"] if reference else None
    for name, stat in stats.items():
        if not isinstance(stat, dict) or "median_ms" not in stat:
            print(f"  {name:42s} {stat}")
            continue
        ratio = ""
        if ref is not None and name != reference:
            ratio = f"  x{stat['median_ms'] / ref:9.2f} the time of {reference}"
        print(f"  {name:42s} {fmt(stat)}{ratio}")
    sys.stdout.flush()


def rss_kb():
    """(VmRSS, VmHWM) of this process in KiB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def machine_info():
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        info["memory_gb"] = round(kb / 2**20, 1)
    except OSError:
        pass
    versions = {}
    from importlib import metadata

    for dist in ("keras", "tensorflow-cpu", "tensorflow", "jax", "jaxlib",
                 "torch", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    info["versions"] = versions
    return info


def code_version():
    """The package's git commit, '+dirty' if keras_lazyadam/ has changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "keras_lazyadam"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def load_avg():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def write_json(path, data):
    if isinstance(data, dict):
        data.setdefault("code_version", code_version())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def sparse_traffic_bytes(k, dim=DIM, itemsize=4):
    """Memory traffic of a lazy Adam step on k unique rows: read var, m, v
    and the gradient row, write var, m, v: 7 row transfers."""
    return 7 * k * dim * itemsize
