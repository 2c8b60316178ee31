"""tfa's (Keras 2's) optimizer API on top of a Keras 3 optimizer.

`TfaOptimizerAPI` is mixed into `LazyAdam` so that code written for
`tfa.optimizers.LazyAdam` keeps running: `minimize`, `get_gradients`,
`get_slot`, `add_slot`, `get_slot_names`, `add_weight`, `get_weights`,
`set_weights`, `weights` and `variables()`. See also `migration.py` (tfa configs and state).
"""

from keras import ops

from keras_lazyadam import backend
from keras_lazyadam import upstream
from keras_lazyadam import validation


class TfaOptimizerAPI:
    """Keras 2 / tfa methods. Expects the host to keep `self._slots`, a dict
    from slot name to the list of slot variables (one per variable), once
    built."""

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
        return backend.compute_gradients(loss, list(params), tape)

    def get_updates(self, loss, params):
        raise NotImplementedError(
            "`get_updates` built graph-mode update ops in Keras 1/2, which "
            "Keras 3 does not have. Use `minimize(loss_fn, var_list)` or "
            "`apply_gradients(zip(grads, variables))` instead."
        )

    def get_slot_names(self):
        """The slot names: `["m", "v"]`, `"vhat"` with `amsgrad`,
        `"row_step"` with a `step_mode` other than "global", and `"m_scale"`
        with `first_moment_dtype="int8"` (once built: if a variable has it)."""
        if self.built:
            return list(self._slots)
        names = ["m", "v", "vhat"][: 2 + self.amsgrad]
        if getattr(self, "first_moment_dtype", None) == "int8":
            names.append("m_scale")
        if getattr(self, "step_mode", "global") != "global":
            names.append("row_step")
        return names

    def get_slot(self, var, slot_name):
        """Returns the slot variable `slot_name` ("m", "v", "vhat",
        "row_step", "m_scale") of `var`, as stored: with compact state
        (`second_moment`, `first_moment_dtype`) `v`/`vhat` may hold one value
        per row, `m` int8 codes or bfloat16 bits in int16 (`decoded_slot`
        gives floats). `var` is a variable the optimizer was built for (on
        TensorFlow also a plain `tf.Variable` it was built for, or the
        `tf.Variable` inside such a Keras variable).

        (On TensorFlow, `get_slot_names` is left out of `dir(optimizer)`:
        TensorFlow's checkpointing would save each slot twice; see
        `backend/tensorflow.py`.)"""
        if slot_name not in self.get_slot_names():
            raise ValueError(
                f"`slot_name` must be one of {self.get_slot_names()}. "
                f"Received: slot_name={slot_name!r}"
            )
        if not self.built:
            raise ValueError(
                "The optimizer has no slots yet: call `build(var_list)` or apply gradients first."
            )
        if not (hasattr(var, "path") or backend.is_native_variable(var)):
            raise TypeError(
                "`var` must be one of the variables the optimizer was built "
                f"for. Received: an object of type {type(var).__name__}"
            )
        if not upstream.knows_variable(self, var):
            raise ValueError(
                f"Unknown variable: {var}. This optimizer was built for "
                f"{[validation.name_of(v) for v in upstream.trainable_variables(self)]}."
            )
        slot = self._slots[slot_name][self._get_variable_index(var)]
        if slot is None and slot_name == "m_scale":
            raise ValueError(
                f"Variable {validation.name_of(var)!r} keeps the full state: it has no "
                "`m_scale` slot (only variables with int8 first moments do)."
            )
        return slot

    def add_slot(self, var, slot_name, initializer="zeros"):
        """Returns slot `slot_name` of `var` ("m", "v", "vhat"), as tfa did.

        New slots are refused: Keras 3 would neither save nor restore them
        with the optimizer.
        """
        if slot_name not in ("m", "v", "vhat"):
            raise ValueError(
                f"LazyAdam's slots are {self.get_slot_names()}; `add_slot` "
                f"cannot add {slot_name!r}: Keras 3 optimizers create their "
                "slots in `build`, and an extra one would not be saved. Keep "
                "extra per-variable state in a variable of your own."
            )
        if not self.built:
            raise ValueError(
                "Call `build(var_list)` before `add_slot`: Keras 3 optimizers "
                "create their slots when they are built."
            )
        return self.get_slot(var, slot_name)

    def add_weight(self, name, shape, dtype=None, initializer="zeros", **kwargs):
        """tfa's `add_weight`: an optimizer variable (never trainable)."""
        if kwargs.get("trainable"):
            raise ValueError("Optimizer weights cannot be trainable. Received: trainable=True")
        return self.add_variable(shape, initializer=initializer, dtype=dtype, name=name)

    def set_weights(self, weights):
        """Sets `variables` from numpy arrays; checks all before writing any."""
        weights = list(weights)
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(
                f"`set_weights` expects {len(variables)} arrays (this "
                f"optimizer's `variables`). Received: {len(weights)} arrays"
            )
        for variable, value in zip(variables, weights):
            if tuple(variable.shape) != tuple(getattr(value, "shape", ())):
                raise ValueError(
                    f"Optimizer variable {variable.path!r} has shape "
                    f"{tuple(variable.shape)}. Received: an array of shape "
                    f"{tuple(getattr(value, 'shape', ()))}"
                )
        super().set_weights(weights)

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
