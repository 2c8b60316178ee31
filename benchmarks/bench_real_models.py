"""Real models, as a new user writes them: LazyAdam against Keras Adam.

Per model, three sides built from the same seed: Keras Adam, LazyAdam (the
model as written, stock `keras.layers.Embedding`), and LazyAdam after
`keras_lazyadam.use_lazy_embedding(model)`. Their `train_on_batch` steps
alternate in this process (a rotating order per round, so load hits all
alike); then each side's held-out loss after the same steps on the same data.

Models (synthetic data: labels from a hidden per-id score, so held-out loss
means something):

- dcn_small_tables: DCN-style ranking model with MovieLens-sized tables
  (2, 7, 21, 943, 1,682 and 3,439 rows x 32), stock Embedding, cross layer,
  batch 256: LazyAdam must not be slower than Adam here.
- dcn_small_tables_50k: the same plus one 50,000-row table.
- two_tower: user and item towers as nested Functional models (100k users,
  50k items, history of 10 items).
- text_classifier: a 200,000-row table, 32 Zipf tokens a text, mean pool.
- keras_rs_dlrm: keras-rs `DistributedEmbedding` (4 tables), bottom MLP,
  `DotInteraction`, top MLP, a subclassed model (keras-rs' example style).
- keras_rs_dcn: keras-rs `DistributedEmbedding` and `FeatureCross`.

    python benchmarks/bench_real_models.py --backend jax [--quick]
        [--only NAME ...] [--steps N] [--out F]

A model whose dependency is missing (keras-rs) is skipped with the reason.
keras-rs is a benchmark dependency only (`pip install keras-rs`).
"""

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cases  # noqa: E402
import common  # noqa: E402
import numpy as np  # noqa: E402

SIDES = cases.REAL_SIDES  # Keras Adam, LazyAdam, LazyAdam + use_lazy_embedding


def _zipf(rng, rows, size):
    return ((rng.zipf(1.2, size) - 1) % rows).astype("int32")


class Data:
    """Features (a dict of int32 id arrays, plus float 'dense' where used)
    and labels from a hidden per-id score."""

    def __init__(self, features, n, seed, dense=0):
        rng = np.random.default_rng(seed)
        self.x = {name: _zipf(rng, rows, (n, width)) for name, (rows, width) in features.items()}
        score = np.zeros(n)
        for name, (rows, _) in features.items():
            hidden = np.random.default_rng(hash(name) % 2**32).normal(size=rows)
            score += hidden[self.x[name]].mean(axis=1)
        if dense:
            self.x["dense"] = rng.normal(size=(n, dense)).astype("float32")
            score += self.x["dense"][:, 0]
        p = 1 / (1 + np.exp(-score))
        self.y = (rng.uniform(size=n) < p).astype("float32")[:, None]

    def batch(self, i, size):
        s = slice(i * size, (i + 1) * size)
        return {k: v[s] for k, v in self.x.items()}, self.y[s]


def _inputs(keras, features, dense=0):
    inputs = {n: keras.Input((w,), dtype="int32", name=n) for n, (_, w) in features.items()}
    if dense:
        inputs["dense"] = keras.Input((dense,), name="dense")
    return inputs


def dcn_small_tables(keras, extra_rows=None):
    sizes = [2, 7, 21, 943, 1682, 3439] + ([extra_rows] if extra_rows else [])
    features = {f"f{i}_{rows}": (rows, 1) for i, rows in enumerate(sizes)}

    def build():
        inputs = _inputs(keras, features)
        embedded = [
            keras.layers.Flatten()(keras.layers.Embedding(rows, 32)(inputs[name]))
            for name, (rows, _) in features.items()
        ]
        x0 = keras.layers.Concatenate()(embedded)
        # One DCN cross layer: x0 * (W x0 + b) + x0, then a deep part.
        cross = keras.layers.Add()(
            [keras.layers.Multiply()([x0, keras.layers.Dense(x0.shape[-1])(x0)]), x0]
        )
        deep = keras.layers.Dense(64, activation="relu")(cross)
        out = keras.layers.Dense(1, activation="sigmoid")(deep)
        return keras.Model(inputs, out)

    return build, features, 256, 0


def two_tower(keras):
    features = {"user": (100_000, 1), "history": (50_000, 10), "item": (50_000, 1)}

    def tower(name, parts):
        inputs = [keras.Input((features[p][1],), dtype="int32", name=f"{name}_{p}") for p in parts]
        pooled = [
            keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(features[p][0], 32)(i))
            for p, i in zip(parts, inputs)
        ]
        x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled)
        return keras.Model(inputs, keras.layers.Dense(32)(x), name=f"{name}_tower")

    def build():
        inputs = _inputs(keras, features)
        user = tower("user", ["user", "history"])([inputs["user"], inputs["history"]])
        item = tower("item", ["item"])([inputs["item"]])
        score = keras.layers.Dot(axes=1)([user, item])
        return keras.Model(inputs, keras.layers.Activation("sigmoid")(score))

    return build, features, 512, 0


def text_classifier(keras):
    features = {"tokens": (200_000, 32)}

    def build():
        inputs = _inputs(keras, features)
        x = keras.layers.Embedding(200_000, 64)(inputs["tokens"])
        x = keras.layers.GlobalAveragePooling1D()(x)
        x = keras.layers.Dense(64, activation="relu")(x)
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))

    return build, features, 256, 0


