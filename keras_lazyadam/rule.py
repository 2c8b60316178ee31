"""The LazyAdam update rule, written once, in `keras.ops`.

Both paths of `LazyAdam.update_step` call `adam_update`: the sparse path on
the gathered rows of a gradient, the dense path on whole variables with a
mask of the rows to skip. A backend's fused kernel, where one is used, is fed
from the same `Hyperparameters`.
"""

from typing import Any
from typing import NamedTuple

import keras
from keras import ops


class Hyperparameters(NamedTuple):
    """This step's values, as tensors of the computation dtype."""

    learning_rate: Any  # after schedules and tfa's inverse-time decay
    beta_1: Any
    beta_2: Any
    epsilon: Any
    step: Any  # t = iterations + 1, the global step of the bias correction
    weight_decay_rate: Any | None  # learning_rate * weight_decay, or None
    amsgrad: bool
    step_mode: str = "global"  # "global", "catch_up" or "per_row"
    global_step: Any | None = None  # t as int32, the row clock of "catch_up"
    # "row": v (and vhat) hold one value per row, shaped (n, 1, ...), and
    # average g^2 over the row (`state.py` keeps them so).
    second_moment: str = "element"

    @property
    def step_size(self):
        """`alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)` (tfa's lr_t)."""
        t = self.step
        return (
            self.learning_rate
            * ops.sqrt(1 - ops.power(self.beta_2, t))
            / (1 - ops.power(self.beta_1, t))
        )


class State(NamedTuple):
    """A variable (or some of its rows) and its moments."""

    var: Any
    m: Any
    v: Any
    vhat: Any | None = None  # the running max of `v` with amsgrad
    # int32 per row (shape `var.shape[:1]`) with step_mode != "global": the
    # global step of the row's last update ("catch_up") or its number of
    # updates ("per_row"), 0 if never updated.
    row_step: Any | None = None

    def cast(self, dtype):
        """The float tensors cast to `dtype` (the row counter stays int32)."""
        floats = (None if x is None else ops.cast(x, dtype) for x in self[:4])
        row_step = None if self.row_step is None else ops.cast(self.row_step, "int32")
        return State(*floats, row_step=row_step)


