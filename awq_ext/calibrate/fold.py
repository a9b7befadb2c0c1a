"""Apply searched transforms to modules in place: fold scales into the previous op, clip weights.

Folding is exact in real arithmetic: ``prev_op``'s output is divided by ``s`` (per channel) and every
consumer's input channels multiplied by ``s``. Supported previous ops: ``nn.Linear`` (rows and bias) and
any norm with a per-channel affine ``weight`` (and ``bias``), i.e. RMSNorm and LayerNorm.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.quant.awq import clip_weight
from awq_ext.quant.quantizer import QuantSpec


@torch.no_grad()
def fold_scales(prev_op: nn.Module, linears: Sequence[nn.Linear], scales: torch.Tensor) -> None:
    """Divide ``prev_op``'s output channels by ``scales`` and multiply the linears' inputs by them."""
    s = scales.detach()
    if isinstance(prev_op, nn.Linear):
        if prev_op.out_features != s.numel():
            raise AWQInputError(f"cannot fold {s.numel()} scales into a Linear with {prev_op.out_features} outputs")
        prev_op.weight.div_(s.to(prev_op.weight).view(-1, 1))
        if prev_op.bias is not None:
            prev_op.bias.div_(s.to(prev_op.bias))
    elif isinstance(getattr(prev_op, "weight", None), torch.Tensor) and prev_op.weight.dim() == 1:
        if prev_op.weight.numel() != s.numel():
            raise AWQInputError(f"cannot fold {s.numel()} scales into a norm of width {prev_op.weight.numel()}")
        prev_op.weight.div_(s.to(prev_op.weight))
        bias = getattr(prev_op, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.div_(s.to(bias))
    else:
        raise AWQInputError(
            f"don't know how to fold scales into {type(prev_op).__name__}: supported previous ops are "
            "nn.Linear and norms with a per-channel weight; add a new prev-op kind to awq_ext.calibrate.fold"
        )
    for lin in linears:
        if lin.in_features != s.numel():
            raise AWQInputError(f"scales of width {s.numel()} do not match a Linear with {lin.in_features} inputs")
        lin.weight.mul_(s.to(lin.weight).view(1, -1))


@torch.no_grad()
def apply_clip(linear: nn.Linear, max_val: torch.Tensor, spec: QuantSpec) -> None:
    linear.weight.copy_(clip_weight(linear.weight, max_val.to(linear.weight.device), spec))
