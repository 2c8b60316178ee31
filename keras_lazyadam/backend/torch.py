"""PyTorch half of LazyAdam: sparse COO in, in-place row writes out."""

import torch


def to_sparse_rows(grad):
    if not (isinstance(grad, torch.Tensor) and grad.layout == torch.sparse_coo):
        return None
    # `_indices()`/`_values()` are the documented accessors of an uncoalesced
    # tensor (`indices()` would force a coalesce we do ourselves).
    indices, values = grad._indices(), grad._values()
    rows = indices[0]
    if grad.sparse_dim() > 1:
        # Element-sparse (or partly): each entry becomes a row slice.
        row_shape = grad.shape[1:]
        expanded = values.new_zeros((rows.shape[0],) + tuple(row_shape))
        position = torch.arange(rows.shape[0], device=rows.device)
        expanded[(position,) + tuple(indices[1:])] = values
        values = expanded
    return rows, values


def check_rows(indices, num_rows, name):
    # One device-to-host sync on GPU, as torch's own sparse optimizers pay.
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_rows):
        bad = indices[(indices < 0) | (indices >= num_rows)][:5].tolist()
        raise ValueError(
            f"Row indices of the gradient of {name!r} must be in "
            f"[0, {num_rows}). Received: {bad}"
        )
    return indices


def sum_rows(values, segments, num_segments):
    out = values.new_zeros((num_segments,) + tuple(values.shape[1:]))
    return out.index_add_(0, segments.long(), values)


def unique_count(segments):
    # Eager torch has dynamic shapes: update each unique row once.
    return int(segments[-1]) + 1 if segments.numel() else 0


def nonzero_rows(grad):
    reduce_dims = tuple(range(1, grad.ndim))
    rows = torch.nonzero(torch.any(grad != 0, dim=reduce_dims)).flatten()
    return rows, grad.index_select(0, rows)


def _tensor(variable):
    return getattr(variable, "value", variable)


def gather_rows(variable, indices):
    return _tensor(variable).index_select(0, indices.long())


@torch.no_grad()
def scatter_rows(optimizer, variable, indices, rows):
    tensor = _tensor(variable)
    tensor.index_copy_(0, indices.long(), rows.to(tensor.dtype))


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
    # sparse=True makes the table's `.grad` a sparse COO tensor.
    return torch.nn.functional.embedding(ids.long(), _tensor(table), sparse=sparse)


class OptimizerMixin:
    pass
