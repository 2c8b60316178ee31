"""Experiment (issue 16, not a test): does the compact optimizer state
(`second_moment="row"`, `first_moment_dtype="bfloat16"` / `"int8"`) learn
as well as float32 LazyAdam?

Two tasks with a hidden truth, so that held-out loss has a floor (the Bayes
loss of the true probabilities):

- recommender: the benchmark recommender (`common.recommender`: a
  1,000,000 x 64 `LazyEmbedding` <- 8 Zipf(1.2) ids an example, mean,
  Dense 64 relu, Dense 1 sigmoid, batch 1,024) on the benchmarks' Zipf ids;
  a click is Bernoulli(sigmoid(s)), s = 1.5 * sum of a hidden N(0, 1) score
  of each id / sqrt(8) - 0.5.
- text: the text classifier of `bench_real_models.py` (a 200,000 x 64
  `LazyEmbedding` <- 32 Zipf(1.2) tokens a text, mean, Dense 64 relu,
  Dense 1 sigmoid, batch 256); the label from a hidden per-token score the
  same way (sum over 32 tokens / sqrt(32)).

Every variant of a seed starts from the same initial weights and sees the
same batches. After each epoch: held-out binary cross-entropy. A small
learning-rate grid finds float32 LazyAdam's best and each variant's own
(the lowest mean over seeds of the early-stopping best); reported at the last
epoch (fixed epochs) and at the early-stopping best (the lowest held-out loss
over the epochs), as the relative gap to float32 LazyAdam at the same
learning rate choice, with PASS/MISS against the goal (<= 1% worse).

    KERAS_BACKEND=jax python benchmarks/compact_state_experiment.py [--quick]

Prints the tables, writes compact_state.{json,txt,png} into --out
(default benchmarks/results; --plot-only re-renders the .txt and .png from
the .json there). 108 runs, about 23 minutes on one loaded CPU core (JAX,
one thread); --quick (fewer examples, 3 epochs, one seed, one learning
rate) under a minute.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's keras_lazyadam
sys.path.insert(0, HERE)  # common
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_lazyadam import LazyAdam  # noqa: E402
from keras_lazyadam import LazyEmbedding  # noqa: E402

GOAL_PCT = 1.0  # a variant's held-out loss at most 1% above float32 LazyAdam's
REFERENCE = "float32"
VARIANTS = {
    "float32": {},
    "row": {"second_moment": "row"},
    "row+bf16": {"second_moment": "row", "first_moment_dtype": "bfloat16"},
    "row+int8": {"second_moment": "row", "first_moment_dtype": "int8"},
    "bf16": {"first_moment_dtype": "bfloat16"},
    "int8": {"first_moment_dtype": "int8"},
}
# rows, dim, ids per example, batch; examples and held-out set by the args.
TASKS = {
    "recommender": {"rows": common.ROWS, "dim": common.DIM, "width": 8, "batch": 1024},
    "text": {"rows": 200_000, "dim": 64, "width": 32, "batch": 256},
}


def make_world(task, name, n_train, n_held, seed):
    """(train, held-out); each (ids, labels, p_true). Ids: the benchmarks'
    Zipf(1.2) ids folded into the table and spread by a fixed permutation
    (`common.zipf_ids`); labels Bernoulli from a hidden per-row score."""
    rows, width = task["rows"], task["width"]
    salt = 17 if name == "text" else 0
    hidden = np.random.default_rng(5000 + 100 * seed + salt).normal(size=rows)

    def sample(n, part):
        ids = common.zipf_ids(n * width, rows=rows, seed=10_000 * (seed + 1) + 10 * salt + part)
        ids = ids.reshape(n, width).astype("int32")
        logit = 1.5 * hidden[ids].sum(axis=1) / np.sqrt(width) - 0.5
        p = 1.0 / (1.0 + np.exp(-logit))
        rng = np.random.default_rng(7000 + 100 * seed + salt + part)
        labels = (rng.random(n) < p).astype("float32")[:, None]
        return ids, labels, p

    return sample(n_train, 1), sample(n_held, 2)


def make_model(task, optimizer, seed):
    keras.utils.set_random_seed(seed)  # the same initial weights for every variant
    inputs = keras.Input((task["width"],), dtype="int32")
    h = LazyEmbedding(task["rows"], task["dim"])(inputs)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dense(64, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(h))
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    return model


def bce(labels, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def run(task, world, variant, lr, seed, epochs):
    """Held-out BCE after each epoch (epoch 0: before training), seconds."""
    (ids, labels, _), (held_ids, held_labels, _) = world
    model = make_model(task, LazyAdam(lr, **VARIANTS[variant]), seed)

    def held_out_loss():
        p = model.predict(held_ids, batch_size=8192, verbose=0)[:, 0]
        return float(bce(held_labels[:, 0], p).mean())

    curve = [held_out_loss()]
    order_rng = np.random.default_rng(seed)  # the same batches for every variant
    start = time.perf_counter()
    for _ in range(epochs):
        perm = order_rng.permutation(len(labels))
        model.fit(
            ids[perm], labels[perm], batch_size=task["batch"], epochs=1, shuffle=False, verbose=0
        )
        curve.append(held_out_loss())
    return curve, time.perf_counter() - start


def gap_pct(value, reference):
    return 100.0 * (value - reference) / reference


METRICS = {
    "best": "early-stopping best (lowest held-out BCE over the epochs)",
    "last": "fixed epochs (held-out BCE after the last epoch)",
}
CHOICES = ("float32's best lr", "own best lr", "float32's ES lr")


def summarize(results, args):
    """Per task and metric ("best": a curve's lowest held-out loss over epochs
    1..E, i.e. early stopping; "last": its loss after epoch E): the learning
    rate that is best for float32 by that metric and each variant's own, the
    gaps to float32 at float32's best, as text and dict."""
    out, lines = {}, []
    for task_name, by_variant in results.items():
        bayes = float(np.mean(by_variant["bayes"]))
        stats = {}  # variant -> lr -> metric -> per-seed values
        for variant in args.variants:
            stats[variant] = {}
            for lr_key, runs in by_variant["curves"][variant].items():
                curves = np.array(runs)[:, 1:]  # seeds x epochs
                stats[variant][lr_key] = {
                    "best": curves.min(axis=1),
                    "last": curves[:, -1],
                    "epoch": [int(e) + 1 for e in curves.argmin(axis=1)],
                }
        task_out = {"bayes_loss": bayes, "own_best_lr": {}, "rows": []}
        lines.append(
            f"\n== {task_name}: held-out BCE (Bayes loss {bayes:.4f}), mean over seeds "
            f"{args.seeds}, {args.epochs} epochs, lr grid {args.lrs}"
        )
        lines.append(
            f"{'metric':6s} {'lr choice':18s} {'variant':9s} {'lr':>7s} {'BCE':>8s} {'gap':>7s} "
            f"{'seeds':>15s} {'xs gap':>7s} {'epochs':>7s}  goal"
        )
        for metric in METRICS:
            own = {
                v: min(stats[v], key=lambda k, v=v: stats[v][k][metric].mean())
                for v in args.variants
            }
            task_out["own_best_lr"][metric] = own
            # (label, each variant's lr, the reference's lr)
            same = dict.fromkeys(args.variants, own[REFERENCE])
            choices = [(CHOICES[0], same, own[REFERENCE])]
            if metric == "last":  # fixed epochs at the lr picked for early stopping too
                es_lr = task_out["own_best_lr"]["best"][REFERENCE]
                choices.append((CHOICES[2], dict.fromkeys(args.variants, es_lr), es_lr))
            choices.append((CHOICES[1], own, own[REFERENCE]))
            for choice, lr_of, ref_lr in choices:
                ref = stats[REFERENCE][ref_lr][metric]
                for variant in args.variants:
                    lr_key = lr_of[variant]
                    values = stats[variant][lr_key][metric]
                    value = float(values.mean())
                    per_seed = [gap_pct(a, b) for a, b in zip(values, ref)]  # paired
                    row = {
                        "metric": metric,
                        "lr_choice": choice,
                        "variant": variant,
                        "lr": float(lr_key),
                        "reference_lr": float(ref_lr),
                        "loss": value,
                        "gap_pct": gap_pct(value, float(ref.mean())),
                        "gap_pct_per_seed": per_seed,
                        # the gap in excess loss over the Bayes loss: the learnable part
                        "excess_gap_pct": gap_pct(value - bayes, float(ref.mean()) - bayes),
                        "best_epoch": stats[variant][lr_key]["epoch"],
                    }
                    reference = variant == REFERENCE and lr_key == ref_lr
                    row["goal"] = (
                        "REF" if reference else "PASS" if row["gap_pct"] <= GOAL_PCT else "MISS"
                    )
                    task_out["rows"].append(row)
                    epochs = ",".join(map(str, row["best_epoch"])) if metric == "best" else ""
                    seeds = f"{min(per_seed):+.2f}..{max(per_seed):+.2f}"
                    lines.append(
                        f"{metric:6s} {choice:18s} {variant:9s} {lr_key:>7s} {value:8.4f} "
                        f"{row['gap_pct']:+6.2f}% {seeds:>15s} {row['excess_gap_pct']:+6.1f}% "
                        f"{epochs:>7s}  {row['goal']}"
                    )
        out[task_name] = task_out
    lines.append(
        "\nmetric best: the lowest held-out BCE over epochs 1..E (early stopping; epochs: each "
        f"seed's); last: after epoch {args.epochs} (fixed epochs). lr choice: the learning rate "
        "of the grid with the lowest mean of that metric, for float32 or for the variant itself; "
        "float32's ES lr: float32's best lr by the early-stopping best, gap to float32 at that lr. "
        "gap: the mean's relative gap to float32 LazyAdam at float32's best lr (goal: <= +1%); "
        "seeds: the same per seed (paired: same initial weights, data and batches); xs gap: the "
        "gap in excess loss over the Bayes loss (held-out BCE minus the BCE of the true "
        "probabilities), INFO."
    )
    return out, "\n".join(lines)


