"""Apply searched transforms to modules in place: fold scales into the previous op, clip weights.

Folding is exact in real arithmetic: ``prev_op``'s output is divided by ``s`` (per channel) and every
consumer's input channels multiplied by ``s``. Each kind of previous op (``awq_ext.models.spec.PREV_KINDS``)
is handled here once:

* ``norm``: a per-channel affine ``weight`` (and ``bias``), i.e. RMSNorm and LayerNorm: ``w / s``;
* ``offset_norm``: ``y = norm(x) * (1 + w)`` (Gemma): ``w' = (1 + w) / s - 1``, computed in float32;
* ``linear``: every output row and bias entry of an ``nn.Linear``;
* ``rows``: one of ``parts`` equal row slices of a fused ``nn.Linear`` (Phi-3's v rows of qkv_proj,
  the up half of gate_up_proj);
* ``auto``: ``linear`` for an ``nn.Linear``, ``norm`` otherwise.

Consumers are any modules with a 2-D ``weight [out, in]`` used as ``x @ W.T``: quantized linears and
float routers alike (a router's columns times ``s`` keeps its logits unchanged).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.models.spec import ScalingGroup, get_module
from awq_ext.quant.awq import clip_weight
from awq_ext.quant.quantizer import QuantSpec


def _div_rows(t: torch.Tensor, s: torch.Tensor) -> None:
    t.div_(s.to(t).view(-1, *([1] * (t.dim() - 1))))


@torch.no_grad()
def fold_into_prev(prev_op: nn.Module, scales: torch.Tensor, kind: str = "auto",
                   rows: tuple[int, int] | None = None) -> None:
    """Divide ``prev_op``'s output channels (of the chosen kind) by ``scales``."""
    s = scales.detach()
    if kind == "auto":
        kind = "linear" if isinstance(prev_op, nn.Linear) else "norm"
    if kind in ("linear", "rows"):
        if not isinstance(prev_op, nn.Linear):
            raise AWQInputError(f"prev-op kind {kind!r} needs an nn.Linear, got {type(prev_op).__name__}")
        lo, hi = 0, prev_op.out_features
        if kind == "rows":
            if rows is None or prev_op.out_features % rows[0]:
                raise AWQInputError(f"cannot split {prev_op.out_features} rows into parts {rows}")
            width = prev_op.out_features // rows[0]
            lo, hi = rows[1] * width, (rows[1] + 1) * width
        if hi - lo != s.numel():
            raise AWQInputError(f"cannot fold {s.numel()} scales into {hi - lo} output rows of a Linear")
        _div_rows(prev_op.weight[lo:hi], s)
        if prev_op.bias is not None:
            _div_rows(prev_op.bias[lo:hi], s)
        return
    weight = getattr(prev_op, "weight", None)
    if kind not in ("norm", "offset_norm") or not isinstance(weight, torch.Tensor) or weight.dim() != 1:
        raise AWQInputError(
            f"don't know how to fold scales into {type(prev_op).__name__} as kind {kind!r}: supported previous "
            "ops are nn.Linear (rows) and norms with a per-channel weight; add a new prev-op kind to "
            "awq_ext.calibrate.fold"
        )
    if weight.numel() != s.numel():
        raise AWQInputError(f"cannot fold {s.numel()} scales into a norm of width {weight.numel()}")
    if kind == "offset_norm":
        # (1 + w') = (1 + w) / s; in float32, since bf16 Gemma weights are large and 1 + w cancels badly.
        weight.copy_(((1.0 + weight.float()) / s.float().to(weight.device) - 1.0).to(weight.dtype))
    else:
        weight.div_(s.to(weight))
    bias = getattr(prev_op, "bias", None)
    if isinstance(bias, torch.Tensor):
        bias.div_(s.to(bias))


@torch.no_grad()
def scale_consumers(consumers: Sequence[nn.Module], scales: torch.Tensor) -> None:
    """Multiply every consumer's input columns by ``scales``."""
    s = scales.detach()
    for lin in consumers:
        w = getattr(lin, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[1] != s.numel():
            width = w.shape[1] if isinstance(w, torch.Tensor) and w.dim() == 2 else None
            raise AWQInputError(f"scales of width {s.numel()} do not match a {type(lin).__name__} with {width} inputs")
        w.mul_(s.to(w).view(1, -1))


@torch.no_grad()
def fold_scales(prev_op: nn.Module, linears: Sequence[nn.Module], scales: torch.Tensor, kind: str = "auto",
                rows: tuple[int, int] | None = None) -> None:
    """Divide ``prev_op``'s output channels by ``scales`` and multiply the consumers' inputs by them."""
    for lin in linears:  # check every consumer before touching anything
        w = getattr(lin, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.shape[1] != scales.numel():
            raise AWQInputError(f"cannot fold {scales.numel()} scales into the inputs of a {type(lin).__name__} "
                                f"with weight {None if w is None else tuple(w.shape)}")
    fold_into_prev(prev_op, scales, kind, rows)
    scale_consumers(linears, scales)


@torch.no_grad()
def fold_group(block: nn.Module, group: ScalingGroup, scales: torch.Tensor) -> None:
    """Fold ``scales`` through one bound scaling group of ``block``: its prev-op kind, its quantized
    linears and its float routers."""
    consumers = [get_module(block, n) for n in (*group.linears, *group.routers)]
    fold_scales(get_module(block, group.prev_op), consumers, scales, group.kind, group.rows)


@torch.no_grad()
def apply_clip(linear: nn.Linear, max_val: torch.Tensor, spec: QuantSpec) -> None:
    linear.weight.copy_(clip_weight(linear.weight, max_val.to(linear.weight.device), spec))
