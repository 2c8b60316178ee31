"""The anchor: the old stack (tf.keras 2.15 + tfa.optimizers.LazyAdam, in the
environment of tfa_env.sh) and tfa's rule on the main env's TF (tf_keras'
legacy Adam, tfa_rule_bench.py) against LazyAdam on Keras 3's TensorFlow
backend, in alternating processes (the stacks cannot share one).

    python benchmarks/anchor.py [--rounds 3] [--quick] [--tfa-python PY]

Round r runs, each in a fresh process: tfa step; tfa's rule on the same TF
and the LazyAdam step (bench_step.py --only LazyAdam --ids 4096), in turns
one first then the other; tfa fit; LazyAdam fit with the stock Embedding and
with LazyEmbedding (bench_fit.py, one process, no XLA: Keras 3's default on
CPU). Ids, values and fit data are drawn once here and handed to the tfa
sides (numpy<2 draws other Zipf ids). Per side: the median of its per-round
medians [min-max of those], and those per-round medians (`per_round_ms`,
None where a round failed); ratios LazyAdam/tfa side by side; goals
PASS/MISS, LazyAdam against tfa's rule on the same TF also in the worst
round. Writes OUT/raw/anchor.json (default OUT: the scratch folder
benchmarks/results/scratch/, ignored by git; run_all.py --anchor passes its
own), which report.py renders. ~5 min for 3 rounds on 2 cores.
"""

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import common  # noqa: E402

TFA_PY = os.path.join(HERE, ".tfa-venv", "bin", "python")


def sides(tfa_py, data, quick, r):
    """Round r's processes: (kind, command)."""
    q = ["--quick"] if quick else []
    step = [
        sys.executable,
        f"{HERE}/bench_step.py",
        "--backend",
        "tensorflow",
        "--only",
        "LazyAdam",
        "--ids",
        str(cases.HEADLINE_IDS),
        "--skip-dense",
    ]
    fit = [
        sys.executable,
        f"{HERE}/bench_fit.py",
        "--backend",
        "tensorflow",
        "--jit-compile",
        "0",
        "--only",
        "LazyAdam + Embedding",
        "LazyAdam + LazyEmbedding",
    ]
    same_tf = [
        ("step", [sys.executable, f"{HERE}/tfa_rule_bench.py", "--data", data] + q),
        ("step", step + q),
    ]
    return [
        ("step", [tfa_py, f"{HERE}/tfa_bench.py", "step", "--data", data] + q),
        *same_tf[:: 1 if r % 2 == 0 else -1],  # which goes first, in turns
        ("fit", [tfa_py, f"{HERE}/tfa_bench.py", "fit", "--data", data] + q),
        ("fit", fit + q),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tfa-python", default=TFA_PY)
    parser.add_argument("--out", default=common.SCRATCH, help="output folder (raw/anchor.json)")
    args = parser.parse_args(argv)
    if not os.path.exists(args.tfa_python):
        subprocess.run(["bash", f"{HERE}/tfa_env.sh"], check=True)
    import numpy as np

    tmp = tempfile.mkdtemp(prefix="anchor-")
    data = os.path.join(tmp, "data.npz")
    x, y = common.fit_data(5 if args.quick else 8)
    np.savez(
        data, x=x, y=y, **dict(zip(("ids", "values"), common.sparse_batch(cases.HEADLINE_IDS)))
    )
    rounds = {"step": {}, "fit": {}}  # kind -> side -> {round: stats}
    load, like_with_like = [common.load_avg()], []
    for r in range(args.rounds):
        for i, (kind, cmd) in enumerate(sides(args.tfa_python, data, args.quick, r)):
            out = os.path.join(tmp, f"{r}-{i}.json")
            res, proc = common.run_json(cmd, out, timeout=900)
            if res is None:
                print(
                    f"!! round {r}: {' '.join(cmd[1:3])} exit {proc.returncode}:\n"
                    + "\n".join(proc.stderr.splitlines()[-10:])
                )
                continue
            if "max_abs_diff_vs_lazyadam" in res:
                like_with_like.append(res["max_abs_diff_vs_lazyadam"])
            for name, s in (res.get("stats") or res["sparse"][0]["stats"]).items():
                rounds[kind].setdefault(name, {})[r] = s
                print(
                    f"round {r}: {kind} {name:28s} {s['median_ms']:8.3f} ms "
                    f"(load {res['load'][0]:.2f})",
                    flush=True,
                )
        load.append(common.load_avg())
    result = {
        "rounds": args.rounds,
        "quick": args.quick,
        "per_round": {k: {n: list(p.values()) for n, p in v.items()} for k, v in rounds.items()},
        "load_per_round": load,
        # tfa_rule_bench's check: max |tfa rule - LazyAdam| after 3 steps, per round
        "tfa_rule_max_abs_diff": like_with_like,
        "stats": {},
        "goals": [],
        "versions": {"main": common.machine_info()["versions"]},
    }
    for kind, goal_kind, ref in (
        ("step", cases.ANCHOR_STEP, cases.TFA_STEP),
        ("fit", cases.ANCHOR_FIT, "tfa LazyAdam + Embedding"),
    ):
        stats = {}
        for name, per in rounds[kind].items():
            stats[name] = common.summarize([s["median_ms"] / 1e3 for s in per.values()])
            stats[name]["per_round_ms"] = [
                per[r]["median_ms"] if r in per else None for r in range(args.rounds)
            ]
        result["stats"][kind] = stats
        common.print_table(
            f"anchor {kind}: median of {args.rounds} per-process medians [min-max of them]",
            stats,
            reference=ref,
        )
        result["goals"] += cases.check(goal_kind, "tensorflow", stats)
    step = result["stats"]["step"]
    for lazy, where in (("LazyAdam", "processes apart"), (cases.SAME_PROCESS, "same process")):
        if lazy not in step or cases.TFA_RULE not in step:
            continue
        print(f"\nper round, {lazy} / tfa rule on the same TF ({where}):")
        for r, (a, b) in enumerate(
            zip(step[lazy]["per_round_ms"], step[cases.TFA_RULE]["per_round_ms"])
        ):
            print(f"  round {r}: " + (f"{a / b:.2f}x ({a:.3f} / {b:.3f} ms)" if a and b else "—"))
    if like_with_like:
        worst = max(max(d.values()) for d in like_with_like)
        print(f"tfa rule vs LazyAdam after 3 steps: max abs difference {worst:.2e}")
    print("\n== anchor goals")
    cases.print_goals(result["goals"])
    os.makedirs(common.raw_dir(args.out), exist_ok=True)
    common.write_json(os.path.join(common.raw_dir(args.out), "anchor.json"), result)


if __name__ == "__main__":
    main()
