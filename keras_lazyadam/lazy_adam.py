"""The LazyAdam optimizer for Keras 3."""

import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_lazyadam import backend
from keras_lazyadam import dense_tables
from keras_lazyadam import marks
from keras_lazyadam import sparse
from keras_lazyadam import state as compact
from keras_lazyadam import upstream
from keras_lazyadam import validation
from keras_lazyadam.rule import Hyperparameters
from keras_lazyadam.rule import adam_update
from keras_lazyadam.tfa_api import TfaOptimizerAPI


@keras.saving.register_keras_serializable(package="keras_lazyadam")
class LazyAdam(
    TfaOptimizerAPI, compact.CompactStateAPI, backend.OptimizerMixin, keras.optimizers.Optimizer
):
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

    How this differs from Adam: by default (`skip_zero_rows=True`) a row of a
    dense gradient that is entirely zero is treated as absent, like a row
    missing from a sparse gradient (this keeps `model.fit` lazy where
    embedding gradients are dense: JAX, torch). Rows that skip steps see their
    moments decay less often than Adam's, and the bias correction uses the
    global step (unless `step_mode` says otherwise). With `amsgrad=True`,
    `vhat = max(vhat, v)` is kept per row and used in place of `v`. Decoupled
    `weight_decay` applies to the updated rows only.

    Sparse gradients are `tf.IndexedSlices` (TensorFlow), BCOO arrays of
    `jax.experimental.sparse` (JAX) or sparse COO tensors (torch).

    Args:
        learning_rate: A float, a scalar tensor, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable that takes no arguments and returns the value to use.
            Not a variable (as in Keras): assign `optimizer.learning_rate`
            to change it while training. Defaults to `0.001`.
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
        weight_decay: As in `keras.optimizers.Adam`, but decays only the rows
            being updated.
        clipnorm: As in `keras.optimizers.Adam`; the norm of a sparse
            gradient is computed from its summed rows.
        clipvalue: As in `keras.optimizers.Adam` (clips the summed rows).
        global_clipnorm: As in `keras.optimizers.Adam` (sparse gradients
            count their summed rows).
        use_ema: As in `keras.optimizers.Adam`.
        ema_momentum: As in `keras.optimizers.Adam`.
        ema_overwrite_frequency: As in `keras.optimizers.Adam`.
        loss_scale_factor: As in `keras.optimizers.Adam`.
        gradient_accumulation_steps: As in `keras.optimizers.Adam`.
        name: As in `keras.optimizers.Adam`.
        step_mode: How rows that skip steps are treated. `"global"`: tfa's
            rule above, bit for bit. `"catch_up"`: a row's `m` and `v` first
            decay as dense Adam's would have over the steps it skipped (the
            skipped parameter moves are not replayed; `vhat` is not
            decayed). `"per_row"`: a row's bias correction counts its own
            updates, so its first update is Adam's first update. Both keep
            an int32 counter per row, slot `"row_step"`; the maths is in
            `keras_lazyadam/rule.py`. Defaults to `"global"`.
        second_moment: `"element"` (Adam's `v`, one per element) or `"row"`:
            one `v` per row of a compact variable (see below), the row's
            mean of `g^2`, as FBGEMM's row-wise Adam (`vhat` too with
            amsgrad). Defaults to `"element"`.
        first_moment_dtype: `None` (the variable's dtype), `"bfloat16"`, or
            `"int8"` (8-bit codes per element and one float32 scale per row,
            slot `"m_scale"`): how `m` of a compact variable is stored; the
            maths runs in float32. Defaults to `None`.
        **kwargs: `lr`, the deprecated alias of `learning_rate` (tfa's
            legacy keyword; refused together with `learning_rate`), and the
            keywords of `keras.optimizers.Optimizer`.

    A variable given for any hyperparameter is refused: it is read once,
    when the optimizer is made, and later assignments would be ignored.

    Compact variables: with `second_moment="row"` or a `first_moment_dtype`,
    the embedding tables (variables named `"embeddings"` of rank 2:
    `keras.layers.Embedding`, `LazyEmbedding`) get the compact state; every
    other variable keeps the full rule. Before the optimizer is built,
    `use_compact_state(var_list=None, var_names=None)` adds variables (rank
    >= 2) and `exclude_from_compact_state(...)` removes some (as Keras'
    `exclude_from_weight_decay`; `var_names` are regular expressions searched
    in `variable.path`). `get_slot` returns slots as stored (int8 codes,
    bfloat16 bits in int16, per-row `v`); `decoded_slot` returns `m` in
    float.
    """

    def __init__(
        self,
        learning_rate=validation.DEFAULT_LEARNING_RATE,
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
        step_mode="global",
        second_moment="element",
        first_moment_dtype=None,
        **kwargs,
    ):
        if "lr" in kwargs:
            # Any `learning_rate` passed (0.001 included, by keyword or by
            # position) is not the default object.
            if learning_rate is not validation.DEFAULT_LEARNING_RATE:
                raise ValueError(
                    "Pass `learning_rate` or its deprecated alias `lr`, not "
                    f"both. Received: learning_rate={learning_rate}, "
                    f"lr={kwargs['lr']}"
                )
            warnings.warn(
                "The `lr` argument is deprecated, use `learning_rate` instead.",
                DeprecationWarning,
                stacklevel=2,
            )
            learning_rate = kwargs.pop("lr")
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            weight_decay=validation.optional_non_negative("weight_decay", weight_decay),
            clipnorm=validation.optional_non_negative("clipnorm", clipnorm),
            clipvalue=validation.optional_non_negative("clipvalue", clipvalue),
            global_clipnorm=validation.optional_non_negative("global_clipnorm", global_clipnorm),
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.beta_1 = validation.beta("beta_1", beta_1)
        self.beta_2 = validation.beta("beta_2", beta_2)
        self.epsilon = validation.non_negative("epsilon", epsilon)
        self.decay = validation.non_negative("decay", decay)
        self.amsgrad = validation.boolean("amsgrad", amsgrad)
        self.skip_zero_rows = validation.boolean("skip_zero_rows", skip_zero_rows)
        self.step_mode = validation.step_mode(step_mode)
        # Variables whose gradients are accumulated from sparse ones: their
        # accumulated (dense) gradient updates only its non-zero rows.
        self._accumulates_sparse = set()
        self.second_moment = validation.second_moment(second_moment)
        self.first_moment_dtype = validation.first_moment_dtype(first_moment_dtype)
        self._compact_include, self._compact_exclude = [], []

    def build(self, var_list):
        """Creates the slots `m`, `v` (and `vhat` with `amsgrad`) per variable,
        and `row_step` with a `step_mode` other than "global"."""
        if self.built:
            return
        validation.check_variables(var_list)
        super().build(var_list)
        if not self._inner_of_loss_scaling:
            for variable in var_list:
                marks.mark_takes_sparse(variable, self)
        names = ["m", "v", "vhat"] if self.amsgrad else ["m", "v"]
        self._codecs = [self._codec(v) for v in var_list]
        if any(self._codecs):
            self._slots = compact.add_slots(self, var_list, names, self._codecs)
        else:
            self._slots = dict(zip(names, self.add_optimizer_variables(var_list, names)))
        if self.step_mode != "global":
            self._slots["row_step"] = [self._add_row_step(v) for v in var_list]

    def _add_row_step(self, variable):
        """The `row_step` slot: one int32 counter per row (slice along axis
        0), laid out like the variable's rows under a distribution. int32,
        not float32: exact past 2^24 steps, and a row clock of the global
        step ("catch_up") must stay exact as long as `iterations`."""
        if getattr(variable, "overwrite_with_gradient", False):
            return None  # as Keras' own slots: the optimizer never updates it
        return self.add_variable(
            shape=tuple(variable.shape[:1]),
            initializer="zeros",
            dtype="int32",
            name=f"{_slot_prefix(variable)}_row_step",
            layout=backend.row_layout(variable),
        )

    def apply(self, grads, trainable_variables=None):
        """Applies gradients; sparse ones are checked and coalesced here."""
        grads = list(grads)
        if not grads:
            return None  # as Keras: an empty list is a no-op
        if trainable_variables is None:
            # As Keras' own optimizers (JAX's `stateless_apply` comes here).
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `trainable_variables`, the "
                    "optimizer must already be built on a list of variables. "
                    "Call `optimizer.build(trainable_variables)` first, or pass "
                    "`trainable_variables`."
                )
            variables = upstream.trainable_variables(self)
            if len(grads) != len(variables):
                raise ValueError(
                    "When passing `grads` without `trainable_variables`, there "
                    "must be one gradient per variable the optimizer was built "
                    f"for. Received: {len(grads)} gradients for "
                    f"{len(variables)} variables"
                )
        else:
            variables = list(trainable_variables)
            if len(grads) != len(variables):
                raise ValueError(
                    "`grads` and `trainable_variables` must have the same "
                    f"length. Received: {len(grads)} gradients for "
                    f"{len(variables)} variables"
                )
            if not self.built:
                self.build(variables)  # outside `after`: variable creation lifts
        prepared = [self._prepare(g, v) for g, v in zip(grads, variables)]
        checked = [rows for _, rows in prepared if rows is not None]
        # Every write of the step (other variables, the iteration count)
        # waits for every row check: a step that raises changes nothing.
        self._step_hyperparameters = {}  # this step's, per computation dtype
        try:
            with backend.after(checked, list(self.variables) + variables):
                return super().apply([g for g, _ in prepared], trainable_variables)
        finally:
            self._step_hyperparameters = {}

    def _prepare(self, gradient, variable):
        """`(gradient to apply, checked row indices or None)`, before any write."""
        if gradient is None:
            return None, None
        if isinstance(gradient, np.ndarray):
            gradient = ops.convert_to_tensor(gradient)
        slices = backend.to_sparse_rows(gradient, variable)
        if slices is None:
            validation.check_gradient(variable, gradient.shape, gradient.dtype)
            if self.skip_zero_rows:
                dense_tables.warn_once(variable, self)
            checked = backend.check_shape(gradient, variable)  # dims unknown when traced
            return (gradient, None) if checked is None else (checked, checked)
        indices, values = slices
        row_shape = (None,) + tuple(values.shape[1:])
        validation.check_gradient(variable, row_shape, values.dtype)
        validation.check_row_indices(variable, indices, values)
        # Before any compare or cast: narrow dtypes would wrap there.
        indices = backend.widen_indices(indices)
        name = validation.name_of(variable)
        indices = backend.check_rows(indices, variable.shape[0], name)
        rows = sparse.coalesce(indices, values, variable.shape[0])
        if self.gradient_accumulation_steps:
            # Accumulators are dense; rows left at zero stay untouched,
            # whatever `skip_zero_rows` says (see `update_step`).
            self._accumulates_sparse.add(upstream.var_key(self, variable))
            return rows.densify(variable.shape), indices
        return rows, indices

    def update_step(self, gradient, variable, learning_rate):
        """Updates one variable, lazily by rows."""
        if 0 in tuple(variable.shape):
            return  # a zero-size variable: nothing to update (as in Adam)
        hyper = self._hyperparameters(variable, learning_rate)
        index = self._get_variable_index(variable)
        # The slots as the rule sees them: `state.py` decodes and encodes
        # compact ones; full ones are read and written as they are.
        stored = {name: slots[index] for name, slots in self._slots.items()}
        slots = compact.slots_for(variable, stored, self._codecs[index])
        if slots.second_moment != "element":
            hyper = hyper._replace(second_moment=slots.second_moment)
        # Accumulated sparse gradients stay lazy whatever `skip_zero_rows`.
        lazy = upstream.var_key(self, variable) in self._accumulates_sparse
        skip_zero_rows = self.skip_zero_rows or lazy
        if isinstance(gradient, sparse.SparseRows):
            if self.step_mode == "global" and _prefers_whole(variable, gradient):
                self._update_whole(slots, gradient, hyper)
            else:
                self._update_rows(slots, gradient, hyper)
            return
        touched = True
        if skip_zero_rows and len(variable.shape) >= 2:
            touched = self._dense_rows(gradient, variable)
            if isinstance(touched, sparse.SparseRows):
                self._update_rows(slots, touched, hyper)
                return
        elif lazy:
            touched = ops.not_equal(gradient, 0)  # rank 1: a row is an element (NaN too)
        if touched is True and slots.fused:
            if backend.fused_dense_update(slots.state, gradient, hyper):
                return
        self._update_masked(slots, gradient, hyper, touched)

    def _hyperparameters(self, variable, learning_rate):
        """This step's `Hyperparameters` for `variable`: made once per step
        for all variables of a computation dtype (and weight decay)."""
        decays = self.weight_decay is not None and self._use_weight_decay(variable)
        key = (_compute_dtype(variable), decays, id(learning_rate))
        cache = getattr(self, "_step_hyperparameters", None)
        if cache is None:
            return self._make_hyperparameters(variable, learning_rate)
        if key not in cache:
            cache[key] = self._make_hyperparameters(variable, learning_rate)
        return cache[key]

    def _make_hyperparameters(self, variable, learning_rate):
        dtype = _compute_dtype(variable)
        lr = ops.cast(learning_rate, dtype)
        if self.decay:
            lr = lr / (1 + self.decay * ops.cast(self.iterations, dtype))
        weight_decay_rate = None
        if self.weight_decay is not None and self._use_weight_decay(variable):
            weight_decay_rate = _to_dtype(self.weight_decay, dtype) * lr
        return Hyperparameters(
            learning_rate=lr,
            beta_1=_to_dtype(self.beta_1, dtype),
            beta_2=_to_dtype(self.beta_2, dtype),
            epsilon=_to_dtype(self.epsilon, dtype),
            step=ops.cast(self.iterations + 1, dtype),
            weight_decay_rate=weight_decay_rate,
            amsgrad=self.amsgrad,
            step_mode=self.step_mode,
            global_step=(
                ops.cast(self.iterations + 1, "int32") if self.step_mode == "catch_up" else None
            ),
        )

    def _dense_rows(self, gradient, variable):
        """The rows of a dense gradient to update: a `SparseRows` of its
        non-zero rows where the backend picks them cheaply and the variable
        is large enough for the row update to pay; else the mask of its
        touched rows (or True: every row)."""
        if not _prefers_whole(variable, None):
            found = backend.nonzero_rows(gradient)
            if found is True:
                return True
            if found is not None:
                return sparse.unique_rows(*found, variable.shape[0])
        return backend.touched_rows(gradient)

    def _update_rows(self, slots, rows, hyper):
        """The rule on the gathered rows, written back with row scatters."""
        index, gradient = rows.rows, rows.sums
        if slots.fused and backend.fused_row_update(slots.state, index, gradient, hyper):
            return
        dtype = _compute_dtype(slots.state.var)
        gradient = ops.cast(gradient, dtype)
        new = adam_update(slots.gather(index).cast(dtype), gradient, hyper)
        slots.scatter(self, index, new, gradient, hyper.beta_1)

    def _update_whole(self, slots, rows, hyper):
        """A sparse gradient of a small variable applied to the whole of it,
        masked by its rows: the same values as `_update_rows` (the sparse
        form of the rule; a listed row with a zero sum is updated), without
        the cost of gathers and scatters."""
        gradient, touched = rows.densify_with_mask(slots.state.var.shape)
        self._update_masked(slots, gradient, hyper, touched, sparse_form=True)

    def _update_masked(self, slots, gradient, hyper, touched, sparse_form=None):
        """The rule on the whole variable, rows masked out by `touched`
        (True: none) left as they were; see `adam_update`."""
        dtype = _compute_dtype(slots.state.var)
        gradient = ops.cast(gradient, dtype)
        new = adam_update(
            slots.read().cast(dtype),
            gradient,
            hyper,
            touched,
            sparse_form=sparse_form,
            select_m=not slots.selects_m,
        )
        slots.write(self, new, touched, gradient, hyper.beta_1)

    def _apply_weight_decay(self, variables):
        return  # Keras' hook; LazyAdam decays the touched rows in `update_step`

    def _clip_gradients(self, grads):
        """Keras' clipping, with norms of sparse gradients from their rows."""
        return sparse.clip_gradients(
            grads,
            clipnorm=self.clipnorm,
            global_clipnorm=self.global_clipnorm,
            clipvalue=self.clipvalue,
            clip_by_norm=lambda g: upstream.clip_by_norm(self, g),
        )

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

    # The TensorFlow backend re-coalesces after its cross-replica sum.
    _coalesce = staticmethod(sparse.coalesce)

    def get_config(self):
        validation.check_saveable(self, ("beta_1", "beta_2"))
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "amsgrad": self.amsgrad,
                "skip_zero_rows": self.skip_zero_rows,
                "decay": self.decay,
                "step_mode": self.step_mode,
            }
        )
        config.update(
            {
                "second_moment": self.second_moment,
                "first_moment_dtype": self.first_moment_dtype,
                "compact_state_include": list(self._compact_include),
                "compact_state_exclude": list(self._compact_exclude),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Creates a LazyAdam from `get_config()`, or from a tfa config."""
        config = dict(config)
        config.pop("is_legacy_optimizer", None)  # written by Keras 2.11+
        if "lr" in config:
            if "learning_rate" in config:
                raise ValueError(
                    "A config may hold `learning_rate` or its deprecated alias "
                    f"`lr`, not both. Received: learning_rate="
                    f"{config['learning_rate']}, lr={config['lr']}"
                )
            config["learning_rate"] = config.pop("lr")
        include = config.pop("compact_state_include", None)
        exclude = config.pop("compact_state_exclude", None)
        optimizer = super().from_config(config, custom_objects=custom_objects)
        optimizer.use_compact_state(var_names=include)
        optimizer.exclude_from_compact_state(var_names=exclude)
        return optimizer


def _prefers_whole(variable, rows):
    """Whether an update of the whole variable, masked by the rows of its
    gradient (a `SparseRows`, or None for a dense gradient), costs no more
    than the row update (small tables: 2, 7, 20 rows). `step_mode`'s row
    clocks keep the row update on sparse gradients: their per-row powers
    round by position in a vector on some kernels (TF's Eigen)."""
    row_size = math.prod(variable.shape[1:])  # not np.prod: 10x the time, every step
    slots = None if rows is None else rows.rows.shape[0]
    return backend.prefers_whole_update(variable.shape[0], row_size, slots)


def _slot_prefix(variable):
    # As Keras names its slots (`add_variable_from_reference`); a tf.Variable has no path.
    if hasattr(variable, "path"):
        return variable.path.replace("/", "_")
    return str(variable.name).replace("/", "_").replace(":", "_")


def _compute_dtype(variable):
    # 16-bit variables keep 16-bit slots, but the maths runs in float32:
    # 1 - beta_2 = 0.001 does not survive a cast to bfloat16.
    dtype = keras.backend.standardize_dtype(variable.dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def _to_dtype(value, dtype):
    if callable(value):
        value = value()
    # `ops.cast` would round a Python float to float32 on its way to float64.
    if isinstance(value, (int, float)):
        return ops.convert_to_tensor(value, dtype=dtype)
    return ops.cast(value, dtype)
