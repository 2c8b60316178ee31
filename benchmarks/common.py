"""Shared helpers of the benchmark scripts: numpy only, no Keras import, so
the anchor's tf.keras 2 side (tfa_bench.py) uses them too.

One Keras backend per process: `select_backend` sets KERAS_BACKEND before
Keras is imported.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The committed results (refreshed only by `run_all.py --write-results`) and
# the scratch folder every other run writes to (ignored by git).
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SCRATCH = os.path.join(RESULTS, "scratch")


def raw_dir(out):
    """The folder of the per-process JSON and logs under the output `out`."""
    return os.path.join(out, "raw")


ROWS, DIM = 1_000_000, 64  # the table
ZIPF_A = 1.2  # 4,096 ids -> ~1,350 unique rows
BATCH, IDS_PER_ROW = 1024, 8  # the recommender's batch


def select_backend(name):
    """Sets KERAS_BACKEND (before keras is imported) and thread pinning."""
    if "keras" in sys.modules:
        raise RuntimeError("select_backend must run before keras is imported")
    os.environ["KERAS_BACKEND"] = name
    threads = os.environ.get("BENCH_THREADS")
    if threads:  # pin intra-op threads of every framework (before import)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            os.environ[var] = threads
        if threads == "1":
            os.environ["XLA_FLAGS"] = (
                os.environ.get("XLA_FLAGS", "")
                + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # gpu_check.sh sets cuda
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def zipf_ids(n, rows=ROWS, a=ZIPF_A, seed=0):
    """`n` Zipf ids (a=1.2, duplicates kept) folded into [0, rows) and sent
    through a fixed permutation so the hot rows are spread over the table."""
    perm = np.random.default_rng(12345).permutation(rows)
    return perm[(np.random.default_rng(seed).zipf(a, n) - 1) % rows].astype(np.int64)


def sparse_batch(n):
    """The step benchmarks' gradient: (ids, values) for `n` Zipf ids."""
    values = np.random.default_rng(7).standard_normal((n, DIM), np.float32)
    return zipf_ids(n, seed=n), values


def fit_data(steps, rows=ROWS):
    """`steps` batches of the recommender: int32 ids (rows x 8) and labels."""
    n = BATCH * steps
    x = zipf_ids(n * IDS_PER_ROW, rows=rows, seed=11).reshape(n, IDS_PER_ROW).astype(np.int32)
    y = np.random.default_rng(3).integers(0, 2, size=(n, 1)).astype(np.float32)
    return x, y


def recommender(keras, optimizer, embedding_cls, jit_compile, rows=ROWS):
    """Embedding 1M x 64 -> mean of 8 -> Dense 64 relu -> Dense 1 sigmoid.
    `keras` is Keras 3 or tf.keras 2 (the anchor): the same code builds both."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((IDS_PER_ROW,), dtype="int32")
    h = embedding_cls(rows, DIM)(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(optimizer=optimizer, loss="binary_crossentropy", jit_compile=jit_compile)
    return model


def fit_step_times(keras, model, x, y):
    """Seconds per step of one `fit` epoch: gaps between consecutive
    `on_train_batch_end` calls (Keras pulls the loss there, so each step is
    done); the first step (iterator set-up) is dropped by the diff."""
    ends = []
    cb = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
    return np.diff(ends).tolist()


def summarize(samples_s):
    ms = [s * 1e3 for s in samples_s]
    return {
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "n": len(ms),
        "samples_ms": [round(s, 4) for s in ms],
    }


def interleaved(steps, repeats, warmup=2, budget_s=None, min_repeats=5):
    """Times zero-argument callables round-robin in this process, one call
    each per round in a rotating order, so load from other processes hits
    all sides alike. With `budget_s`, rounds are cut so the slowest side gets
    about that many seconds (at least `min_repeats` rounds). Every side runs
    the same number of steps. Returns {name: summarize(samples)}."""
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
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - t0)
    return {name: summarize(s) for name, s in samples.items()}


def step_timing(headline, quick):
    """interleaved() arguments of bench_step, shared with the tfa side."""
    return {
        "repeats": 10 if quick else 30 if headline else 20,
        "warmup": 2,
        "budget_s": (3.0 if headline else 1.0) * (1 if quick else 4),
        "min_repeats": 3 if quick else 5,
    }


def print_table(title, stats, reference=None):
    """Medians, min-max and each side's time over `reference`'s, side by side."""
    print(f"\n== {title} (load {load_avg()[0]:.2f})")
    ref = stats.get(reference)
    for name, s in stats.items():
        if not isinstance(s, dict):  # an error message
            print(f"  {name:42s} {s}")
            continue
        ratio = ""
        if isinstance(ref, dict) and name != reference:
            ratio = f"  x{s['median_ms'] / ref['median_ms']:8.2f} the time of {reference}"
        print(f"  {name:42s} {s['median_ms']:9.3f} ms [{s['min_ms']:.3f}-{s['max_ms']:.3f}]{ratio}")
    sys.stdout.flush()


def rss_kb():
    """(VmRSS, VmHWM) of this process in KiB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return tuple(int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM"))


def reset_peak_rss():
    """Resets VmHWM to the current RSS (Linux >= 4.0: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def machine_info():
    from importlib import metadata

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "cpu": platform.processor(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln for ln in f if ln.startswith("model name"))
            info["cpu"] = cpu.split(":", 1)[1].strip()
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info["versions"] = {}
    for dist in (
        "keras",
        "tensorflow-cpu",
        "tensorflow",
        "tensorflow-addons",
        "jax",
        "jaxlib",
        "torch",
        "numpy",
    ):
        try:
            info["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def code_version():
    """The package's git commit, '+dirty' if keras_lazyadam/ has changes."""

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, check=False, text=True
        ).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "keras_lazyadam")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def load_avg():
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def write_json(path, data):
    data.setdefault("code_version", code_version())
    data.setdefault("load", load_avg())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def run_json(cmd, out, timeout):
    """Runs one benchmark process with `--out out` from the repository root;
    (its JSON, or None if it failed; the finished process)."""
    proc = subprocess.run(
        cmd + ["--out", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return (None if proc.returncode else read_json(out)), proc


def error_text(e):
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"


def sparse_traffic_bytes(k, dim=DIM, itemsize=4):
    """A lazy Adam step on k unique rows reads var, m, v and the gradient row
    and writes var, m, v: 7 row transfers."""
    return 7 * k * dim * itemsize