def plot(results, summary, args, path):
    """Per task: held-out excess loss per epoch at float32's best lr and at
    each variant's own, and the gap to float32 in held-out BCE (%)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 3.9 * len(tasks)), squeeze=False)
    epochs = np.arange(1, args.epochs + 1)
    for row, task_name in zip(axes, tasks):
        by_variant = results[task_name]
        bayes = np.array(by_variant["bayes"])[:, None]
        own = summary[task_name]["own_best_lr"]["best"]
        ref_lr = own[REFERENCE]
        reference = np.array(by_variant["curves"][REFERENCE][ref_lr])[:, 1:]
        for ax, choice in zip(row, ("float32's best lr", "own best lr", "gap")):
            for variant in args.variants:
                lr_key = own[variant] if choice == "own best lr" else ref_lr
                curves = np.array(by_variant["curves"][variant][lr_key])[:, 1:]
                if choice == "gap":
                    curves = 100.0 * (curves - reference) / reference
                else:
                    curves = curves - bayes
                label = f"{variant} (lr {lr_key})" if choice == "own best lr" else variant
                ax.plot(epochs, curves.mean(axis=0), marker="o", ms=3, label=label)
                if len(curves) > 1:
                    ax.fill_between(epochs, curves.min(0), curves.max(0), alpha=0.12)
            if choice == "gap":
                ax.axhline(GOAL_PCT, color="red", ls="--", lw=1, label="goal (+1%)")
                ax.set_title(
                    f"{task_name}: held-out BCE vs float32, both at lr {ref_lr}", fontsize=9
                )
                ax.set_ylabel("gap to float32 (%)")
            else:
                lrs = f"float32's best lr, {ref_lr}" if choice == CHOICES[0] else "own best lr"
                lrs += " (by the early-stopping best)"
                ax.set_title(f"{task_name}: {lrs}", fontsize=9)
                ax.set_ylabel("held-out BCE - Bayes loss")
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_xticks(epochs)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle(
        f"Compact LazyAdam state vs float32 LazyAdam: mean over seeds {args.seeds} (band: min-max)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--lrs", nargs="+", default=["0.0003", "0.001", "0.003"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--examples",
        type=int,
        nargs=2,
        default=[81_920, 40_960],
        metavar=("RECOMMENDER", "TEXT"),
        help="training examples per task",
    )
    parser.add_argument("--held-out", type=int, default=20_000)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 seed, 1 lr, 3 epochs, fewer examples"
    )
    parser.add_argument("--out", default=common.RESULTS, help="folder of compact_state.*")
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help="re-render the .png from the .json in --out",
    )
    args = parser.parse_args(argv)
    base = os.path.join(args.out, "compact_state")
    if args.plot_only:
        with open(base + ".json") as f:
            saved = json.load(f)
        args = argparse.Namespace(**dict(saved["args"], out=args.out))
        summary, text = summarize(saved["results"], args)
        header = (
            saved.get("header")
            or [  # a file of the first version: its txt's header
                line[2:].rstrip("\n") for line in open(base + ".txt") if line.startswith("# ")
            ]
        )
        write(base, header, text, saved["args"], summary, saved["results"], args)
        return
    if REFERENCE not in args.variants:
        args.variants.insert(0, REFERENCE)
    if args.quick:
        args.seeds, args.lrs, args.epochs = args.seeds[:1], ["0.001"], 3
        args.examples, args.held_out = [10_240, 5_120], 5_000

    results, start = {}, time.perf_counter()
    for task_name in args.tasks:
        task = TASKS[task_name]
        n_train = args.examples[list(TASKS).index(task_name)]
        curves = {v: {lr: [] for lr in args.lrs} for v in args.variants}
        bayes, seconds = [], []
        for seed in args.seeds:
            world = make_world(task, task_name, n_train, args.held_out, seed)
            held_labels, p_true = world[1][1][:, 0], world[1][2]
            bayes.append(float(bce(held_labels, p_true).mean()))
            for lr in args.lrs:
                for variant in args.variants:
                    curve, s = run(task, world, variant, float(lr), seed, args.epochs)
                    curves[variant][lr].append(curve)
                    seconds.append(s)
                    print(
                        f"{task_name} seed {seed} lr {lr} {variant:9s} {s:5.1f}s  held-out: "
                        + " ".join(f"{x:.4f}" for x in curve[1:])
                        + f"  (Bayes {bayes[-1]:.4f})",
                        flush=True,
                    )
        results[task_name] = {
            "curves": curves,
            "bayes": bayes,
            "seconds": seconds,
            "examples": n_train,
            **task,
        }

    summary, text = summarize(results, args)
    print(text)
    header = [
        "compact_state_experiment.py " + " ".join(sys.argv[1:] if argv is None else argv),
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{time.perf_counter() - start:.0f} s, load average at the end {os.getloadavg()[0]:.1f}",
    ]
    config = dict(vars(args), out=os.path.relpath(os.path.abspath(args.out), common.ROOT))
    write(base, header, text, config, summary, results, args)


def write(base, header, text, config, summary, results, args):
    os.makedirs(os.path.dirname(base), exist_ok=True)
    with open(base + ".txt", "w") as f:
        f.write("".join(f"# {line}\n" for line in header) + text.lstrip("\n") + "\n")
    with open(base + ".json", "w") as f:
        json.dump(
            {"header": header, "args": config, "summary": summary, "results": results}, f, indent=1
        )
    plot(results, summary, args, base + ".png")
    print(f"\nwrote {base}.txt, .json and .png")


if __name__ == "__main__":
    main()
