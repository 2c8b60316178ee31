"""Renders results.md and step_time_vs_rows.png in an output folder from the
raw JSON of run_all.py (with the anchor's, if it ran), and prints PASS/MISS
per goal of cases.GOALS, for the parts measured in the run that wrote the
JSON only (raw["measured"]): parts kept from an earlier run appear in the
tables, never in a verdict."""

import os

import cases
import common

PNG, MD = "step_time_vs_rows.png", "results.md"
FIT_LABEL = {
    "tensorflow-jit0": "tensorflow (no XLA)",
    "tensorflow-jit1": "tensorflow (jit_compile=True)",
}


def _cell(s):
    return f"{s['median_ms']:.2f} ({s['min_ms']:.2f}–{s['max_ms']:.2f})"


def _table(header, rows):
    return (
        [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
        + [f"| {' | '.join(map(str, r))} |" for r in rows]
        + [""]
    )


def _backends(d):
    return [b for b in cases.ALL if b in d]


def _anchor(raw):
    return raw.get("anchor")


def measured(raw):
    """The parts ("step/jax", "fit/tensorflow-jit0", "anchor", ...) that the
    run which wrote `raw` measured itself."""
    return set(raw.get("measured", ()))


def goals(raw):
    """Verdicts of the parts measured in `raw`'s own run, and the number of
    parts shown but kept from an earlier run (no verdict)."""
    rows, done, kept = [], measured(raw), 0
    for b in _backends(raw.get("step", {})):
        if f"step/{b}" not in done:
            kept += 1
            continue
        for entry in raw["step"][b]["sparse"]:
            rows += cases.check(cases.SPARSE, b, entry["stats"], entry["ids"])
        if raw["step"][b].get("dense"):
            rows += cases.check(cases.DENSE, b, raw["step"][b]["dense"]["stats"], None)
    for key in sorted(raw.get("fit", {})):
        if f"fit/{key}" not in done:
            kept += 1
            continue
        rows += cases.check(cases.FIT, key, raw["fit"][key]["stats"])
    for b in _backends(raw.get("real_models", {})):
        if f"real_models/{b}" not in done:
            kept += 1
            continue
        for model, stats in raw["real_models"][b]["results"].items():
            if isinstance(stats, dict):  # else skipped or failed: in the table
                rows += cases.check(cases.REAL, b, stats, None, scope=model)
    anchor = _anchor(raw)
    if anchor and "anchor" in done and "stats" in anchor:  # by today's cases.py
        rows += cases.check(cases.ANCHOR_STEP, "tensorflow", anchor["stats"]["step"])
        rows += cases.check(cases.ANCHOR_FIT, "tensorflow", anchor["stats"]["fit"])
    elif anchor and "anchor" in done:
        rows += [tuple(g) for g in anchor["goals"]]
    elif anchor:
        kept += 1
    return rows, kept


def write(raw, out):
    os.makedirs(out, exist_ok=True)
    plot(raw, os.path.join(out, PNG))
    rows, kept = goals(raw)
    print(f"\n== goals (of the parts the run of {raw.get('date', '?')} measured)")
    cases.print_goals(rows)
    if not rows:
        print("  (none: no part with a goal was measured in this run)")
    if kept:
        print(f"  ({kept} part(s) kept from an earlier run: shown in the tables, not checked)")
    with open(os.path.join(out, MD), "w") as f:
        f.write("\n".join(render(raw, rows, kept)))
    print(f"\nwrote {out}/{MD} and {PNG}")


def _sides(entries, ref, keep=lambda entry: True, ref_of=None):
    """Rows (*label, name, cell, time/ref, note) of [(label, entry)]."""
    rows = []
    for label, e in entries:
        if not keep(e):
            continue
        r = ref_of(e) if ref_of else e["stats"].get(ref, {}).get("median_ms")
        for name, s in e["stats"].items():
            rows.append(
                (
                    *label,
                    name,
                    _cell(s),
                    f"{s['median_ms'] / r:.2f}x" if r else "—",
                    e.get("notes", {}).get(name, ""),
                )
            )
        rows += [(*label, name, "fails", "—", f"`{err}`") for name, err in e["errors"].items()]
    return rows


def render(raw, goal_rows, kept=0):
    m, step, fit = raw["machine"], raw.get("step", {}), raw.get("fit", {})
    mem = raw.get("memory", {})
    versions = sorted(
        {str(p.get("code_version", "?")) for sec in (step, fit) for p in sec.values()}
    )
    L = [
        "# keras-lazyadam benchmark results\n",
        f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {m.get('memory_gb', '?')} GB RAM; "
        f"{m['platform']}; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".  \n"
        f"Run: {raw.get('date', '?')}, `python benchmarks/run_all.py"
        f"{' --quick' if raw.get('quick') else ''}`, threads: {raw.get('threads')}, load "
        f"average {_load(raw.get('load_start'))} at start, {_load(raw.get('load_end'))} at end "
        "(a shared machine).  \nMedians in ms (min–max) over interleaved repeats; every "
        "comparison ran in one process (the anchor: alternating processes). Ratios are "
        f"medians over medians. keras_lazyadam commit: {', '.join(versions)}.\n",
        "## Goals (checked, never asserted)\n",
    ]
    if kept:
        L.append(
            f"Only the parts measured in this run are checked; {kept} part(s) in the tables "
            "below were kept from an earlier run and have no verdict here.\n"
        )
    L += _table(["goal", "measured", "verdict"], [(g, x, f"**{v}**") for g, x, v in goal_rows])
    if step:
        L.append(
            "## (a) Optimizer step, sparse gradient\n\n1,000,000 × 64 float32 table; "
            "Zipf ids (a=1.2, duplicates kept: coalescing is inside the timed step); "
            "the backend's native sparse gradient where the side takes one. Rows at "
            f"{cases.HEADLINE_IDS:,} (headline) and {cases.LARGE_IDS:,} ids; all sizes "
            "in the plot.\n"
        )
        entries = [
            ((b, f"{e['ids']} → {e['unique']}"), e)
            for b in _backends(step)
            for e in step[b]["sparse"]
        ]
        L += _table(
            ["backend", "ids → rows", "side", "step ms", "time / LazyAdam", "note"],
            _sides(
                entries, "LazyAdam", lambda e: e["ids"] in (cases.HEADLINE_IDS, cases.LARGE_IDS)
            ),
        )
        L.append(f"![step time vs rows touched]({PNG})\n")
        L.append("## (b) Optimizer step, dense 4,096 × 4,096 kernel\n")
        L += _table(
            ["backend", "side", "step ms", "time / LazyAdam", "note"],
            _sides(
                [((b,), step[b]["dense"]) for b in _backends(step) if step[b].get("dense")],
                "LazyAdam",
            ),
        )
    if fit:
        L.append(
            "## (c) model.fit per-step time, recommender\n\nEmbedding 1,000,000 × 64 "
            "→ mean of 8 ids → Dense 64 → Dense 1, batch 1,024 × 8 Zipf ids; gaps "
            "between `on_train_batch_end` calls; Keras SGD is the floor.\n"
        )
        L += _table(
            ["backend", "side", "step ms", "time / Keras Adam", "note"],
            _sides(
                [((FIT_LABEL.get(k, k),), fit[k]) for k in sorted(fit)], "Keras Adam + Embedding"
            ),
        )
    real = raw.get("real_models", {})
    if real:
        L += _real_models(real)
    anchor = _anchor(raw)
    if anchor:
        L += _anchor_section(anchor)
    if step:
        bw = raw.get("bandwidth", {})
        L.append(
            "## (f) Bandwidth and memory\n\nA lazy step on k unique rows moves at least "
            "7·k·D·4 bytes (read var, m, v, gradient row; write var, m, v; the compact "
            "states less: `cases.traffic_bytes`). numpy on this "
            f"machine: streaming copy {bw.get('stream_gbs', float('nan')):.1f} GB/s, random "
            f"256-byte rows {bw.get('random_row_gbs', float('nan')):.1f} GB/s.\n"
        )
        rows = []
        for b in _backends(step):
            for e in step[b]["sparse"]:
                if e["ids"] != cases.HEADLINE_IDS:
                    continue
                for n, s in e["stats"].items():
                    if "Keras" in n or "fused" in n:
                        continue
                    nbytes = cases.traffic_bytes(n, e["unique"], common.DIM)
                    rows.append(
                        (
                            b,
                            n,
                            e["unique"],
                            f"{nbytes / 1e6:.2f} MB",
                            f"{s['median_ms']:.3f}",
                            f"{nbytes / s['median_ms'] / 1e6:.2f}",
                            f"{nbytes / bw.get('stream_gbs', float('nan')) / 1e6:.3f}",
                        )
                    )
        L += _table(
            ["backend", "side", "k", "bytes", "step ms", "achieved GB/s", "bound ms (stream)"], rows
        )
    if mem:
        L.append(
            "Peak memory of one step (`bench_memory.py`, one case per fresh process): "
            "VmHWM − VmRSS over 10 steady steps after 3 warm-up steps; a table-sized "
            "temporary (244 MiB) would show.\n"
        )
        L += _table(
            [
                "backend",
                "case",
                "steady peak (MiB)",
                "RSS growth (MiB)",
                "warm-up peak (MiB)",
                "table-sized temporary?",
            ],
            [
                (
                    b,
                    c,
                    f"{r['steady_peak_delta_mb']:.1f}",
                    f"{r['steady_rss_growth_mb']:.1f}",
                    f"{r['warmup_peak_delta_mb']:.1f}",
                    "yes" if r["steady_peak_delta_mb"] >= 0.9 * r["table_mb"] else "no",
                )
                for b in _backends(mem)
                for c, r in mem[b].items()
            ],
        )
    L.append("Reproduce: see `benchmarks/README.md`.\n")
    return L


def _real_models(real):
    """(d): per backend x model, each side's train_on_batch step and its
    held-out loss after the same steps."""
    first = real[_backends(real)[0]]
    L = [
        "## (d) Real models: LazyAdam vs Keras Adam\n\n`bench_real_models.py`: models as a "
        "new user writes them (DCN with MovieLens-sized tables, and with one 50,000-row "
        "table; a nested two-tower model; a 200,000-row text classifier; keras-rs DLRM and "
        "DCN), synthetic labels from a hidden per-id score. The three sides' "
        f"`train_on_batch` steps alternate in one process ({first.get('steps', '?')} timed "
        "steps each; TF without XLA, JAX jitted, torch eager); held-out loss after those "
        "same steps on the same data.\n"
    ]
    rows = []
    for b in _backends(real):
        for model, stats in real[b]["results"].items():
            if not isinstance(stats, dict):
                rows.append((b, model, "—", "—", "—", "—", stats))
                continue
            ref = stats.get(cases.REAL_SIDES[0], {}).get("median_ms")
            for side, s in stats.items():
                rows.append(
                    (
                        b,
                        model,
                        side,
                        _cell(s),
                        f"{s['median_ms'] / ref:.2f}x" if ref else "—",
                        f"{s['held_out_loss']:.4f}" if "held_out_loss" in s else "—",
                        "",
                    )
                )
    L += _table(
        ["backend", "model", "side", "step ms", "time / Keras Adam", "held-out loss", "note"],
        rows,
    )
    rs = {b: r.get("keras_rs") for b, r in real.items()}
    L.append(
        "keras-rs: "
        + ", ".join(f"{b} {v or 'not installed (its models skipped)'}" for b, v in rs.items())
        + ".\n"
    )
    return L


def _anchor_section(anchor):
    """(e): tfa on TF 2.15, tfa's rule on the same TF, LazyAdam; per round."""
    main_tf = anchor.get("versions", {}).get("main", {})
    tf_version = main_tf.get("tensorflow-cpu") or main_tf.get("tensorflow", "?")
    L = [
        f"## (e) Anchor: tfa (TF 2.15) and tfa's rule on TF {tf_version} vs LazyAdam "
        "(Keras 3, TF backend)\n\n"
        f"`benchmarks/anchor.py`: {anchor['rounds']} round{'s' * (anchor['rounds'] != 1)} "
        "of alternating processes "
        "(the old stack; tfa 0.23's `_resource_apply_sparse` on `tf_keras`' legacy Adam "
        "on the main env's TF, `tfa_rule_bench.py`; LazyAdam); median of the per-process "
        "medians (min–max of them); load per round "
        f"{', '.join(_load(x[:1]) for x in anchor['load_per_round'])}.\n"
    ]
    refs = (cases.TFA_STEP, cases.TFA_RULE)
    rows = []
    for kind in ("step", "fit"):
        stats = anchor["stats"][kind]
        tfa = min(
            (v["median_ms"] for n, v in stats.items() if n.startswith("tfa LazyAdam")), default=None
        )
        rule = stats.get(cases.TFA_RULE, {}).get("median_ms")
        for name, s in stats.items():
            rows.append(
                (
                    kind,
                    name,
                    _cell(s),
                    f"{s['median_ms'] / tfa:.2f}x" if tfa else "—",
                    f"{s['median_ms'] / rule:.2f}x" if rule and kind == "step" else "—",
                )
            )
    L += _table(["kind", "side", "ms", "time / tfa (TF 2.15)", "time / tfa rule (same TF)"], rows)
    step = anchor["stats"]["step"]
    names = refs + ("LazyAdam", cases.SAME_PROCESS)
    if all("per_round_ms" in step.get(n, {}) for n in names):
        per = [step[n]["per_round_ms"] for n in names]
        L.append(
            "Sparse step per round, ms: each side a fresh process, but for "
            f"“{cases.SAME_PROCESS}”, timed round-robin with the tfa rule in its process:\n"
        )
        L += _table(
            [
                "round",
                *names,
                "LazyAdam / tfa rule (processes apart)",
                "LazyAdam / tfa rule (same process)",
            ],
            [
                (
                    r,
                    *(f"{x:.3f}" if x else "—" for x in ms),
                    f"{ms[2] / ms[1]:.2f}x" if ms[1] and ms[2] else "—",
                    f"{ms[3] / ms[1]:.2f}x" if ms[1] and ms[3] else "—",
                )
                for r, ms in enumerate(zip(*per))
            ],
        )
    diffs = anchor.get("tfa_rule_max_abs_diff")
    if diffs:
        worst = max(max(d.values()) for d in diffs)
        said = "are bitwise equal" if worst == 0 else f"differ by at most {worst:.1e}"
        L.append(
            "Like with like: after 3 steps on a 10,000 × 64 table with the same ids, tfa's rule "
            f"on `tf_keras` and LazyAdam {said} (var, m, v; checked in every round).\n"
        )
    return L


def _load(x):
    return "/".join(f"{v:.1f}" for v in x) if x else "?"


def plot(raw, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = raw.get("step", {})
    backends = _backends(step)
    if not backends:
        return
    bw = raw.get("bandwidth", {}).get("stream_gbs")
    fig, axes = plt.subplots(
        1, len(backends), figsize=(5.2 * len(backends), 4.4), sharey=True, squeeze=False
    )
    for ax, b in zip(axes[0], backends):
        series = {}
        for e in step[b]["sparse"]:
            for name, s in e["stats"].items():
                series.setdefault(name, []).append((e["unique"], s))
        for name, pts in series.items():
            pts.sort(key=lambda p: p[0])
            ys = [p[1]["median_ms"] for p in pts]
            err = [
                [y - p[1]["min_ms"] for y, p in zip(ys, pts)],
                [p[1]["max_ms"] - y for y, p in zip(ys, pts)],
            ]
            ax.errorbar(
                [p[0] for p in pts],
                ys,
                yerr=err,
                label=name,
                marker="o",
                capsize=2,
                linewidth=2.2 if name == "LazyAdam" else 1.3,
            )
        if bw:
            ks = sorted({e["unique"] for e in step[b]["sparse"]})
            ax.plot(
                ks,
                [common.sparse_traffic_bytes(k) / (bw * 1e6) for k in ks],
                "k--",
                linewidth=1,
                label="traffic bound (7·k·D·4 B at stream BW)",
            )
        ax.set(
            xscale="log",
            yscale="log",
            title=f"{b}: 1M × 64 table, sparse gradient",
            xlabel="unique rows touched per step",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("optimizer step time, ms (median, min–max)")
    fig.suptitle(
        f"keras-lazyadam: step time vs rows touched ({raw['machine'].get('cpu', '?')}, "
        f"{raw.get('date', '')})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
