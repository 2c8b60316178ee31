"""Demo: train a small recommender with LazyAdam on synthetic in-memory data.

    python -m keras_lazyadam.demo            # on the installed Keras backend
    KERAS_BACKEND=jax python -m keras_lazyadam.demo --epochs 3

Clicks come from hidden user and item factors; item popularity is Zipf-like,
so most item rows are rare. The run prints Keras' progress bar, the steady
step time (over the epochs after the first, which includes compiling), and
proof that LazyAdam is lazy: item rows absent from a step are bit-for-bit
unchanged (value, m and v), and rows never seen keep their initial value.
"""

import argparse
import sys
import time

import keras
import numpy as np

from keras_lazyadam import LazyAdam
from keras_lazyadam import LazyEmbedding


def make_data(users, items, examples, ids_per_example, seed):
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=(users, 8))
    item_factors = rng.normal(size=(items, 8))
    user = rng.integers(0, users, size=(examples, 1))
    item = (rng.zipf(1.3, size=(examples, ids_per_example)) - 1) % items
    score = np.einsum("nd,nkd->n", user_factors[user[:, 0]], item_factors[item])
    label = (score + rng.normal(size=examples) > 0).astype("float32")
    return (user.astype("int32"), item.astype("int32")), label[:, None]


def make_model(users, items, dim):
    user = keras.Input((1,), dtype="int32", name="user")
    item = keras.Input((None,), dtype="int32", name="items")
    u = keras.layers.Flatten()(LazyEmbedding(users, dim, name="user_table")(user))
    i = LazyEmbedding(items, dim, name="item_table")(item)
    i = keras.layers.GlobalAveragePooling1D()(i)
    x = keras.layers.Concatenate()([u, i, keras.layers.Multiply()([u, i])])
    x = keras.layers.Dense(64, activation="relu")(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model([user, item], out)


def table_state(model, name):
    table = model.get_layer(name).embeddings
    opt = model.optimizer
    return [
        keras.ops.convert_to_numpy(t)
        for t in (table, opt.get_slot(table, "m"), opt.get_slot(table, "v"))
    ]


def steady_step_line(epoch_seconds, examples, batch_size):
    """The throughput line: the steady step is measured over the epochs after
    the first (which includes tracing and compiling)."""
    steps = -(-examples // batch_size)
    first = f"first epoch (with compiling) {epoch_seconds[0]:.1f} s"
    if len(epoch_seconds) < 2:
        return f"{first}; run --epochs 2 or more for the steady step time"
    steady = sum(epoch_seconds[1:])
    return (
        f"steady step: {1000 * steady / (steps * len(epoch_seconds[1:])):.1f} ms/step, "
        f"{len(epoch_seconds[1:]) * examples / steady:,.0f} examples/s "
        f"(epochs 2-{len(epoch_seconds)}; {first})"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--examples", type=int, default=65_536)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    (user, item), label = make_data(args.users, args.items, args.examples, 4, args.seed)
    model = make_model(args.users, args.items, args.dim)
    model.compile(
        optimizer=LazyAdam(learning_rate=0.003),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    initial_items = keras.ops.convert_to_numpy(model.get_layer("item_table").embeddings)
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}: "
        f"user table {args.users:,} x {args.dim}, item table {args.items:,} x "
        f"{args.dim}, {args.examples:,} examples"
    )
    epoch_seconds = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch_seconds.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_seconds.__setitem__(
            -1, epoch_seconds[-1] + time.perf_counter()
        ),
    )
    history = model.fit(
        {"user": user, "items": item},
        label,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=1,
        callbacks=[timer],
    )
    print(steady_step_line(epoch_seconds, args.examples, args.batch_size))

    # Proof of laziness, 1: rows never in the data never moved.
    seen = np.zeros(args.items, bool)
    seen[np.unique(item)] = True
    after = table_state(model, "item_table")
    never = ~seen
    unchanged = np.array_equal(after[0][never], initial_items[never])
    zero_slots = not after[1][never].any() and not after[2][never].any()
    print(
        f"item rows never seen: {never.sum():,} of {args.items:,}; value "
        f"unchanged bit-for-bit: {unchanged}; m and v still zero: {zero_slots}"
    )
    # Proof of laziness, 2: one more step leaves every absent row as it was.
    batch = slice(0, args.batch_size)
    model.train_on_batch({"user": user[batch], "items": item[batch]}, label[batch])
    final = table_state(model, "item_table")
    present = np.zeros(args.items, bool)
    present[np.unique(item[batch])] = True
    absent_same = all(np.array_equal(a[~present], b[~present]) for a, b in zip(final, after))
    moved = int(np.any(final[0][present] != after[0][present], axis=1).sum())
    print(
        f"one more step: {present.sum():,} rows present ({moved:,} moved), "
        f"{(~present).sum():,} absent rows unchanged (value, m, v): {absent_same}"
    )
    print(f"final loss {history.history['loss'][-1]:.4f}")
    ok = unchanged and zero_slots and absent_same and moved > 0
    print("laziness check:", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
