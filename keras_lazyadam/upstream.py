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
    ("keras.optimizers.Optimizer", "_backend_update_step"): (
        "overridden on torch: the loop that calls `update_step` for every "
        "variable; LazyAdam groups the fused dense updates of a step into "
        "one multi-tensor kernel there, as Keras' own Adam does"
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
    ("keras.optimizers.Optimizer", "_iterations"): (
        "the count of `apply` calls: with `gradient_accumulation_steps`, the "
        "public `iterations` is derived from it and cannot be assigned "
        "(`load_tfa_weights` sets it)"
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
    ("keras.layers.Layer", "_flatten_layers"): (
        "every layer nested in a model, at any depth (`use_lazy_embedding`, "
        "the dense-table warning): `Model.layers` lists only the top level, "
        "and a subclassed model's or layer's sublayers are reached no other way"
    ),
    ("keras.src.models.functional", "Functional"): (
        "whether a model is a plain Functional model that "
        "`keras.models.clone_model` can copy (`use_lazy_embedding`)"
    ),
    ("keras.src.api_export", "REGISTERED_OBJS_TO_NAMES"): (
        "the public `keras.*` name a class is saved under; the lazy-lookup "
        "subclass that `use_lazy_embedding` gives an Embedding subclass is "
        "saved under its original's name"
    ),
    ("keras.src.saving.object_registration", "GLOBAL_CUSTOM_NAMES"): (
        "the registered name a class is saved under (as above, for "
        "registered Embedding subclasses such as keras-rs' EmbedReduce)"
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


def iteration_counter(optimizer):
    """The variable counting `apply` calls (`iterations` itself without
    gradient accumulation)."""
    return optimizer._iterations


def clip_by_norm(optimizer, values):
    return optimizer._clip_by_norm(values)


def calling_model_optimizer():
    """The optimizer compiled into the outermost model being called right
    now (`model.fit`, `model(x)`), or None outside a model's call or when
    the model has none."""
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return getattr(getattr(context, "entry_layer", None), "optimizer", None)


def flatten_layers(layer):
    """`layer` and every layer nested in it, each once."""
    return layer._flatten_layers(include_self=True, recursive=True)


def is_plain_functional(model):
    """A Functional model whose config Keras writes itself (not a subclass
    with its own `get_config`): `clone_model` rebuilds it from its graph."""
    from keras.src.models.functional import Functional

    return isinstance(model, Functional) and type(model).get_config is Functional.get_config


def save_as(cls, original):
    """Makes Keras save instances of `cls` exactly as instances of
    `original` (same module, class name and registered name)."""
    from keras.src import api_export
    from keras.src.saving import object_registration

    if original in api_export.REGISTERED_OBJS_TO_NAMES:
        api_export.REGISTERED_OBJS_TO_NAMES[cls] = api_export.REGISTERED_OBJS_TO_NAMES[original]
    if original in object_registration.GLOBAL_CUSTOM_NAMES:
        names = object_registration.GLOBAL_CUSTOM_NAMES
        names[cls] = names[original]
