"""Layer-by-layer perplexity: for models whose decoder blocks are never all in memory at once.

:class:`LayerwisePerplexity` is a driver observer (:mod:`awq_ext.calibrate.driver`): it captures the
evaluation windows' inputs to block 0, runs them through each block right after the driver's step
(so through the quantized block, with the weights the in-memory evaluation would see), and at the end
scores the final hidden states with the model's own forward pass, in which every decoder block is a
stand-in that replays those states. The NLL is computed by :func:`awq_ext.eval.perplexity`, window by
window, exactly as for an in-memory model.

:func:`layerwise_perplexity` runs the float model this way (a step that changes nothing), the
baseline of ``compare``/``eval --stream``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from awq_ext.calibrate.capture import block_output, capture_block_inputs, to_device
from awq_ext.calibrate.driver import BlockContext, BlockSource, DriverRun, run_blocks
from awq_ext.eval.perplexity import PerplexityResult, perplexity
from awq_ext.models import ModelSpec, get_blocks


class _Replay(nn.Module):
    """Stand-in for block 0: returns the next window's final hidden states, whatever it is given."""

    def __init__(self, hidden: torch.Tensor, as_tuple: bool):
        super().__init__()
        self.hidden, self.as_tuple, self.calls = hidden, as_tuple, 0

    def forward(self, hidden_states, *args, **kwargs):
        out = self.hidden[self.calls : self.calls + 1].to(hidden_states)
        self.calls += 1
        return (out,) if self.as_tuple else out


class _PassThrough(nn.Module):
    """Stand-in for blocks 1..n-1: hand the replayed states on unchanged."""

    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.as_tuple else hidden_states


class LayerwisePerplexity:
    """Driver observer: carries the evaluation windows' hidden states through each finished block."""

    def __init__(self, model: nn.Module, spec: ModelSpec, windows: torch.Tensor):
        self.model, self.spec, self.windows = model, spec, windows
        self.blocks = get_blocks(model, spec)
        self.hidden, self.kwargs = capture_block_inputs(model, self.blocks, windows)
        self.as_tuple = False

    @torch.no_grad()
    def after_block(self, ctx: BlockContext) -> None:
        kw = to_device(self.kwargs, ctx.device)
        outs = []
        for w in range(self.hidden.shape[0]):  # one window at a time, as the full forward pass runs them
            out = ctx.block(self.hidden[w : w + 1].to(ctx.device), **kw)
            self.as_tuple = isinstance(out, (tuple, list))
            outs.append(block_output(out))
        self.hidden = torch.cat(outs)

    @torch.no_grad()
    def result(self, progress: bool = True) -> PerplexityResult:
        """Score the final hidden states (call after the driver has seen every block)."""
        originals = list(self.blocks)
        self.blocks[0] = _Replay(self.hidden, self.as_tuple)
        for i in range(1, len(originals)):
            self.blocks[i] = _PassThrough(self.as_tuple)
        try:
            return perplexity(self.model, self.windows, progress=progress)
        finally:
            for i, b in enumerate(originals):
                self.blocks[i] = b


class FloatStep:
    """A block step that leaves the block as it is: the float model's pass for layer-by-layer evaluation."""

    desc = "float (layer by layer)"
    calibrated = False
    nan_hint = ""

    def validate(self, block: nn.Module, prefix: str) -> None:
        return None

    def record_names(self, block: nn.Module, linears: list[str]) -> list[str]:
        return []  # not calibrated: nothing is recorded

    def reference_modules(self, block: nn.Module) -> list[str]:
        return []

    def process(self, ctx: BlockContext) -> "FloatBlockReport":
        return FloatBlockReport(ctx.index, float("nan"), 0.0)


@dataclass
class FloatBlockReport:
    index: int
    rel_error: float
    seconds: float


def layerwise_perplexity(model: nn.Module, spec: ModelSpec, windows: torch.Tensor, *, device: torch.device,
                         source: BlockSource | None = None,
                         progress: bool = True) -> tuple[PerplexityResult, DriverRun]:
    """Perplexity of the float model on ``windows`` ``[W, L]``, one decoder block in memory at a time."""
    evaluator = LayerwisePerplexity(model, spec, windows)
    run = run_blocks(model, spec, FloatStep(), None, device=device, chunk_size=1, progress=progress,
                     source=source, observers=[evaluator])
    return evaluator.result(progress), run
