"""Where ``save_pretrained`` puts a tensor: transformers' checkpoint conversion mapping, reversed.

transformers 5 loads many checkpoints through a conversion mapping (``conversion_mapping.py``): Mixtral's
``block_sparse_moe.experts.{e}.w1/w3`` are renamed, stacked and concatenated into the fused
``mlp.experts.gate_up_proj``, Qwen-MoE's ``mlp.experts.{e}.gate_proj/up_proj`` likewise, and
``save_pretrained`` writes that original layout back (``revert_weight_conversion``). A streamed model
reads its tensors one block at a time, so it needs the correspondence without the weights: the reverse
conversion runs on *label* tensors instead - each row of each parameter holds its own integer, expanded
with stride 0 to the parameter's shape (no memory of the weights' size; the reverse of a fusing is
chunks and splits, which stay views) - and each wanted tensor (a parameter, or one expert's slice of a
fused one) is recognised among the results by its labels. A stored tensor that holds a transformed
version of ours (transposed, interleaved, permuted) carries other labels and is not matched.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from awq_ext.models.experts import Index


def _labels(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Per parameter, a tensor of its shape whose rows (all dims but the last) hold distinct integers,
    distinct across parameters too, and are constant along the last dim."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        rows = math.prod(shape[:-1])  # 1 for a vector or a scalar
        lead = torch.arange(offset, offset + rows, dtype=torch.int64)
        out[name] = lead.view(*shape[:-1], 1).expand(shape) if shape else lead[0]
        offset += rows
    return out


def _signature(t: torch.Tensor) -> tuple[tuple[int, ...], bytes] | None:
    """Shape and row labels of a label tensor; None when its rows are not constant (transposed)."""
    if t.dim() == 0:
        return (), t.reshape(1).numpy().tobytes()
    if t.numel() == 0:
        return None
    first_row = t[(0,) * (t.dim() - 1)]
    if not bool((first_row == first_row[0]).all()):
        return None
    return tuple(t.shape), t[..., 0].contiguous().numpy().tobytes()


def original_names(model: nn.Module, shapes: dict[str, tuple[int, ...]],
                   wanted: dict[str, tuple[str, Index]]) -> dict[str, str]:
    """The name ``save_pretrained`` gives each wanted tensor.

    ``shapes``: the model's parameters to revert (state-dict names, the model's own layout: fused
    experts fused). ``wanted``: tensor name -> ``(parameter in shapes, index into it)``, ``()`` for the
    whole parameter. A wanted tensor whose exact contents are no single tensor of the original layout
    is left out of the result.
    """
    from transformers.core_model_loading import revert_weight_conversion

    labels = _labels(shapes)
    with torch.no_grad():
        reverted = revert_weight_conversion(model, dict(labels))
    by_signature: dict[tuple, str] = {}
    for name, t in reverted.items():
        sig = _signature(t) if isinstance(t, torch.Tensor) else None
        if sig is not None:
            by_signature[sig] = name
    out: dict[str, str] = {}
    for name, (param, index) in wanted.items():
        sig = _signature(labels[param][index])
        if sig is not None and sig in by_signature:
            out[name] = by_signature[sig]
    return out