def _keras_rs_model(keras, kind):
    import keras_rs  # noqa: F401 - skipped with the reason when missing

    features = {"user": (200_000, 1), "item": (100_000, 1), "city": (5_000, 1), "genre": (20, 1)}
    batch = 512

    def build():
        configs = {
            name: keras_rs.layers.FeatureConfig(
                name=name,
                table=keras_rs.layers.TableConfig(
                    name=f"{name}_table", vocabulary_size=rows, embedding_dim=32
                ),
                input_shape=(batch, width),
                output_shape=(batch, 32),
            )
            for name, (rows, width) in features.items()
        }

        class Ranking(keras.Model):
            def __init__(self):
                super().__init__()
                self.embedding = keras_rs.layers.DistributedEmbedding(configs)
                self.bottom = keras.layers.Dense(32, activation="relu")
                if kind == "dlrm":
                    self.interaction = keras_rs.layers.DotInteraction()
                else:
                    self.crosses = [keras_rs.layers.FeatureCross() for _ in range(2)]
                self.top = keras.layers.Dense(64, activation="relu")
                self.out = keras.layers.Dense(1, activation="sigmoid")

            def call(self, x):
                embedded = self.embedding({name: x[name] for name in features})
                dense = self.bottom(x["dense"])
                if kind == "dlrm":
                    z = self.interaction([dense] + [embedded[n] for n in features])
                    z = keras.ops.concatenate([z, dense], axis=1)
                else:
                    x0 = keras.ops.concatenate([dense] + [embedded[n] for n in features], axis=1)
                    z = x0
                    for cross in self.crosses:
                        z = cross(x0, z)
                return self.out(self.top(z))

        model = Ranking()
        sample = Data(features, 2, 0, dense=8)
        model(sample.x)  # builds it
        return model

    return build, features, batch, 8


MODELS = {
    "dcn_small_tables": lambda keras: dcn_small_tables(keras),
    "dcn_small_tables_50k": lambda keras: dcn_small_tables(keras, 50_000),
    "two_tower": two_tower,
    "text_classifier": text_classifier,
    "keras_rs_dlrm": lambda keras: _keras_rs_model(keras, "dlrm"),
    "keras_rs_dcn": lambda keras: _keras_rs_model(keras, "dcn"),
}


def _side(keras, build, side, jit_compile):
    import keras_lazyadam

    keras.utils.set_random_seed(0)
    model = build()
    if side == SIDES[2]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. tied projections: said in the README
            model = keras_lazyadam.use_lazy_embedding(model)
    optimizer = keras.optimizers.Adam(1e-3) if side == SIDES[0] else keras_lazyadam.LazyAdam(1e-3)
    model.compile(optimizer=optimizer, loss="binary_crossentropy", jit_compile=jit_compile)
    return model


def run_model(keras, name, steps, jit_compile, warmup):
    build, features, batch, dense = MODELS[name](keras)
    train = Data(features, batch * (steps + warmup), seed=1, dense=dense)
    held_out = Data(features, batch * 4, seed=2, dense=dense)
    models = {}
    for side in SIDES:
        t0 = time.perf_counter()
        models[side] = _side(keras, build, side, jit_compile)
        for i in range(warmup):  # compile, and reach TF's row-bucket sizes
            models[side].train_on_batch(*train.batch(i, batch))
        print(f"  {name}: built + compiled {side} in {time.perf_counter() - t0:.1f}s", flush=True)
    samples = {side: [] for side in SIDES}
    for step in range(steps):
        order = SIDES[step % 3 :] + SIDES[: step % 3]
        for side in order:
            x, y = train.batch(step + warmup, batch)
            t0 = time.perf_counter()
            models[side].train_on_batch(x, y)
            samples[side].append(time.perf_counter() - t0)
    stats = {side: common.summarize(s) for side, s in samples.items()}
    x, y = held_out.batch(0, batch * 4)
    for side, model in models.items():
        stats[side]["held_out_loss"] = float(model.evaluate(x, y, batch_size=batch, verbose=0))
    return stats


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", required=True)
    parser.add_argument("--quick", action="store_true", help="a few steps: checks that it runs")
    parser.add_argument("--steps", type=int, help="timed steps per side (default 200, quick 3)")
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS))
    parser.add_argument("--jit-compile", type=int, default=None, help="TF only: 0 or 1")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    common.select_backend(args.backend)
    import keras

    jit_compile = {"tensorflow": bool(args.jit_compile), "jax": True}.get(args.backend, False)
    steps = args.steps or (3 if args.quick else 200)
    results = {}
    for name in args.only or list(MODELS):
        try:
            stats = run_model(keras, name, steps, jit_compile, 2 if args.quick else 10)
        except ImportError as e:
            print(f"\n== {name}: skipped ({e.name or e} is not installed)", flush=True)
            results[name] = f"skipped: {e.name or e} is not installed"
            continue
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            results[name] = common.error_text(e)
            print(f"\n== {name}: {results[name]}", flush=True)
            continue
        results[name] = stats
        common.print_table(
            f"[{args.backend}] {name}: train_on_batch step", stats, reference=SIDES[0]
        )
        for side, s in stats.items():
            print(f"  {side:42s} held-out loss {s['held_out_loss']:.4f}")
        cases.print_goals(cases.check(cases.REAL, args.backend, stats, None, scope=name))
    if args.out:
        common.write_json(
            args.out,
            {
                "backend": args.backend,
                "jit_compile": jit_compile,
                "steps": steps,
                "results": results,
                "python": sys.executable,
                "keras_rs": _version("keras-rs"),
            },
        )


if __name__ == "__main__":
    main()
