"""Every private API of Keras, TensorFlow and torch that keras-lazyadam uses.

Each one is listed here with why no public API serves; the Keras accessors
used outside this module go through the functions below.
`tests/test_upstream.py` checks every entry of `PRIVATE_APIS`, so an upstream
change fails loudly there rather than somewhere in a training run.
"""

# (owner, attribute) -> why it is needed. "owner" is an importable path.
PRIVATE_APIS = {
    ("keras.optimizers.Optimizer", "_clip_gradients"): (
        "overridden by LazyAdam: Keras' clipping hook, called by `apply` "
        "before `update_step`; the norms of sparse gradients come from "
        "their summed rows"
    ),
    ("keras.optimizers.Optimizer", "_apply_weight_decay"): (
        "overridden by LazyAdam: Keras' weight-decay hook would decay every "
        "row; LazyAdam decays the touched rows inside `update_step`"
    ),
    ("keras.optimizers.Optimizer", "_clip_by_norm"): (
        "Keras' per-tensor `clipnorm` maths, reused for rows"
    ),
    ("keras.optimizers.Optimizer", "_get_variable_index"): (
        "the slot index of a variable, as Keras' own Adam uses it"
    ),
    ("keras.optimizers.Optimizer", "_var_key"): (
        "the key of a variable in the optimizer (tfa's `get_slot`)"
    ),
    ("keras.optimizers.Optimizer", "_trainable_variables_indices"): (
        "whether the optimizer was built for a variable (tfa's `get_slot`)"
    ),
    ("keras.optimizers.Optimizer", "_use_weight_decay"): (
        "whether `weight_decay` applies to a variable (`exclude_from_weight_decay`), "
        "which LazyAdam applies itself, to the touched rows"
    ),
    ("keras.optimizers.Optimizer", "_trainable_variables"): (
        "the variables of `apply(grads)` called without variables"
    ),
    ("keras.optimizers.LossScaleOptimizer", "__init__"): (
        "sets `inner_optimizer.loss_scale_factor = None`; LazyAdam's setter "
        "sees that and then hands its tables dense gradients, since the "
        "loss-scaling checks do not take torch's sparse tensors"
    ),
    ("keras.src.backend.common.global_state", "get_global_attribute"): (
        "its 'current_call_ctx' is the call context of the layer call in "
        "progress, whose `entry_layer` is the outermost model being called: "
        "`LazyEmbedding` asks that model's optimizer whether the table's "
        "gradient may be sparse (no public API names the model being run)"
    ),
    ("keras.src.backend.tensorflow.optimizer.TFOptimizer", "_all_reduce_sum_gradients"): (
        "overridden on TensorFlow: the cross-replica sum under "
        "tf.distribute, which knows only tensors and IndexedSlices"
    ),
    ("tensorflow.python.ops.control_flow_util", "GraphOrParentsInXlaContext"): (
        "whether ops are being built for XLA (`jit_compile=True`), where a "
        "dynamic row count makes each step take seconds; no public API says"
    ),
    ("tensorflow.python.checkpoint.util", "serialize_slot_variables"): (
        "not called, worked around: TF's checkpointing (tf.train.Checkpoint, "
        "SavedModel) saves as extra slot variables what `get_slot(x, name)` "
        "returns for every tracked `x` of an object whose dir() lists "
        "`get_slot_names`; Keras 3 saves the slots as the optimizer's own "
        "variables, so the TF mixin leaves `get_slot_names` out of dir() "
        "(integration_tests/test_tf_checkpoint.py checks the whole path)"
    ),
    ("torch.Tensor", "_indices"): (
        "the indices of an uncoalesced sparse COO gradient (`indices()` "
        "would coalesce it, which LazyAdam does itself)"
    ),
    ("torch.Tensor", "_values"): ("the values of an uncoalesced sparse COO gradient"),
    ("torch.optim.adam", "adam"): (
        "torch's functional Adam, the door to its fused kernel for the "
        "dense update (not in torch's documented API)"
    ),
}


def var_key(optimizer, variable):
    return optimizer._var_key(variable)


def knows_variable(optimizer, variable):
    return optimizer._var_key(variable) in optimizer._trainable_variables_indices


def trainable_variables(optimizer):
    return optimizer._trainable_variables


def clip_by_norm(optimizer, values):
    return optimizer._clip_by_norm(values)


def calling_model_optimizer():
    """The optimizer compiled into the outermost model being called right
    now (`model.fit`, `model(x)`), or None outside a model's call or when
    the model has none."""
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return getattr(getattr(context, "entry_layer", None), "optimizer", None)
