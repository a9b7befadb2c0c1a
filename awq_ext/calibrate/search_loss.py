"""The loss AWQ's scale search minimises for one scaling group, each in its cheapest exact form.

For candidate scales ``s`` the group's linears use ``Q(W·diag(s))·diag(s)^-1`` and the loss is the mean
squared difference of the inspected module's output against its float output on the loss tokens.

- :class:`ModuleOutputLoss` runs the inspected module (attention, MLP, a whole block) once per
  candidate, chunk by chunk: the general form.
- :class:`LinearGramLoss` is used when the inspected module IS the group's single linear (v->o,
  up->down, fc1->fc2): its output error ``ΔW x`` is linear, so the summed squared error is
  ``tr(ΔW C ΔWᵀ)`` with ``C = XᵀX`` computed once. Exact in real arithmetic, independent of the token
  count, ``N·K²`` work per candidate instead of ``T·N·K`` (chosen when the loss has more tokens ``T``
  than input channels ``K``).

The float reference outputs of :class:`ModuleOutputLoss` can come from the driver's calibration forward
(recorded by hooks): the same module on the same inputs, so nothing is recomputed.

Both objects restore the module weights they touch: after the search the block is exactly as before.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
import torch.nn as nn

from awq_ext.calibrate.capture import block_output
from awq_ext.quant.awq import gram_output_sse, input_gram
from awq_ext.quant.quantizer import QuantSpec, scaled_fake_quant


class GroupLoss(Protocol):
    def __call__(self, scales: torch.Tensor) -> float: ...

    def close(self) -> None: ...


class ModuleOutputLoss:
    """MSE of ``inspect``'s output with ``linears`` fake-quantized under the candidate scales.

    ``x`` ``[n, seqlen, K]`` are the loss samples (the module's input), ``kwargs`` its keyword inputs
    (rotary embeddings, masks) or ``{}``; samples go through ``chunk`` at a time. ``reference``: the float
    module's outputs per chunk, when the driver already has them from its calibration forward (same
    chunks); otherwise they are computed here.
    """

    @torch.no_grad()
    def __init__(self, inspect: nn.Module, linears: Sequence[nn.Linear], x: torch.Tensor, kwargs: dict[str, Any],
                 qspec: QuantSpec, chunk: int, reference: Sequence[torch.Tensor] | None = None):
        self.inspect, self.linears, self.kwargs, self.qspec = inspect, list(linears), kwargs, qspec
        self.chunks = [x[i : i + chunk] for i in range(0, x.shape[0], chunk)]
        self.originals = [lin.weight.data for lin in self.linears]
        ref = list(reference or [])[: len(self.chunks)]
        if len(ref) == len(self.chunks) and all(r.shape[:-1] == c.shape[:-1] for r, c in zip(ref, self.chunks)):
            self.reference = ref
        else:
            self.reference = [block_output(inspect(c, **kwargs)) for c in self.chunks]
        self.numel = sum(o.numel() for o in self.reference)

    @torch.no_grad()
    def __call__(self, scales: torch.Tensor) -> float:
        for lin, w in zip(self.linears, self.originals):
            lin.weight.data = scaled_fake_quant(w, scales.to(w.device), self.qspec)
        # Sum squared errors chunk by chunk: no concatenated copy of the module output.
        sse = 0.0
        for c, ref in zip(self.chunks, self.reference):
            sse += float(block_output(self.inspect(c, **self.kwargs)).float().sub_(ref.float()).pow_(2).sum())
        return sse / self.numel

    def close(self) -> None:
        for lin, w in zip(self.linears, self.originals):
            lin.weight.data = w


class LinearGramLoss:
    """The same loss as :class:`ModuleOutputLoss` for a group whose inspected module is its one linear,
    in the Gram form ``tr(ΔW C ΔWᵀ) / (T·N)``; the module is never run and never modified."""

    @torch.no_grad()
    def __init__(self, linear: nn.Linear, x: torch.Tensor, qspec: QuantSpec):
        self.weight, self.qspec = linear.weight.data, qspec
        self.gram = input_gram(x)
        self.numel = x.reshape(-1, x.shape[-1]).shape[0] * self.weight.shape[0]

    @torch.no_grad()
    def __call__(self, scales: torch.Tensor) -> float:
        w = self.weight
        delta = scaled_fake_quant(w, scales.to(w.device), self.qspec).float() - w.float()
        return float(gram_output_sse(delta, self.gram)) / self.numel

    def close(self) -> None:
        pass


def group_loss(inspect: nn.Module, linears: Sequence[nn.Linear], x: torch.Tensor, kwargs: dict[str, Any],
               qspec: QuantSpec, chunk: int, exact_shortcuts: bool = True,
               reference: Sequence[torch.Tensor] | None = None) -> GroupLoss:
    """The cheapest exact loss for a group: Gram form when ``inspect`` is its single linear and the loss
    has more tokens than input channels (per candidate ``N·K²`` vs ``T·N·K`` work; with few tokens the
    direct form is cheaper), otherwise the module forward. ``exact_shortcuts=False`` always runs the
    module (to check the shortcut against it)."""
    tokens = x.numel() // x.shape[-1]
    if exact_shortcuts and len(linears) == 1 and inspect is linears[0] and tokens > x.shape[-1]:
        return LinearGramLoss(linears[0], x, qspec)
    return ModuleOutputLoss(inspect, linears, x, kwargs, qspec, chunk, reference if exact_shortcuts else None)
