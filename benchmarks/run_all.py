"""Runs the suite: per backend bench_step, bench_fit (TF with and without XLA),
bench_memory and bench_real_models (each in its own process), optionally the
anchor; then writes raw.json, raw/, results.md and step_time_vs_rows.png and
prints PASS/MISS per goal measured in this run (never asserted: a shared
machine is noisy).

    python benchmarks/run_all.py [--quick] [--backends torch jax]
        [--anchor [--tfa-python PY] [--anchor-rounds N]]
        [--skip-step] [--skip-fit] [--skip-memory] [--skip-real-models]
        [--real-models-python PY] [--threads 1] [--write-results | --out DIR]
    python benchmarks/run_all.py --report-only [--write-results | --out DIR]

bench_real_models runs in this Python unless --real-models-python names
another: its keras-rs models are skipped with the reason where keras-rs is
missing (here: /work/venvs/real-models-extra-tf/bin/python has keras-rs and
keras-hub over the main env's TF, JAX and torch).

By default everything goes to benchmarks/results/scratch/ (ignored by git;
each run starts it afresh), so a run leaves the committed results and `git
status` as they were. --write-results refreshes the committed
benchmarks/results/ instead: parts not rerun keep their saved results there
(shown in the tables, without a verdict). Verdicts are printed only for what
this run measured.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import common  # noqa: E402


def run(cmd, out):
    """Runs one benchmark process, echoing its output; its JSON or None."""
    print("$ " + " ".join(cmd[1:]), flush=True)
    result, proc = common.run_json(cmd, out, timeout=1800)
    print("\n".join(ln for ln in proc.stdout.splitlines() if ln.strip()), flush=True)
    with open(out.replace(".json", ".log"), "w") as f:
        f.write(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        print(f"  !! exit {proc.returncode}:\n" + "\n".join(proc.stderr.splitlines()[-15:]))
    return result


def machine_bandwidth():
    """numpy streaming copy and random-row gather + scatter rates (GB/s)."""
    import numpy as np

    a = np.ones((common.ROWS, common.DIM), np.float32)
    b = np.empty_like(a)
    idx = np.random.default_rng(0).choice(common.ROWS, 65536, replace=False)

    def median_s(fn, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[n // 2]

    stream = 2 * a.nbytes / median_s(lambda: np.copyto(b, a), 5) / 1e9
    rows = 4 * 65536 * common.DIM * 4 / median_s(lambda: b.__setitem__(idx, a[idx]), 7) / 1e9
    return {"stream_gbs": stream, "random_row_gbs": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", nargs="+", default=list(cases.ALL))
    for part in ("step", "fit", "memory", "real-models"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    parser.add_argument(
        "--real-models-python",
        default=sys.executable,
        help="the Python of bench_real_models.py (one with keras-rs; default: this one)",
    )
    parser.add_argument("--anchor", action="store_true", help="also run anchor.py")
    parser.add_argument("--tfa-python", help="anchor.py --tfa-python (default: its .tfa-venv)")
    parser.add_argument("--anchor-rounds", type=int, help="anchor.py --rounds (default 3)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--threads", type=int, help="pin intra-op threads (BENCH_THREADS)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--write-results",
        action="store_true",
        help="refresh the committed benchmarks/results/ (default: the scratch folder)",
    )
    where.add_argument("--out", help=f"output folder (default: {common.SCRATCH})")
    args = parser.parse_args(argv)
    import report

    out = common.RESULTS if args.write_results else os.path.abspath(args.out or common.SCRATCH)
    raw_path, raw_out = os.path.join(out, "raw.json"), common.raw_dir(out)
    if args.report_only:
        if not os.path.exists(raw_path):
            parser.error(f"--report-only: no {raw_path} (run the suite first)")
        return report.write(common.read_json(raw_path), out)
    # Only the committed results merge with what they held; any other
    # output folder starts empty, so nothing in it predates this run.
    raw = {}
    if args.write_results and os.path.exists(raw_path):
        raw = common.read_json(raw_path)
        anchor_path = os.path.join(raw_out, "anchor.json")
        if "anchor" not in raw and os.path.exists(anchor_path):
            raw["anchor"] = common.read_json(anchor_path)
    elif out == common.SCRATCH:
        shutil.rmtree(out, ignore_errors=True)
    elif os.path.exists(out) and os.listdir(out):
        parser.error(f"--out {out}: not empty (give a new or empty folder)")
    os.makedirs(raw_out, exist_ok=True)
    if args.threads:
        os.environ["BENCH_THREADS"] = str(args.threads)
    t_start = time.time()
    for part in ("step", "fit", "memory", "real_models"):
        raw.setdefault(part, {})
    raw["measured"] = []  # what this run measured: the only parts with verdicts
    raw.update(
        machine=common.machine_info(),
        quick=args.quick,
        load_start=common.load_avg(),
        threads=args.threads or "framework default",
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    print(f"machine: {raw['machine']}\nload average: {raw['load_start']}")
    raw["bandwidth"] = machine_bandwidth()
    print(f"numpy bandwidth: {raw['bandwidth']}", flush=True)
    py, quick = sys.executable, ["--quick"] if args.quick else []
    for b in args.backends:
        if not args.skip_step:
            res = run(
                [py, f"{HERE}/bench_step.py", "--backend", b] + quick,
                os.path.join(raw_out, f"step_{b}.json"),
            )
            if res:
                raw["step"][b] = res
                raw["measured"].append(f"step/{b}")
        for jit in [] if args.skip_fit else ["0", "1"] if b == "tensorflow" else [None]:
            key = b if jit is None else f"{b}-jit{jit}"
            res = run(
                [py, f"{HERE}/bench_fit.py", "--backend", b]
                + quick
                + (["--jit-compile", jit] if jit else []),
                os.path.join(raw_out, f"fit_{key}.json"),
            )
            if res:
                raw["fit"][key] = res
                raw["measured"].append(f"fit/{key}")
        if not args.skip_memory:
            raw["memory"][b] = {}
            for name, case in cases.select(cases.SPARSE, b).items():
                if case.memory:
                    slug = "".join(c for c in name.replace(" ", "_") if c not in "(),")
                    res = run(
                        [py, f"{HERE}/bench_memory.py", "--backend", b, "--case", name],
                        os.path.join(raw_out, f"memory_{b}_{slug}.json"),
                    )
                    if res:
                        raw["memory"][b][name] = res
        if not args.skip_real_models:
            res = run(
                [args.real_models_python, f"{HERE}/bench_real_models.py", "--backend", b] + quick,
                os.path.join(raw_out, f"real_models_{b}.json"),
            )
            if res:
                raw["real_models"][b] = res
                raw["measured"].append(f"real_models/{b}")
        common.write_json(raw_path, raw)
    if args.anchor:
        anchor_path = os.path.join(raw_out, "anchor.json")
        if os.path.exists(anchor_path):
            os.remove(anchor_path)  # a failed anchor run must not leave the old one
        tfa = ["--tfa-python", args.tfa_python] if args.tfa_python else []
        if args.anchor_rounds:
            tfa += ["--rounds", str(args.anchor_rounds)]
        subprocess.run([py, f"{HERE}/anchor.py", "--out", out] + quick + tfa, check=False)
        if os.path.exists(anchor_path):
            raw["anchor"] = common.read_json(anchor_path)
            raw["measured"].append("anchor")
        else:
            raw.pop("anchor", None)
    raw.update(load_end=common.load_avg(), seconds=time.time() - t_start)
    common.write_json(raw_path, raw)
    report.write(raw, out)
    print(f"\nsuite took {raw['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
