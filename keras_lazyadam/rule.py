"""The LazyAdam update rule, written once, in `keras.ops`.

Both paths of `LazyAdam.update_step` call `adam_update`: the sparse path on
the gathered rows of a gradient, the dense path on whole variables with a
mask of the rows to skip. A backend's fused kernel, where one is used, is fed
from the same `Hyperparameters`.
"""

from typing import Any
from typing import NamedTuple

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

    def cast(self, dtype):
        return State(*(None if x is None else ops.cast(x, dtype) for x in self))


def adam_update(state, gradient, hyper, touched=None):
    """Returns the new `State` after one step of tfa's (lazy) Adam.

    ```
    m    = beta_1 * m + (1 - beta_1) * g
    v    = beta_2 * v + (1 - beta_2) * g^2
    vhat = max(vhat, v)                  (amsgrad; then used in place of v)
    var  = var - var * weight_decay_rate (decoupled weight decay)
    var  = var - alpha * m / (sqrt(v) + epsilon)
    ```

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
    """
    rate_1, rate_2 = 1 - hyper.beta_1, 1 - hyper.beta_2
    if touched is None:
        m = hyper.beta_1 * state.m + rate_1 * gradient
        v = hyper.beta_2 * state.v + rate_2 * (gradient * gradient)
    else:
        if touched is not True:
            # Zero rates leave a skipped row's m and v exactly as they were.
            rate_1 = ops.where(touched, rate_1, ops.zeros_like(rate_1))
            rate_2 = ops.where(touched, rate_2, ops.zeros_like(rate_2))
        m = state.m + (gradient - state.m) * rate_1
        v = state.v + (gradient * gradient - state.v) * rate_2
    vhat = _maximum(state.vhat, v) if hyper.amsgrad else None
    var = state.var
    if hyper.weight_decay_rate is not None:
        var = var - var * hyper.weight_decay_rate
    var = var - hyper.step_size * m / (ops.sqrt(v if vhat is None else vhat) + hyper.epsilon)
    if touched is not None and touched is not True:
        # Not a zero step size: a never-touched row with epsilon=0 is 0/0.
        var = ops.where(touched, var, state.var)
    return State(var, m, v, vhat)


def _maximum(a, b):
    # Not ops.maximum: on torch it rounds float64 to float32. NaN propagates.
    return ops.where(ops.logical_or(ops.isnan(b), ops.greater(b, a)), b, a)
