"""Run the model up to its first decoder block and keep that block's inputs.

Samples go through one at a time so every captured keyword tensor (rotary cos/sin, causal mask) has
batch dimension 1 and broadcasts over any chunk of samples later. Caches are dropped: calibration
runs full sequences without KV caching.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

_DROP_KWARGS = ("past_key_values", "past_key_value", "cache", "use_cache")


class _StopForward(Exception):
    """Raised by the stand-in block once it has what it needs; never escapes this module."""


class _Catcher(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.hidden: list[torch.Tensor] = []
        self.kwargs: dict[str, Any] | None = None

    def forward(self, hidden_states, *args, **kwargs):
        if args:
            raise TypeError("decoder blocks are expected to take their non-hidden inputs as keywords")
        self.hidden.append(hidden_states.detach())
        if self.kwargs is None:
            self.kwargs = {k: v for k, v in kwargs.items() if k not in _DROP_KWARGS}
        raise _StopForward


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, blocks: nn.ModuleList, input_ids: torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``(hidden [n, seqlen, hidden], kwargs)`` that block 0 receives for ``input_ids`` ``[n, seqlen]``."""
    device = next(model.parameters()).device
    catcher = _Catcher(blocks[0])
    blocks[0] = catcher
    try:
        for row in input_ids:
            try:
                model(input_ids=row.unsqueeze(0).to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        blocks[0] = catcher.block
    if not catcher.hidden:
        raise RuntimeError("the model never reached its first decoder block; the adapter's block path is wrong")
    return torch.cat(catcher.hidden, dim=0), catcher.kwargs or {}


def block_output(out: Any) -> torch.Tensor:
    """A block's (or attention's) hidden-state output, whether returned bare or as a tuple's first item."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_chunked(module: nn.Module, x: torch.Tensor, kwargs: dict[str, Any], chunk: int) -> torch.Tensor:
    """``module(x[i:i+chunk], **kwargs)`` over the sample dimension, concatenated."""
    return torch.cat([block_output(module(x[i : i + chunk], **kwargs)) for i in range(0, x.shape[0], chunk)])


def to_device(obj: Any, device: torch.device) -> Any:
    """Move captured block keyword inputs (tensors, tuples of tensors such as rotary cos/sin, plain
    values) to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj
