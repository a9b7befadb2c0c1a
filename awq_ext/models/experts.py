"""Mixture-of-experts storage: fused 3-D expert parameters -> one ``nn.Linear`` per expert projection.

transformers 5 stores a MoE layer's experts as two fused parameters, ``gate_up_proj [E, 2I, H]`` (gate
rows first, then up) and ``down_proj [E, H, I]``. :func:`unfuse_experts` replaces each such module by an
:class:`ExpertList` of :class:`ExpertMLP` (``gate_proj``, ``up_proj``, ``down_proj``) with the same
forward signature and arithmetic, so hooks, the scale search, quantization and the checkpoint names
(``...experts.{e}.gate_proj.qweight``: what vLLM's and AutoAWQ-style loaders read) all see ordinary
linears. The views share no storage with the fused tensors (each expert's rows are copied once).
Models that already store per-expert linears are left as they are. :func:`expert_parts` is the one
statement of which slice of which fused parameter each per-expert weight is; :func:`fused_layout`
records it for a model before unfusing (the streaming reader, which unfuses a meta skeleton, uses it to
read a checkpoint that stores the fused tensors).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from awq_ext.errors import AWQInputError


class ExpertMLP(nn.Module):
    """One expert: ``down(act(gate(x)) * up(x))``."""

    def __init__(self, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear, act_fn: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj, self.act_fn = gate_proj, up_proj, down_proj, act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class ExpertList(nn.ModuleList):
    """Per-expert modules with the fused experts' forward ``(hidden [T, H], top_k_index [T, k],
    top_k_weights [T, k]) -> [T, H]``: each token's output is the routing-weighted sum of its experts."""

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        for e, expert in enumerate(self):
            token_idx, slot = torch.where(top_k_index == e)
            if token_idx.numel() == 0:
                continue
            y = expert(hidden_states[token_idx]) * top_k_weights[token_idx, slot, None]
            out.index_add_(0, token_idx, y.to(out.dtype))
        return out


def is_fused_experts(module: nn.Module) -> bool:
    gu, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return isinstance(gu, torch.Tensor) and isinstance(down, torch.Tensor) and gu.dim() == 3 and down.dim() == 3


def _linear(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta", dtype=weight.dtype)
    lin.weight = nn.Parameter(weight.detach().clone() if not weight.is_meta else weight.detach(),
                              requires_grad=False)
    return lin


Index = tuple[int | slice, ...]  # a part of a tensor, as ``tensor[index]`` takes it
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def expert_parts(n_experts: int, inter: int) -> dict[str, tuple[str, Index]]:
    """Each per-expert weight of an :class:`ExpertList` (name relative to it) as a part of the fused
    parameters: ``(fused parameter, index)``. The one statement of the fused <-> per-expert layout."""
    parts: dict[str, tuple[str, Index]] = {}
    for e in range(n_experts):
        parts[f"{e}.gate_proj.weight"] = ("gate_up_proj", (e, slice(0, inter)))
        parts[f"{e}.up_proj.weight"] = ("gate_up_proj", (e, slice(inter, 2 * inter)))
        parts[f"{e}.down_proj.weight"] = ("down_proj", (e,))
    return parts


def _check_layout(module: nn.Module, path: str) -> tuple[int, int]:
    """``(n_experts, intermediate size)`` of a fused-experts module whose layout :func:`unfuse` handles."""
    flags = {k: getattr(module, k, d) for k, d in
             (("is_transposed", False), ("has_bias", False), ("has_gate", True), ("is_concatenated", True))}
    if flags != {"is_transposed": False, "has_bias": False, "has_gate": True, "is_concatenated": True}:
        raise AWQInputError(f"{path}: fused experts with layout {flags} are not supported; supported is "
                            "concatenated [gate; up] rows, untransposed, without bias")
    gu, down = module.gate_up_proj, module.down_proj
    n_exp, two_i, hidden = gu.shape
    if two_i % 2 or tuple(down.shape) != (n_exp, hidden, two_i // 2):
        raise AWQInputError(f"{path}: gate_up_proj {tuple(gu.shape)} and down_proj {tuple(down.shape)} are not "
                            "[E, 2I, H] and [E, H, I]")
    return n_exp, two_i // 2


def unfuse(module: nn.Module, path: str = "experts") -> ExpertList:
    """An :class:`ExpertList` computing what the fused ``module`` computes (meta tensors stay meta)."""
    n_exp, inter = _check_layout(module, path)
    w = {name: getattr(module, fused)[index] for name, (fused, index) in expert_parts(n_exp, inter).items()}
    return ExpertList(ExpertMLP(*(_linear(w[f"{e}.{p}.weight"]) for p in PROJECTIONS), module.act_fn)
                      for e in range(n_exp))


@dataclass(frozen=True)
class FusedLayout:
    """Where :func:`unfuse_experts` takes each per-expert weight from, recorded before it runs (a
    streamed model reads the per-expert weights from a checkpoint that may store either layout)."""

    shapes: dict[str, tuple[int, ...]]  # fused parameter (full name) -> its shape
    parts: dict[str, tuple[str, Index]]  # per-expert weight (full name) -> (fused parameter, index into it)


def fused_layout(model: nn.Module) -> FusedLayout:
    """The :class:`FusedLayout` of every fused-experts module in ``model`` (empty when there is none)."""
    shapes: dict[str, tuple[int, ...]] = {}
    parts: dict[str, tuple[str, Index]] = {}
    for path, m in model.named_modules():
        if not (path and is_fused_experts(m)):
            continue
        n_exp, inter = _check_layout(m, path)
        shapes.update({f"{path}.{k}": tuple(getattr(m, k).shape) for k in ("gate_up_proj", "down_proj")})
        parts.update({f"{path}.{name}": (f"{path}.{fused}", index)
                      for name, (fused, index) in expert_parts(n_exp, inter).items()})
    return FusedLayout(shapes, parts)


def unfuse_experts(model: nn.Module) -> list[str]:
    """Replace every fused-experts module in ``model`` in place; returns their paths."""
    paths = [n for n, m in model.named_modules() if n and is_fused_experts(m)]
    for p in paths:
        model.set_submodule(p, unfuse(model.get_submodule(p), p))
    return paths
