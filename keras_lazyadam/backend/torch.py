"""PyTorch half of LazyAdam: sparse COO in, in-place row writes out."""

import math
import threading

import torch
from keras import ops
from torch.optim.adam import adam as functional_adam

from keras_lazyadam import validation

_OTHER_SPARSE = (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


def to_sparse_rows(grad, variable):
    if not isinstance(grad, torch.Tensor) or grad.layout == torch.strided:
        return None
    name = validation.name_of(variable)
    if grad.layout in _OTHER_SPARSE:
        raise TypeError(
            f"The gradient of {name!r} must be dense or sparse COO. Received: "
            f"layout={grad.layout}; convert it with `.to_sparse_coo()`."
        )
    validation.check_shape(variable, grad.shape)
    # `_indices()`/`_values()` are the accessors of an uncoalesced tensor
    # (`indices()` would force a coalesce, which LazyAdam does itself).
    # On the variable's device (a gradient built on the CPU for a CUDA table).
    device = _tensor(variable).device
    indices, values = grad._indices().to(device), grad._values().to(device)
    rows = indices[0]
    if grad.sparse_dim() > 1:
        sizes = torch.tensor(grad.shape[1 : grad.sparse_dim()], device=indices.device)
        inner = indices[1:]
        bad = ((inner < 0) | (inner >= sizes[:, None])).any(0)
        if bool(bad.any()):
            raise ValueError(
                f"Element indices of the gradient of {name!r} must be inside "
                f"the variable's shape {tuple(grad.shape)}. Received: "
                f"{indices[:, bad][:, :5].T.tolist()}"
            )
        # Element-sparse (or partly): each entry becomes a row slice.
        row_shape = grad.shape[1:]
        expanded = values.new_zeros((rows.shape[0],) + tuple(row_shape))
        position = torch.arange(rows.shape[0], device=rows.device)
        expanded[(position,) + tuple(inner)] = values
        values = expanded
    return rows, values


def sparse_gradient(indices, values, shape):
    values = ops.convert_to_tensor(values)  # on Keras' device, as variables are
    indices = torch.as_tensor(indices, dtype=torch.int64, device=values.device)[None, :]
    return torch.sparse_coo_tensor(indices, values, tuple(shape))


def check_rows(indices, num_rows, name):
    # One device-to-host sync on GPU, as torch's own sparse optimizers pay.
    if indices.numel() == 0:
        return indices
    low, high = torch.aminmax(indices)
    if bool((low < 0) | (high >= num_rows)):
        bad = indices[(indices < 0) | (indices >= num_rows)][:5].tolist()
        raise ValueError(
            f"Row indices of the gradient of {name!r} must be in [0, {num_rows}). Received: {bad}"
        )
    return indices


def sum_rows(values, segments, num_segments):
    out = values.new_zeros((num_segments,) + tuple(values.shape[1:]))
    return out.index_add_(0, segments, values)


def coalesce(indices, values, num_rows):
    # Dynamic shapes: exactly one slot per unique row, no spare slots, rows
    # ascending (`fused_row_update` relies on it).
    # torch.unique is one kernel, 2x faster than argsort + gathers.
    rows, segments = torch.unique(indices, return_inverse=True)
    return rows, sum_rows(values, segments, rows.shape[0])


def nonzero_rows(grad):
    if grad.numel() == 0:
        return None
    reduce_dims = tuple(range(1, grad.ndim))
    if grad.numel() <= _SMALL_VALUES:
        # Small: the fewest ops. A row's sum of |g| is zero iff the row is
        # (a sum of non-negatives does not cancel; NaN propagates).
        rows = torch.nonzero(grad.abs().sum(reduce_dims)).flatten()
    else:
        # A non-zero row sum proves a row touched (NaN included), at half
        # the cost of the exact test below; dense kernels usually stop here.
        if bool(torch.all(grad.sum(reduce_dims) != 0)):
            return True  # every row is touched: the fused dense update serves
        # A row is touched iff its max or its min is non-zero (NaN
        # propagates): the same rows as any(grad != 0), 8x faster on CPU,
        # where a boolean table or |grad| would be materialised first.
        touched = (torch.amax(grad, reduce_dims) != 0) | (torch.amin(grad, reduce_dims) != 0)
        rows = torch.nonzero(touched).flatten()
    if rows.numel() == grad.shape[0]:
        return True  # every row is touched: the fused dense update serves
    return rows, grad.index_select(0, rows)


# Up to this many values (a 4,096 x 32 table), `nonzero_rows` takes |g|:
# 3 ops where the large-table test takes 8.
_SMALL_VALUES = 2**17


def _tensor(variable):
    return getattr(variable, "value", variable)


def prefers_whole_update(num_rows, row_size, num_slots):
    # Eager torch pays a dispatch for every op: a masked update of the whole
    # variable takes ~4x the ops of its rows in the grouped fused kernel
    # (`fused_row_update`), whatever the table's size (measured on 2- to
    # 3,439-row tables in `benchmarks/bench_real_models.py`).
    return False


def _fusable(param, gradient, hyper):
    if gradient.layout != torch.strided or param.dtype not in _FUSED_DTYPES:
        return False
    if hyper.amsgrad:
        return False  # the fused kernel's max(vhat, v) drops NaN; tfa keeps it
    # Per-row steps: the kernel knows one step for the tensor.
    return hyper.step_mode == "global"


@torch.no_grad()
def fused_dense_update(state, gradient, hyper):
    """The rule through torch's fused Adam kernel, from the same values.

    torch adds `eps` after dividing sqrt(v) by sqrt(1 - beta_2^t); the rule
    adds epsilon before, so eps = epsilon / sqrt(1 - beta_2^t). Weight decay
    is applied first, as the rule does, and torch's is left at 0. Within an
    optimizer step (`OptimizerMixin`) the updates are grouped: one
    multi-tensor kernel for every variable of a dtype, as Keras' own Adam
    does on torch; outside one, the update runs at once.
    """
    param = _tensor(state.var)
    if not _fusable(param, gradient, hyper):
        return False
    _submit((param, gradient.to(param.dtype), _tensor(state.m), _tensor(state.v), hyper, None))
    return True


@torch.no_grad()
def fused_row_update(state, rows, sums, hyper):
    """The rule on the rows `rows` through the same grouped fused kernel:
    the rows of var, m and v are gathered, updated with the step's other
    updates, and copied back (rows not listed are never written)."""
    param = _tensor(state.var)
    if not _fusable(param, sums, hyper):
        return False
    if rows.numel() == 0:
        return True  # no row listed: nothing to write
    targets = (param, _tensor(state.m), _tensor(state.v))
    if rows.numel() == param.shape[0]:
        # Unique rows in ascending order (`coalesce`, `nonzero_rows`), as
        # many as the table's: every row, in place, nothing to gather.
        _submit((param, sums.to(param.dtype), *targets[1:], hyper, None))
        return True
    var, m, v = (t.index_select(0, rows) for t in targets)
    _submit((var, sums.to(param.dtype), m, v, hyper, (rows, targets)))
    return True


def _submit(update):
    pending = getattr(_GROUPED, "updates", None)
    if pending is None:
        _fused_adam([update])
    else:
        pending.append(update)


_GROUPED = threading.local()  # .updates: the fused updates of this step


@torch.no_grad()
def _fused_adam(updates):
    """Runs the grouped fused updates: one kernel per (hyperparameters,
    device)."""
    groups = {}
    for update in updates:
        groups.setdefault((id(update[4]), update[0].device), []).append(update)
    for group in groups.values():
        params, grads, ms, vs, hypers, scatters = (list(x) for x in zip(*group))
        hyper, param = hypers[0], params[0]
        # One device-to-host copy for the five scalars (five on CUDA would
        # sync five times). The kernel's own steps stay on the device.
        scalars = (hyper.step, hyper.beta_1, hyper.beta_2, hyper.learning_rate, hyper.epsilon)
        step, beta_1, beta_2, lr, epsilon = torch.stack(
            [torch.as_tensor(x, dtype=param.dtype, device=param.device) for x in scalars]
        ).tolist()
        if hyper.weight_decay_rate is not None:
            for p in params:
                p.sub_(p * hyper.weight_decay_rate)
        steps = torch.as_tensor(hyper.step, dtype=param.dtype, device=param.device) - 1
        functional_adam(
            params,
            grads,
            ms,
            vs,
            [],
            list(steps.expand(len(params)).clone().unbind(0)),
            fused=True,
            amsgrad=False,
            beta1=beta_1,
            beta2=beta_2,
            lr=lr,
            weight_decay=0.0,
            eps=epsilon / math.sqrt(1 - beta_2**step),
            maximize=False,
        )
        for updated, scatter in zip(zip(params, ms, vs), scatters):
            if scatter is not None:  # rows gathered by `fused_row_update`
                rows, targets = scatter
                for target, value in zip(targets, updated):
                    target.index_copy_(0, rows, value)


class OptimizerMixin:
    """Groups the step's fused dense updates into multi-tensor kernels."""

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Keras' hook that calls `update_step` for every variable.
        _GROUPED.updates = []
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            updates = _GROUPED.updates
        finally:
            _GROUPED.updates = None
        _fused_adam(updates)


# Other dtypes take the generic rule: 16-bit ones compute in float32 there,
# and float64 is checked against the numpy oracle on that path only.
_FUSED_DTYPES = (torch.float32,)


def gather_rows(variable, indices):
    return _tensor(variable).index_select(0, indices)


@torch.no_grad()
def scatter_rows(optimizer, variable, indices, rows):
    tensor = _tensor(variable)
    tensor.index_copy_(0, indices, rows.to(tensor.dtype))


def compute_gradients(loss, var_list, tape=None):
    if tape is not None:
        raise ValueError(
            "`tape` is a TensorFlow notion; on torch pass `loss` as a callable "
            f"and leave `tape=None`. Received: tape={tape!r}"
        )
    tensors = [_tensor(v) for v in var_list]
    with torch.enable_grad():
        value = loss()
        return list(torch.autograd.grad(value, tensors, allow_unused=True))


def embedding_lookup(table, ids, sparse):
    # As `keras.ops.take` on torch: -1 wraps to the last row, once.
    ids = ids.long()
    ids = torch.where(ids < 0, ids + table.shape[0], ids)
    # sparse=True makes the table's `.grad` a sparse COO tensor.
    return torch.nn.functional.embedding(ids, _tensor(table), sparse=sparse)


def reduces_codes():
    # Eager: the decoded rows exist already, and a float reduction of them
    # takes half the time of the two int8 ones (43 against 150 us for
    # 4,096 x 64 rows).
    return False


def bitcast(x, dtype):
    return ops.convert_to_tensor(x).view(getattr(torch, dtype))
