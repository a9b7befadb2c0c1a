"""Where ``save_pretrained`` puts a tensor: transformers' checkpoint conversion mapping, reversed.

transformers 5 loads many checkpoints through a conversion mapping (``conversion_mapping.py``): Mixtral's
``block_sparse_moe.experts.{e}.w1/w3`` are renamed, stacked and concatenated into the fused
``mlp.experts.gate_up_proj``, Qwen-MoE's ``mlp.experts.{e}.gate_proj/up_proj`` likewise, and
``save_pretrained`` writes that original layout back (``revert_weight_conversion``). A streamed model
reads its tensors one block at a time, so it needs the correspondence without the weights: the reverse
conversion runs on small *label* tensors instead - a parameter of shape ``[..., C]`` is probed by a
``[..., 1]`` tensor whose rows hold distinct integers (a vector by one label per element), so a probe
costs a row count, not the weights' size (the reverse ops copy their chunks) - and each wanted tensor (a
parameter, or one expert's slice of a fused one) is recognised among the results by shape and labels. A
stored tensor that holds a transformed version of ours (transposed, interleaved, permuted) carries other
labels or shape and is not matched.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from awq_ext.errors import AWQInputError
from awq_ext.models.experts import Index


def _labels(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Per parameter, its probe: distinct integers (across parameters too) per row, the last dim cut to 1;
    per element for a vector."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        probe = shape if len(shape) < 2 else (*shape[:-1], 1)
        n = math.prod(probe)
        out[name] = torch.arange(offset, offset + n, dtype=torch.int64).view(probe)
        offset += n
    return out


def _signature(t: torch.Tensor) -> tuple[tuple[int, ...], bytes]:
    return tuple(t.shape), t.contiguous().numpy().tobytes()


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
    try:
        with torch.no_grad():
            reverted = revert_weight_conversion(model, dict(labels))
    except (RuntimeError, ValueError, IndexError) as exc:  # an op that needs the weights' real last dim
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        raise AWQInputError(
            f"tensors {sorted(wanted)[:3]} are not in the checkpoint under the model's own names, and transformers' "
            f"reverse conversion mapping for {model_type!r} cannot be followed without the weights ({exc}); "
            "quantize without --stream (from_pretrained converts the checkpoint)") from None
    by_signature = {_signature(t): name for name, t in reverted.items() if isinstance(t, torch.Tensor)}
    out: dict[str, str] = {}
    for name, (param, index) in wanted.items():
        probe = labels[param]
        # An index into the parameter's rows; the probe's cut last dim stays whole.
        sig = _signature(probe[index])
        if sig in by_signature:
            out[name] = by_signature[sig]
    return out
