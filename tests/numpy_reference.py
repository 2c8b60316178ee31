"""tfa's LazyAdam in numpy: the oracle the tests compare against.

With `step_mode` (issue 10): "catch_up" decays a row's m and v by
beta^(steps skipped) before its update; "per_row" bias-corrects with the
row's own update count. `row_step` holds the row's clock as LazyAdam does.

With compact state (issue 16): `second_moment="row"` keeps v (and vhat) per
row, shape (rows, 1, ...), from the row's mean of g^2; `first_moment_dtype`
rounds m after each update as LazyAdam stores it (bfloat16: nearest even;
int8: per-row scale b1 max|m_old| + (1 - b1) max|g|, a bound of max|m|,
codes round(127 sqrt(|m| / scale)) sign(m)).
"""

import numpy as np


class NumpyLazyAdam:
    def __init__(
        self,
        shape,
        dtype,
        lr=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        skip_zero_rows=True,
        weight_decay=None,
        step_mode="global",
        second_moment="element",
        first_moment_dtype=None,
    ):
        v_shape = shape if second_moment == "element" else shape[:1] + (1,) * (len(shape) - 1)
        self.m = np.zeros(shape, dtype)
        self.v = np.zeros(v_shape, dtype)
        self.vhat = np.zeros(v_shape, dtype)
        self.row_v = second_moment == "row"
        self.first_moment_dtype = first_moment_dtype
        self.t = 0
        self.dtype = dtype
        self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, epsilon
        self.amsgrad, self.skip = amsgrad, skip_zero_rows
        self.wd = weight_decay
        self.step_mode = step_mode
        self.row_step = np.zeros(shape[:1], np.int64)

    def _alpha(self, lr):
        # Keras (like tfa) keeps a float learning rate in a float32 variable.
        lr = float(np.float32(lr))
        t = self.t + 1
        return lr * np.sqrt(1 - self.b2**t) / (1 - self.b1**t)

    def _rows(self, var, rows, g, lr):
        a = self._alpha(lr)
        t = self.t + 1
        per_row = (-1,) + (1,) * (var.ndim - 1)
        bound = None
        if self.first_moment_dtype == "int8":
            # int8's scale: bounds the new row max from the old one's and g's
            axes = tuple(range(1, var.ndim))
            old_max = np.abs(self.m[rows]).max(axis=axes, initial=0)
            bound = self.b1 * old_max + (1 - self.b1) * np.abs(g).max(axis=axes, initial=0)
        if self.step_mode == "catch_up":
            skipped = (t - self.row_step[rows] - 1).reshape(per_row)
            self.m[rows] *= self.b1**skipped
            self.v[rows] *= self.b2**skipped  # vhat is not decayed
            self.row_step[rows] = t
        elif self.step_mode == "per_row":
            self.row_step[rows] += 1
            n = self.row_step[rows].reshape(per_row)
            lr32 = float(np.float32(lr))
            a = lr32 * np.sqrt(1 - self.b2**n) / (1 - self.b1**n)
        self.m[rows] = self.b1 * self.m[rows] + (1 - self.b1) * g
        g2 = g * g
        if self.row_v:
            g2 = g2.mean(axis=tuple(range(1, var.ndim)), keepdims=True)
        self.v[rows] = self.b2 * self.v[rows] + (1 - self.b2) * g2
        denom = self.v[rows]
        if self.amsgrad:
            self.vhat[rows] = np.maximum(self.vhat[rows], self.v[rows])
            denom = self.vhat[rows]
        if self.wd:
            var[rows] -= var[rows] * self.wd * float(np.float32(lr))
        var[rows] -= a * self.m[rows] / (np.sqrt(denom) + self.eps)
        self.m[rows] = stored_m(self.m[rows], self.first_moment_dtype, bound)

    def sparse(self, var, indices, values, lr=None):
        lr = self.lr if lr is None else lr
        rows = np.unique(indices)
        g = np.zeros((len(rows),) + var.shape[1:], self.dtype)
        for i, r in enumerate(rows):
            g[i] = values[indices == r].sum(axis=0)
        self._rows(var, rows, g, lr)
        self.t += 1

    def dense(self, var, grad, lr=None):
        lr = self.lr if lr is None else lr
        if self.skip and var.ndim >= 2:
            rows = np.nonzero(np.any(grad != 0, axis=tuple(range(1, var.ndim))))[0]
        else:
            rows = np.arange(var.shape[0])
        self._rows(var, rows, grad[rows], lr)
        self.t += 1


def round_bfloat16(x):
    """float32 -> bfloat16 (round to nearest even), back in float32."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def encode_int8(m, scale=None):
    """`(codes, scale)` of LazyAdam's int8 first moment: per row of m, the
    scale given (a bound of the row's max |m|) or max |m|."""
    m = np.asarray(m, np.float32)
    axes = tuple(range(1, m.ndim))
    if scale is None:
        scale = np.max(np.abs(m), axis=axes)
    scale = np.asarray(scale, np.float32)
    s = scale.reshape((-1,) + (1,) * (m.ndim - 1))
    safe = np.where(s > 0, s, np.float32(1))
    codes = np.round(np.float32(127) * np.sqrt(np.minimum(np.abs(m) / safe, 1))) * np.sign(m)
    return codes.astype(np.int8), scale


def decode_int8(codes, scale):
    c = codes.astype(np.float32)
    s = scale.reshape((-1,) + (1,) * (c.ndim - 1))
    return s * (c * np.abs(c)) * np.float32(1 / 127**2)


def stored_m(m, first_moment_dtype, scale=None):
    """m as LazyAdam stores it, decoded (the row's rounding; int8 with the
    per-row `scale`, or max |m| where None)."""
    if first_moment_dtype is None:
        return m
    if first_moment_dtype == "bfloat16":
        return round_bfloat16(m).astype(m.dtype)
    return decode_int8(*encode_int8(m, scale)).astype(m.dtype)
