"""Experiment (issue 10, not a test): does `step_mode` change what a
recommender learns about rare items?

A synthetic click model with Zipf item popularity: user u clicks item i with
probability sigmoid(<U_u, V_i> + b_i), hidden factors of dimension 8. The
model learns user and item tables (`LazyEmbedding`, dimension 16) and an
item bias table, with binary cross-entropy. Trained from the same initial
weights and the same batches with LazyAdam(step_mode="global"),
"catch_up", "per_row" and dense `keras.optimizers.Adam`. After each epoch:
held-out loss, overall and per item-frequency bucket (how often the item
occurs in the training set), reported as excess loss over the Bayes loss
of the true click probabilities (0 is perfect).

    KERAS_BACKEND=jax python benchmarks/step_mode_experiment.py [--seeds 3]

Prints a table, writes benchmarks/results/step_mode.png and
benchmarks/results/step_mode.json. A few minutes on 2 CPU cores (JAX).
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's keras_lazyadam

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_lazyadam import LazyAdam  # noqa: E402
from keras_lazyadam import LazyEmbedding  # noqa: E402

OPTIMIZERS = ("global", "catch_up", "per_row", "dense Adam")
# Buckets by the item's number of training examples.
BUCKETS = {"head (>=500)": (500, None), "torso (50-499)": (50, 500), "tail (1-49)": (1, 50)}


def make_world(args, seed):
    """(train, held-out, item train counts); each split: (users, items, labels, p)."""
    rng = np.random.default_rng(1000 + seed)
    user_f = rng.normal(size=(args.users, 8)) / np.sqrt(8) * 1.5
    item_f = rng.normal(size=(args.items, 8)) / np.sqrt(8) * 1.5
    item_b = rng.normal(size=args.items) - 1.0
    popularity = 1.0 / np.arange(1, args.items + 1) ** args.zipf
    popularity /= popularity.sum()
    order = rng.permutation(args.items)  # popularity is not the row order

    def sample(n):
        users = rng.integers(0, args.users, size=n)
        items = order[rng.choice(args.items, size=n, p=popularity)]
        logit = np.einsum("nd,nd->n", user_f[users], item_f[items]) + item_b[items]
        p = 1.0 / (1.0 + np.exp(-logit))
        labels = (rng.random(n) < p).astype("float32")
        return users.astype("int32"), items.astype("int32"), labels, p

    train, held_out = sample(args.examples), sample(args.held_out)
    counts = np.bincount(train[1], minlength=args.items)
    return train, held_out, counts


def make_model(args):
    user = keras.Input((), dtype="int32", name="user")
    item = keras.Input((), dtype="int32", name="item")
    u = LazyEmbedding(args.users, args.dim, name="user_table")(user)
    v = LazyEmbedding(args.items, args.dim, name="item_table")(item)
    b = LazyEmbedding(args.items, 1, name="item_bias", embeddings_initializer="zeros")(item)
    logit = keras.ops.sum(u * v, axis=-1, keepdims=True) + b
    return keras.Model([user, item], keras.layers.Activation("sigmoid")(logit))


def bce(labels, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def evaluate(model, held_out, masks):
    users, items, labels, p_true = held_out
    p = model.predict([users, items], batch_size=16384, verbose=0)[:, 0]
    excess = bce(labels, p) - bce(labels, p_true)
    return {name: float(excess[mask].mean()) for name, mask in masks.items()}


def run(args, seed, optimizer_name, world):
    train, held_out, counts = world
    keras.utils.set_random_seed(seed)  # same initial weights for every optimizer
    model = make_model(args)
    if optimizer_name == "dense Adam":
        optimizer = keras.optimizers.Adam(args.lr)
    else:
        optimizer = LazyAdam(args.lr, step_mode=optimizer_name)
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    held_counts = counts[held_out[1]]
    masks = {"all": np.ones_like(held_counts, bool)}
    for name, (low, high) in BUCKETS.items():
        masks[name] = (held_counts >= low) & (held_counts < (high or np.inf))
    curve = [evaluate(model, held_out, masks)]
    order_rng = np.random.default_rng(seed)  # same batches for every optimizer
    start = time.perf_counter()
    for _ in range(args.epochs):
        perm = order_rng.permutation(len(train[2]))
        x = [train[0][perm], train[1][perm]]
        model.fit(x, train[2][perm], batch_size=args.batch, epochs=1, shuffle=False, verbose=0)
        curve.append(evaluate(model, held_out, masks))
    seconds = time.perf_counter() - start
    sizes = {name: int(mask.sum()) for name, mask in masks.items()}
    return curve, seconds, sizes


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["all"] + list(BUCKETS)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    epochs = np.arange(args.epochs + 1)
    for ax, panel in zip(axes, panels):
        for name in OPTIMIZERS:
            curves = np.array([[e[panel] for e in c] for c in results[name]["curves"]])
            mean = curves.mean(axis=0)
            ax.plot(epochs[1:], mean[1:], marker="o", label=name)
            if len(curves) > 1:
                ax.fill_between(epochs[1:], curves.min(0)[1:], curves.max(0)[1:], alpha=0.15)
        ax.set_title(f"held-out: {panel}")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("excess BCE over the Bayes loss")
    axes[0].legend()
    fig.suptitle(
        f"LazyAdam step_mode vs dense Adam: Zipf({args.zipf}) items, {args.items} items, "
        f"{args.examples} examples, lr {args.lr}, batch {args.batch}, "
        f"{len(args.seeds)} seed(s) (band: min-max)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--zipf", type=float, default=1.05)
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--held-out", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "step_mode"))
    args = parser.parse_args(argv)

    results = {name: {"curves": [], "seconds": []} for name in OPTIMIZERS}
    for seed in args.seeds:
        world = make_world(args, seed)
        for name in OPTIMIZERS:
            curve, seconds, sizes = run(args, seed, name, world)
            results[name]["curves"].append(curve)
            results[name]["seconds"].append(seconds)
            print(
                f"seed {seed} {name:10s} {seconds:5.1f}s  final excess: "
                + ", ".join(f"{k} {v:.4f}" for k, v in curve[-1].items()),
                flush=True,
            )

    panels = ["all"] + list(BUCKETS)
    print(f"\nheld-out examples per bucket (last seed): {sizes}")
    for label, pick in (("final epoch", -1), ("best epoch", None)):
        print(f"\nExcess held-out BCE over Bayes, {label}, mean over seeds {args.seeds}:")
        print(f"{'optimizer':12s}" + "".join(f"{p:>16s}" for p in panels))
        for name in OPTIMIZERS:
            runs = results[name]["curves"]
            curves = np.array([[[e[p] for p in panels] for e in c] for c in runs])
            value = curves[:, -1] if pick == -1 else curves[:, 1:].min(axis=1)
            print(f"{name:12s}" + "".join(f"{x:16.4f}" for x in value.mean(axis=0)))

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        config = dict(vars(args), out=os.path.relpath(args.out, os.path.dirname(HERE)))
        json.dump({"args": config, "buckets": sizes, "results": results}, f, indent=1)
    plot(results, args, args.out + ".png")
    print(f"\nwrote {args.out}.png and {args.out}.json")


if __name__ == "__main__":
    main()
