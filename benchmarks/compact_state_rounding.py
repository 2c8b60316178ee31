"""Which rounding and 8-bit code map keep small updates of `m` (issue 16).

    python benchmarks/compact_state_rounding.py [--rows 2000] [--steps 300]

numpy only, no framework. Rows of width 64 get gradients g = mu + noise (a
per-element drift mu of magnitudes spread over 3 decades, heavy-tailed
noise), with each row touched on 30% of the steps (lazy: untouched rows do
not change). `m` is the first moment kept in float32 (the reference) and in
each compact format, re-encoded after every update as LazyAdam does (its
int8 `m`: "int8 power-2 nearest, bound scale", the row scale a bound of the
new row max from the old m's and the gradient's; "int8 power-2 nearest":
the exact row max, LazyAdam's codes before 2026-12-08). Then,
for the last 100 steps, the error of m relative to float32:

- rel_l2: ||m_q - m|| / ||m|| over all elements (what the step's norm sees)
- small_rel: the median |m_q - m| / |m| over elements whose |m| is below a
  tenth of their row's max (the "small updates" a per-row scale loses)
- decay_left: a second phase: half the elements then get g = 0 for 60
  touched steps; float32 m decays by 0.9^60 = 0.18%; this is the fraction
  of their m that the format leaves (nearest rounding stalls: 0.9 * 4 -> 4)
"""

import argparse
import json

import numpy as np

B1 = 0.9


def bf16_nearest(x):
    b = x.astype(np.float32).view(np.uint32)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.view(np.float32)


def bf16_stochastic(x, rng):
    b = x.astype(np.float32).view(np.uint32)
    b = (b + rng.integers(0, 1 << 16, size=b.shape, dtype=np.uint32)) & 0xFFFF0000
    return b.view(np.float32)


def int8_power(x, p, rng=None, s=None):
    """Per-row absmax scale (or `s`, a bound of it); code c in [-127, 127]
    maps to s * sign(c) (|c|/127)^p."""
    if s is None:
        s = np.max(np.abs(x), axis=1, keepdims=True)
    safe = np.where(s > 0, s, 1)
    u = 127 * (np.abs(x) / safe) ** (1 / p)
    if rng is None:
        c = np.round(u)
    else:
        c = np.floor(u + rng.random(u.shape))
    c = np.clip(c, 0, 127) * np.sign(x)
    return s * np.sign(c) * (np.abs(c) / 127) ** p


def _dynamic_map():
    # bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)
    data, non_sign_bits = [], 7
    for i in range(7):
        fraction_items = 2 ** (i + non_sign_bits - 7) + 1
        boundaries = np.linspace(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(7 - 1) + i)) * means).tolist()
    data = np.array(sorted(set(data)))
    data = data / data.max()
    return np.concatenate([-data[::-1], [0.0], data])


DYNAMIC = _dynamic_map()


def int8_dynamic(x):
    s = np.max(np.abs(x), axis=1, keepdims=True)
    safe = np.where(s > 0, s, 1)
    u = x / safe
    i = np.clip(np.searchsorted(DYNAMIC, u), 1, len(DYNAMIC) - 1)
    lo, hi = DYNAMIC[i - 1], DYNAMIC[i]
    return s * np.where(u - lo < hi - u, lo, hi)


def int8_bound(x, old, g):
    """LazyAdam's int8 `m`: power 2, the scale a bound of the new row max
    from the old m's row max and the gradient's (no pass over the new m)."""
    row_max = np.max(np.abs(old), axis=1, keepdims=True)
    s = (B1 * row_max + (1 - B1) * np.max(np.abs(g), axis=1, keepdims=True)).astype(np.float32)
    return int8_power(x, 2, s=s)


def _of_new_m(f):
    return lambda x, old, g: f(x)


def formats(rng):
    """name -> encode-decode `f(new m, old m, gradient)` of rows."""
    plain = {
        "float32": lambda x: x,
        "bf16 nearest": bf16_nearest,
        "bf16 stochastic": lambda x: bf16_stochastic(x, rng),
        "int8 linear nearest": lambda x: int8_power(x, 1),
        "int8 linear stochastic": lambda x: int8_power(x, 1, rng),
        "int8 power-2 nearest": lambda x: int8_power(x, 2),
        "int8 power-3 nearest": lambda x: int8_power(x, 3),
        "int8 dynamic (bnb) nearest": int8_dynamic,
    }
    out = {name: _of_new_m(f) for name, f in plain.items()}
    out["int8 power-2 nearest, bound scale"] = int8_bound
    return out


def run(rows, steps, seed=0):
    rng = np.random.default_rng(seed)
    width = 64
    mu = rng.choice([-1, 1], (rows, width)) * 10 ** rng.uniform(-3, 0, (rows, width))
    noise_scale = np.abs(mu) * 3 + 1e-3 * rng.random((rows, 1))

    def gradients():
        return (mu + noise_scale * rng.standard_t(4, (rows, width))).astype(np.float32)

    touched_p = 0.3
    result = {}
    names = list(formats(rng))
    ms = {n: np.zeros((rows, width), np.float32) for n in names}
    fmt = formats(np.random.default_rng(seed + 1))
    errs = {n: [] for n in names}
    small = {n: [] for n in names}
    for t in range(steps):
        g = gradients()
        touched = rng.random(rows) < touched_p
        for n in names:
            m = ms[n]
            new = B1 * m[touched] + (1 - B1) * g[touched]
            m[touched] = fmt[n](new.astype(np.float32), m[touched], g[touched])
        if t >= steps - 100:
            ref = ms["float32"]
            rowmax = np.max(np.abs(ref), axis=1, keepdims=True)
            is_small = (np.abs(ref) < rowmax / 10) & (ref != 0)
            for n in names:
                errs[n].append(np.linalg.norm(ms[n] - ref) / np.linalg.norm(ref))
                off = np.abs(ms[n][is_small] - ref[is_small]) / np.abs(ref[is_small])
                small[n].append(np.median(off))
    # decay phase: half of each row's elements get g = 0, the rest keep theirs
    half = np.zeros((rows, width), bool)
    half[:, ::2] = True
    start = {n: ms[n].copy() for n in names}
    for _ in range(60):
        g = gradients()
        g[half] = 0
        for n in names:
            ms[n] = fmt[n]((B1 * ms[n] + (1 - B1) * g).astype(np.float32), ms[n], g)
    for n in names:
        left = np.abs(ms[n][half]).sum() / np.abs(start[n][half]).sum()
        result[n] = dict(
            rel_l2=float(np.mean(errs[n])),
            small_rel=float(np.mean(small[n])),
            decay_left=float(left),
        )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    result = run(args.rows, args.steps)
    print(f"{'format':34s} {'rel_l2':>9s} {'small_rel':>10s} {'decay_left':>11s}")
    for n, r in result.items():
        print(f"{n:34s} {r['rel_l2']:9.2e} {r['small_rel']:10.2e} {r['decay_left']:11.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
