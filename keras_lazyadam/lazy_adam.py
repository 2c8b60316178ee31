"""The LazyAdam optimizer for Keras 3."""

import warnings

import keras
from keras import ops

from keras_lazyadam import backend as lazy_backend
from keras_lazyadam.embedding import mark_sparse_ok
from keras_lazyadam.sparse import SparseRows
from keras_lazyadam.sparse import coalesce
from keras_lazyadam.sparse import unique_rows

SLOT_NAMES = ("m", "v", "vhat")


@keras.saving.register_keras_serializable(package="keras_lazyadam")
class LazyAdam(lazy_backend.OptimizerMixin, keras.optimizers.Optimizer):
    """Adam that updates only the rows a gradient touches.

    The successor of `tfa.optimizers.LazyAdam` for Keras 3, on the TensorFlow,
    JAX and PyTorch backends. Adam ([Kingma et al., 2014](
    http://arxiv.org/abs/1412.6980)) updates the moments of every row of an
    embedding table at every step; LazyAdam updates only the rows present in
    the gradient, which is much faster for large tables and usually trains as
    well.

    With `t = iterations + 1` and
    `alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`, for a sparse gradient
    with rows `I` and values `g` (duplicate rows summed first):

    ```
    m[I]   = beta_1 * m[I] + (1 - beta_1) * g
    v[I]   = beta_2 * v[I] + (1 - beta_2) * g^2
    var[I] = var[I] - alpha * m[I] / (sqrt(v[I]) + epsilon)
    ```

    Rows not in `I` keep their value, `m` and `v` bit for bit. A row listed in
    `I` whose summed gradient is zero still counts as touched (as in tfa).

    How this differs from Adam: a dense gradient gets the Adam update, except
    that by default (`skip_zero_rows=True`) a row of a variable of rank >= 2
    whose gradient is entirely zero is treated as absent, like a row missing
    from a sparse gradient. That keeps `model.fit` lazy on backends whose
    embedding gradients are dense (JAX, torch). Rows that skip steps see their
    moments decay less often than Adam's would, and the bias correction uses
    the global step. With `amsgrad=True`, `vhat = max(vhat, v)` is kept per row
    and used in place of `v`. Decoupled `weight_decay` applies to the updated
    rows only.

    Sparse gradients are `tf.IndexedSlices` (TensorFlow), BCOO arrays of
    `jax.experimental.sparse` (JAX) or sparse COO tensors (torch).

    Args:
        learning_rate: A float, a scalar tensor, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use.
            Defaults to `0.001`.
        beta_1: A float, a scalar tensor, or a callable that takes no
            arguments and returns the value to use. The exponential decay rate
            for the 1st moment estimates. Defaults to `0.9`.
        beta_2: A float, a scalar tensor, or a callable that takes no
            arguments and returns the value to use. The exponential decay rate
            for the 2nd moment estimates. Defaults to `0.999`.
        epsilon: A small constant for numerical stability ("epsilon hat" in
            the paper, as in tfa and Keras). Defaults to `1e-7`.
        amsgrad: Boolean. Whether to apply the AMSGrad variant ("On the
            Convergence of Adam and Beyond"). Defaults to `False`.
        skip_zero_rows: Boolean. If `True`, a dense gradient's rows that are
            entirely zero (slices along axis 0 of a variable of rank >= 2)
            are left untouched, as rows absent from a sparse gradient are. If
            `False`, dense gradients get exactly tfa's (and Adam's) dense
            update. Defaults to `True`.
        decay: Float >= 0. tfa's legacy inverse-time decay: the learning rate
            of step `iterations` is `lr / (1 + decay * iterations)`. Prefer a
            `LearningRateSchedule`. Defaults to `0.0`.
        weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema,
            ema_momentum, ema_overwrite_frequency, loss_scale_factor,
            gradient_accumulation_steps, name: as in `keras.optimizers.Adam`.
            `weight_decay` decays only the rows being updated; clipping
            norms of sparse gradients are computed from their summed rows.
        lr: Deprecated alias of `learning_rate` (tfa's legacy keyword).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        skip_zero_rows=True,
        decay=0.0,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        if "lr" in kwargs:
            warnings.warn(
                "The `lr` argument is deprecated, use `learning_rate` instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            learning_rate = kwargs.pop("lr")
        super().__init__(
            learning_rate=_check_learning_rate(learning_rate),
            name=name,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.beta_1 = _check_beta("beta_1", beta_1)
        self.beta_2 = _check_beta("beta_2", beta_2)
        self.epsilon = _check_non_negative("epsilon", epsilon)
        self.decay = _check_non_negative("decay", decay)
        self.amsgrad = _check_bool("amsgrad", amsgrad)
        self.skip_zero_rows = _check_bool("skip_zero_rows", skip_zero_rows)

    def build(self, var_list):
        """Creates the slots `m`, `v` (and `vhat` with `amsgrad`) per variable."""
        if self.built:
            return
        for variable in var_list:
            if not _is_float(variable.dtype):
                raise ValueError(
                    "LazyAdam can only train floating-point variables. "
                    f"Received: variable {_name(variable)!r} with "
                    f"dtype={variable.dtype}"
                )
        super().build(var_list)
        if not self._inner_of_loss_scaling:
            for variable in var_list:
                mark_sparse_ok(variable)
        self._slots = {}
        self._slots["m"], self._slots["v"] = self.add_optimizer_variables(
            var_list, ["m", "v"]
        )
        if self.amsgrad:
            self._slots["vhat"] = self.add_optimizer_variables(var_list, "vhat")
        self._extra_slots = {}

    def apply(self, grads, trainable_variables=None):
        """Applies gradients; sparse ones are coalesced here, once."""
        grads = list(grads)
        variables = (
            self._trainable_variables
            if trainable_variables is None
            else list(trainable_variables)
        )
        if not self.built and trainable_variables is not None:
            self.build(variables)  # outside `after`: variable creation lifts
        prepared = [self._prepare(g, v) for g, v in zip(grads, variables)]
        grads = [g for g, _ in prepared]
        checked = [c for _, c in prepared if c is not None]
        # Every write of the step (other variables, the iteration count)
        # waits for every row check: a step that raises changes nothing.
        with lazy_backend.after(checked):
            return super().apply(grads, trainable_variables)

    def _prepare(self, gradient, variable):
        """Checks a gradient and coalesces it if sparse (before any write).

        Returns the gradient to apply and the checked row indices (or None).
        """
        if gradient is None:
            return None, None
        rows = lazy_backend.to_sparse_rows(gradient, variable)
        shape = gradient.shape if rows is None else (None,) + tuple(rows[1].shape[1:])
        dtype = gradient.dtype if rows is None else rows[1].dtype
        _check_gradient(variable, shape, dtype)
        if rows is None:
            return gradient, None
        indices = lazy_backend.check_rows(rows[0], variable.shape[0], _name(variable))
        sparse = coalesce(indices, rows[1])
        if self.gradient_accumulation_steps:
            # Accumulators are dense; rows left at zero stay untouched.
            return sparse.densify(variable.shape), indices
        return sparse, indices

    def update_step(self, gradient, variable, learning_rate):
        """Updates one variable, lazily by rows."""
        # 16-bit variables keep 16-bit slots, but the maths runs in float32:
        # 1 - beta_2 = 0.001 does not survive a cast to bfloat16.
        dtype = variable.dtype
        if dtype in ("float16", "bfloat16"):
            dtype = "float32"
        lr = ops.cast(learning_rate, dtype)
        if self.decay:
            lr = lr / (1 + self.decay * ops.cast(self.iterations, dtype))
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = _to_dtype(_resolve(self.beta_1), dtype)
        beta_2 = _to_dtype(_resolve(self.beta_2), dtype)
        hyper = {
            "beta_1": beta_1,
            "beta_2": beta_2,
            "alpha": lr
            * ops.sqrt(1 - ops.power(beta_2, step))
            / (1 - ops.power(beta_1, step)),
            "epsilon": _to_dtype(self.epsilon, dtype),
            "decay": None,
            "dtype": dtype,
            "lr": lr,
            "step": step,
        }
        if self.weight_decay is not None and self._use_weight_decay(variable):
            hyper["decay"] = _to_dtype(self.weight_decay, dtype) * lr
        index = self._get_variable_index(variable)
        slots = [self._slots[n][index] for n in SLOT_NAMES if n in self._slots]
        rows = self._touched_rows(gradient, variable)
        if rows is None:
            self._update_dense(variable, slots, gradient, hyper)
        else:
            self._update_rows(variable, slots, rows, hyper)

    def _touched_rows(self, gradient, variable):
        if isinstance(gradient, SparseRows):
            return gradient
        if self.skip_zero_rows and len(variable.shape) >= 2:
            found = lazy_backend.nonzero_rows(gradient)
            if found is not None:
                return unique_rows(*found)
        return None

    def _update_rows(self, variable, slots, rows, h):
        """tfa's sparse update of the rows `rows.indices`, written back."""
        index, g = rows.rows(lazy_backend.unique_count(rows.segments))
        g = ops.cast(g, h["dtype"])

        def gather(target):
            return ops.cast(lazy_backend.gather_rows(target, index), h["dtype"])

        m = h["beta_1"] * gather(slots[0]) + (1 - h["beta_1"]) * g
        v = h["beta_2"] * gather(slots[1]) + (1 - h["beta_2"]) * (g * g)
        var = gather(variable)
        new = [m, v]
        if self.amsgrad:
            v = ops.maximum(gather(slots[2]), v)
            new.append(v)
        if h["decay"] is not None:
            var = var - var * h["decay"]
        var = var - h["alpha"] * m / (ops.sqrt(v) + h["epsilon"])
        for target, value in zip([variable] + slots, [var] + new):
            lazy_backend.scatter_rows(self, target, index, value)

    def _update_dense(self, variable, slots, g, h):
        """Adam's dense update (tfa's fused kernel), masked by rows if lazy."""
        if lazy_backend.fused_dense_update(variable, slots, g, h):
            return
        targets = [variable] + slots
        old = [ops.cast(t, h["dtype"]) for t in targets]
        g = ops.cast(g, h["dtype"])
        rate_1, rate_2 = 1 - h["beta_1"], 1 - h["beta_2"]
        touched = None
        if self.skip_zero_rows and len(variable.shape) >= 2:
            axes = tuple(range(1, len(variable.shape)))
            # Not max/min != 0, though XLA reduces those faster: TF's XLA on
            # CPU drops NaN in min/max, and a NaN row must count as touched.
            touched = ops.any(ops.not_equal(g, 0), axis=axes, keepdims=True)
            # Untouched rows get zero rates, so m and v come out exactly as
            # they were (v + (0 - v) * 0 == v). Selecting between whole new
            # and old tables instead is 4x slower under XLA on CPU.
            rate_1 = ops.where(touched, rate_1, ops.zeros_like(rate_1))
            rate_2 = ops.where(touched, rate_2, ops.zeros_like(rate_2))
        m = old[1] + (g - old[1]) * rate_1
        v = old[2] + (ops.square(g) - old[2]) * rate_2
        new = [m, v]
        if self.amsgrad:
            v = ops.maximum(old[3], v)
            new.append(v)
        var = old[0]
        if h["decay"] is not None:
            var = var - var * h["decay"]
        var = var - (m * h["alpha"]) / (ops.sqrt(v) + h["epsilon"])
        if touched is not None:
            var = ops.where(touched, var, old[0])
        for target, value in zip(targets, [var] + new):
            self.assign(target, value)

    @property
    def loss_scale_factor(self):
        return self._loss_scale_factor

    @loss_scale_factor.setter
    def loss_scale_factor(self, value):
        # `keras.optimizers.LossScaleOptimizer` resets its inner optimizer's
        # factor after construction. It then checks gradients with ops that
        # torch's sparse tensors lack, so `LazyEmbedding` must not hand this
        # optimizer's tables sparse gradients (see `build`).
        self._inner_of_loss_scaling = hasattr(self, "_loss_scale_factor")
        self._loss_scale_factor = value

    def _apply_weight_decay(self, variables):
        # Applied inside `update_step`, to the touched rows only.
        return

    def _clip_gradients(self, grads):
        """Keras' clipping, with norms of sparse gradients from their rows."""
        if self.clipnorm and self.clipnorm > 0:
            return [_map_values(self._clip_by_norm, g) for g in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            squares = [
                ops.cast(_squared_norm(g), "float32") for g in grads if g is not None
            ]
            norm = ops.sqrt(ops.sum(ops.stack(squares)))
            clip = self.global_clipnorm
            # NaN/Inf norms make the scale NaN, as in Keras.
            scale = clip * ops.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
            return [
                None if g is None else g * ops.cast(scale, _dtype(g)) for g in grads
            ]
        if self.clipvalue and self.clipvalue > 0:
            c = self.clipvalue
            return [_map_values(lambda x: ops.clip(x, -c, c), g) for g in grads]
        return grads

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "amsgrad": self.amsgrad,
                "skip_zero_rows": self.skip_zero_rows,
                "decay": self.decay,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Creates a LazyAdam from `get_config()`, or from a tfa config."""
        config = dict(config)
        config.pop("is_legacy_optimizer", None)  # written by Keras 2.11+
        if "lr" in config:
            config["learning_rate"] = config.pop("lr")
        return super().from_config(config, custom_objects=custom_objects)

    # tfa / Keras 2 optimizer API.

    def minimize(self, loss, var_list, tape=None):
        """Computes the gradients of `loss` and applies them.

        Args:
            loss: A callable taking no arguments and returning the loss (or,
                on TensorFlow with `tape`, the loss tensor recorded on it).
            var_list: The variables to train, or a callable returning them.
            tape: A `tf.GradientTape` (TensorFlow only). Defaults to `None`.

        Returns:
            The iteration count, as tfa did.
        """
        if callable(var_list):
            var_list = var_list()
        var_list = list(var_list)
        grads = self.get_gradients(loss, var_list, tape=tape)
        self.apply(grads, var_list)
        return self.iterations

    def get_gradients(self, loss, params, tape=None):
        """Returns the gradients of a callable `loss` with respect to `params`."""
        if not callable(loss) and tape is None:
            raise ValueError(
                "`loss` must be a callable that takes no arguments and returns "
                "the loss: Keras 3 has no graph-mode loss tensors. Received: "
                f"loss={loss!r}"
            )
        return lazy_backend.compute_gradients(loss, list(params), tape)

    def get_updates(self, loss, params):
        raise NotImplementedError(
            "`get_updates` built graph-mode update ops in Keras 1/2, which "
            "Keras 3 does not have. Use `minimize(loss_fn, var_list)` or "
            "`apply_gradients(zip(grads, variables))` instead."
        )

    def get_slot_names(self):
        """The slot names: `["m", "v"]`, and `"vhat"` with `amsgrad`."""
        return list(SLOT_NAMES[: 3 if self.amsgrad else 2]) + sorted(
            {name for _, name in getattr(self, "_extra_slots", {})}
        )

    def get_slot(self, var, slot_name):
        """Returns the slot variable `slot_name` ("m", "v", "vhat") of `var`."""
        if slot_name not in self.get_slot_names():
            raise ValueError(
                f"`slot_name` must be one of {self.get_slot_names()}. "
                f"Received: slot_name={slot_name!r}"
            )
        if not self.built:
            raise ValueError(
                "The optimizer has no slots yet: call `build(var_list)` or "
                "apply gradients first."
            )
        key = self._var_key(var)
        if (key, slot_name) in self._extra_slots:
            return self._extra_slots[(key, slot_name)]
        if key not in self._trainable_variables_indices:
            raise ValueError(
                f"Unknown variable: {var}. This optimizer was built for "
                f"{[v.path for v in self._trainable_variables]}."
            )
        return self._slots[slot_name][self._get_variable_index(var)]

    def add_slot(self, var, slot_name, initializer="zeros"):
        """Returns slot `slot_name` of `var`, creating it if it is new."""
        if slot_name in SLOT_NAMES[: 3 if self.amsgrad else 2] and self.built:
            return self.get_slot(var, slot_name)
        if not self.built:
            raise ValueError(
                "Call `build(var_list)` before `add_slot`: Keras 3 optimizers "
                "create their slots when they are built."
            )
        key = (self._var_key(var), slot_name)
        if key not in self._extra_slots:
            self._extra_slots[key] = self.add_variable_from_reference(
                var, name=slot_name, initializer=initializer
            )
        return self._extra_slots[key]

    def add_weight(self, name, shape, dtype=None, initializer="zeros", **kwargs):
        """tfa's `add_weight`: an optimizer variable (never trainable)."""
        if kwargs.get("trainable"):
            raise ValueError(
                "Optimizer weights cannot be trainable. Received: trainable=True"
            )
        return self.add_variable(shape, initializer=initializer, dtype=dtype, name=name)

    def get_weights(self):
        """The values of `variables` as numpy arrays (iterations first)."""
        return [ops.convert_to_numpy(v) for v in self.variables]

    @property
    def weights(self):
        """The optimizer's variables (Keras 2 name)."""
        return self.variables

    @property
    def variables(self):
        """The optimizer's variables; also callable, as `variables()` in tfa."""
        return _CallableList(super().variables)


class _CallableList(list):
    """A list that returns itself when called: Keras 2's `variables()`."""

    def __call__(self):
        return self


def _name(variable):
    return getattr(variable, "path", None) or variable.name


def _is_float(dtype):
    return "float" in keras.backend.standardize_dtype(dtype)


def _check_gradient(variable, shape, dtype):
    expected = tuple(variable.shape)
    shape = tuple(shape)
    if len(shape) != len(expected) or any(
        s is not None and e is not None and s != e for s, e in zip(shape, expected)
    ):
        raise ValueError(
            f"The gradient of variable {_name(variable)!r} must have the "
            f"variable's shape {expected}. Received: gradient shape={shape}"
        )
    if not _is_float(dtype):
        raise ValueError(
            f"The gradient of variable {_name(variable)!r} must be floating "
            f"point. Received: gradient dtype={dtype}"
        )


def _map_values(fn, g):
    if g is None:
        return None
    if isinstance(g, SparseRows):
        return g.with_sums(fn(g.sums))
    return fn(g)


def _squared_norm(g):
    if isinstance(g, SparseRows):
        return g.squared_norm()
    return ops.sum(ops.square(g))


def _dtype(g):
    return (g.sums if isinstance(g, SparseRows) else g).dtype


def _to_dtype(value, dtype):
    # `ops.cast` would round a Python float to float32 on its way to float64.
    if isinstance(value, (int, float)):
        return ops.convert_to_tensor(value, dtype=dtype)
    return ops.cast(value, dtype)


def _resolve(value):
    return value() if callable(value) else value


def _as_float(name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must be a float or a scalar tensor. "
            f"Received: {name}={value!r}"
        ) from None


def _check_learning_rate(value):
    if isinstance(
        value, keras.optimizers.schedules.LearningRateSchedule
    ) or callable(value):
        return value
    value = _as_float("learning_rate", value)
    if value < 0:
        raise ValueError(
            f"`learning_rate` must be >= 0. Received: learning_rate={value}"
        )
    return value


def _check_beta(name, value):
    if callable(value):
        return value
    value = _as_float(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value}")
    return value


def _check_non_negative(name, value):
    value = _as_float(name, value)
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")
    return value


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"`{name}` must be a bool (True or False). Received: {name}={value!r}"
        )
    return value