def adam_update(state, gradient, hyper, touched=None, sparse_form=None, select_m=True):
    """Returns the new `State` after one step of tfa's (lazy) Adam.

    ```
    m    = beta_1 * m + (1 - beta_1) * g
    v    = beta_2 * v + (1 - beta_2) * g^2  ("row": mean of g^2 over the row)
    vhat = max(vhat, v)                  (amsgrad; then used in place of v)
    var  = var - var * weight_decay_rate (decoupled weight decay)
    var  = var - alpha * m / (sqrt(v) + epsilon)
    ```

    `hyper.step_mode` picks the step that rows which skip steps see (the
    row counter `state.row_step` is then required, and updated):

    - "global": tfa's rule as above, `alpha` from the global step t.
    - "catch_up": first `m *= beta_1^k`, `v *= beta_2^k` with
      `k = t - row_step - 1` (the steps the row skipped, counting from 0
      for a row never updated): the moments Adam's would be with zero
      gradients on the skipped steps (`vhat` is not decayed). The skipped
      parameter moves are not replayed. Then `row_step = t`.
    - "per_row": `row_step += 1`, and `alpha` uses `n = row_step` in place
      of t: a row's first update is Adam's first update.

    tfa computes the moving averages in two algebraically equal forms that
    round differently: its sparse kernel as written above, its dense kernel
    (`ResourceApplyAdam`) as `m + (g - m) * (1 - beta_1)`. Both are kept, so
    that sparse and dense steps reproduce tfa bit for bit.

    Args:
        state: the `State` to update, in the computation dtype.
        gradient: the gradient, shaped like `state.var`.
        hyper: the step's `Hyperparameters`.
        touched: None for a sparse step (the rows given are the rows to
            update: tfa's sparse form), else a dense step (tfa's dense
            form), with True (every row updated) or a boolean mask that
            broadcasts against `state.var`: rows where it is False come out
            exactly as they went in.
        sparse_form: the form of the moving averages; defaults to the
            sparse one exactly when `touched` is None. A sparse gradient
            applied to a whole (small) variable with a mask of its rows
            keeps the sparse form: its rows come out as the row update's.
        select_m: False where the caller selects the rows of `m` that
            `touched` masks out itself (compact state selects its codes
            after encoding): `m` then comes out unselected. A select in
            front of int8's row maximum kept XLA:CPU from fusing it (2x
            the dense step).
    """
    if sparse_form is None:
        sparse_form = touched is None
    rate_1, rate_2 = 1 - hyper.beta_1, 1 - hyper.beta_2
    beta_1, beta_2, old_m, old_v = hyper.beta_1, hyper.beta_2, state.m, state.v
    step_size, row_step = None, None
    if hyper.step_mode != "global":
        decay_1, decay_2, step_size, row_step = _row_clock(state, hyper, touched)
        if decay_1 is not None and sparse_form:
            # Per row, beta * beta^k: no pass over the rows' m and v.
            beta_1, beta_2 = beta_1 * decay_1, beta_2 * decay_2
        elif decay_1 is not None:
            old_m, old_v = old_m * decay_1, old_v * decay_2
    squared = gradient * gradient
    if hyper.second_moment == "row":
        # mean_j g[r, j]^2: one value per row (the element itself at width 1)
        squared = ops.mean(squared, axis=tuple(range(1, len(squared.shape))), keepdims=True)
    if sparse_form:
        m = beta_1 * old_m + rate_1 * gradient
        v = beta_2 * old_v + rate_2 * squared
    else:
        m = old_m + (gradient - old_m) * rate_1
        v = old_v + (squared - old_v) * rate_2
    if touched is not None and touched is not True:
        # A select, not zero rates: m + (0 - m) * 0 is NaN where m is Inf.
        m = ops.where(touched, m, state.m) if select_m else m
        v = ops.where(touched, v, state.v)
    vhat = _maximum(state.vhat, v) if hyper.amsgrad else None
    var = state.var
    if hyper.weight_decay_rate is not None:
        var = var - var * hyper.weight_decay_rate
    if step_size is None:
        step_size = hyper.step_size
    var = var - step_size * m / (ops.sqrt(v if vhat is None else vhat) + hyper.epsilon)
    if touched is not None and touched is not True:
        # Not a zero step size: a never-touched row with epsilon=0 is 0/0.
        var = ops.where(touched, var, state.var)
    return State(var, m, v, vhat, row_step)


def _row_clock(state, hyper, touched):
    """`(decay of m or None, decay of v or None, step size or None, new
    row_step)` of a step_mode other than "global", per row. Rows that
    `touched` masks out keep their row_step."""
    counts = state.row_step
    rank = len(state.var.shape)
    mask = None  # over rows, shaped like `counts`
    if touched is not None and touched is not True:
        mask = ops.reshape(touched, ops.shape(counts))
    dtype = keras.backend.standardize_dtype(state.m.dtype)
    decay_1 = decay_2 = step_size = None
    if hyper.step_mode == "per_row":
        new_counts = counts + 1
        n = _per_row(ops.cast(new_counts, dtype), rank)
        step_size = (
            hyper.learning_rate
            * ops.sqrt(1 - ops.power(hyper.beta_2, n))
            / (1 - ops.power(hyper.beta_1, n))
        )
    elif hyper.step_mode == "catch_up":
        skipped = ops.maximum(hyper.global_step - 1 - counts, 0)
        # That is t (a row was last updated before t), but not a broadcast
        # of t: scattering one made JAX's sparse step 1.3x slower on
        # XLA:CPU (measured, 1M rows).
        new_counts = counts + skipped + 1
        skipped = _per_row(ops.cast(skipped, dtype), rank)
        decay_1 = ops.power(hyper.beta_1, skipped)
        decay_2 = ops.power(hyper.beta_2, skipped)
    else:
        raise ValueError(f"Unknown step_mode: {hyper.step_mode!r}")
    if mask is not None:
        new_counts = ops.where(mask, new_counts, counts)
    return decay_1, decay_2, step_size, new_counts


def _per_row(values, rank):
    """Per-row values (shape `(rows,)`) shaped to broadcast against rows of
    rank `rank`."""
    if rank <= 1:
        return values
    # Indexing, not ops.reshape: a third of the cost on torch (eager).
    return values[(slice(None),) + (None,) * (rank - 1)]


def _maximum(a, b):
    # Not ops.maximum: on torch it rounds float64 to float32. NaN propagates.
    return ops.where(ops.logical_or(ops.isnan(b), ops.greater(b, a)), b, a)
