"""The one block loop behind every method: capture, then per block load -> record -> step -> propagate.

Every calibration method (RTN, AWQ, GPTQ and their combinations in :mod:`awq_ext.calibrate.pipeline`;
W8A8 equalization + bias correction in :mod:`awq_ext.w8a8.calibrate`; a float pass for layer-by-layer
evaluation) is a :class:`BlockStep`: what to do with ONE decoder block whose linears' calibration
inputs have been recorded. The driver owns everything else, once:

1. block 0's inputs are captured by running the model's embedding part on the calibration ids;
2. per block: the block's weights are brought onto the calibration device by a :class:`BlockSource`
   (:class:`ResidentBlocks` moves a block of an in-memory model; :class:`awq_ext.io.stream.BlockStore`
   reads it from its shards into a meta-device skeleton), every linear's inputs and the float block
   output are recorded, the step transforms and quantizes, the quantized block runs again to give the
   next block's inputs (quantized outputs by default), observers see the finished block (a streaming
   checkpoint writer, a layer-by-layer perplexity), and the source releases it;
3. progress (tqdm, with the peak host RSS so far) and memory accounting (:func:`awq_ext.memory.memory_peaks`).

Memory stays bounded by one block's weights and activations: nothing here keeps a reference to a
block after it is released.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from awq_ext.calibrate.capture import block_output, capture_block_inputs, run_chunked, to_device
from awq_ext.errors import AWQInputError
from awq_ext.memory import peak_device_mb, peak_rss_mb
from awq_ext.calibrate.timing import timed
from awq_ext.models import ModelSpec, block_linears, get_blocks, get_module


class BlockReportLike(Protocol):
    index: int
    rel_error: float
    seconds: float


@dataclass
class BlockContext:
    """One decoder block on the calibration device, as a step sees it."""

    index: int
    prefix: str  # full name of the block + "." (e.g. "model.layers.3.")
    block: nn.Module
    linears: dict[str, nn.Linear]  # block-relative name -> linear, as found when the block was loaded
    feats: dict[str, torch.Tensor] = field(default_factory=dict)  # linear -> recorded inputs (calibrated steps)
    kwargs: dict[str, Any] = field(default_factory=dict)  # the block's keyword inputs (rotary, mask) on device
    device: torch.device = torch.device("cpu")
    # float outputs per chunk of modules the step asked for (the scale search's references)
    references: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase (driver's and step's)
    outputs: dict[str, Any] = field(default_factory=dict)  # what the step made of this block, for observers
    # (weight-only steps: full linear name -> QuantizedWeight, the codes a checkpoint writer packs)


class BlockStep(Protocol):
    """What one method does to one block. ``calibrated``: the step needs the block's recorded inputs
    (then the driver also measures the block's output error and propagates calibration activations)."""

    desc: str
    calibrated: bool
    nan_hint: str  # how to fix a quantized block whose output is NaN/Inf

    def validate(self, block: nn.Module, prefix: str) -> None: ...

    def record_names(self, block: nn.Module, linears: list[str]) -> list[str]:
        """Modules whose inputs are recorded into ``ctx.feats`` (calibrated steps)."""
        ...

    def reference_modules(self, block: nn.Module) -> list[str]:
        """Modules whose float outputs are recorded into ``ctx.references`` (calibrated steps)."""
        ...

    def process(self, ctx: BlockContext) -> BlockReportLike: ...


class BlockObserver(Protocol):
    """Sees every block after its step, before it is released (writes it out, runs data through it)."""

    def after_block(self, ctx: BlockContext) -> None: ...


class BlockSource(Protocol):
    """Where decoder blocks' weights live between visits of the driver."""

    resident: bool  # all weights are in memory: validate every block before any work

    def load_block(self, index: int, device: torch.device) -> nn.Module: ...

    def release_block(self, index: int) -> None: ...

    def after_capture(self) -> None:
        """Block 0's calibration inputs are captured: the embeddings may be freed until the end."""


class ResidentBlocks:
    """The blocks of an in-memory model: each is moved to the calibration device and back home."""

    resident = True

    def __init__(self, blocks: nn.ModuleList):
        self.blocks = blocks
        self._home: dict[int, torch.device] = {}

    def load_block(self, index: int, device: torch.device) -> nn.Module:
        block = self.blocks[index]
        self._home[index] = next(block.parameters()).device
        return block.to(device)

    def release_block(self, index: int) -> None:
        self.blocks[index].to(self._home.pop(index))

    def after_capture(self) -> None:
        return None


@dataclass
class DriverRun:
    reports: list  # the steps' block reports, in block order
    seconds: float
    peak_rss_mb: float
    peak_device_mb: float | None


def calibration_device(choice: str | None) -> torch.device:
    """Where each block runs during calibration: ``choice``, else CUDA when present, else the CPU."""
    return torch.device(choice or ("cuda" if torch.cuda.is_available() else "cpu"))


def collect_inputs(
    block: nn.Module, inps: torch.Tensor, kwargs: dict[str, Any], names: list[str], chunk: int,
    module_outputs: dict[str, list[torch.Tensor]] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs ``[n, seqlen, K]`` of the named modules, and the block's output, for ``inps``. A module no
    token reached (a MoE expert) has no entry.

    ``module_outputs``: keys are module names; each gets that module's output per chunk of ``chunk``
    samples (what the scale search compares against, so it need not run the float module again).
    """
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    # One detached copy per argument object, so linears fed by the same tensor (q/k/v, gate/up) share one
    # recorded tensor (one Hessian, one scale division); the argument is kept alive while keyed by its id.
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(n: str, x: torch.Tensor) -> None:
        if id(x) not in seen:
            seen[id(x)] = (x, x.detach())
        store[n].append(seen[id(x)][1])

    hooks = [get_module(block, n).register_forward_hook(lambda m, args, out, n=n: record(n, args[0])) for n in names]
    for n, outs in (module_outputs or {}).items():
        outs.clear()
        hooks.append(get_module(block, n).register_forward_hook(
            lambda m, args, out, outs=outs: outs.append(block_output(out).detach())))
    try:
        out = run_chunked(block, inps, kwargs, chunk)
    finally:
        for h in hooks:
            h.remove()
    feats: dict[str, torch.Tensor] = {}
    by_source: dict[int, torch.Tensor] = {}  # linears fed by the same tensor (q/k/v) share one copy
    for n, chunks in store.items():
        if not chunks:  # an expert no calibration token was routed to
            continue
        key = id(chunks[0])
        if key not in by_source:
            by_source[key] = torch.cat(chunks)
        feats[n] = by_source[key]
    return feats, out


def relative_error(q_out: torch.Tensor, fp_out: torch.Tensor) -> float:
    """``mean (q - fp)^2 / mean fp^2`` of a block's output on the calibration data."""
    mse = float((q_out.float() - fp_out.float()).pow(2).mean())
    return mse / max(float(fp_out.float().pow(2).mean()), 1e-30)


@torch.no_grad()
def run_blocks(
    model: nn.Module,
    spec: ModelSpec,
    step: BlockStep,
    calib_ids: torch.Tensor | None,
    *,
    device: torch.device,
    chunk_size: int,
    propagate: str = "quantized",
    progress: bool = True,
    source: BlockSource | None = None,
    observers: Sequence[BlockObserver] = (),
) -> DriverRun:
    """Run ``step`` over every decoder block of ``model`` (see the module doc). ``calib_ids`` are
    validated token ids ``[n, seqlen]``, required when ``step.calibrated``. ``source``: where the blocks'
    weights come from (default: the model's own, in memory)."""
    t0 = time.time()
    blocks = get_blocks(model, spec)
    source = source or ResidentBlocks(blocks)
    if source.resident:
        for i, block in enumerate(blocks):
            step.validate(block, f"{spec.blocks}.{i}.")
    inps: torch.Tensor | None = None
    kwargs: dict[str, Any] = {}
    if step.calibrated:
        if calib_ids is None:
            raise AWQInputError(f"{step.desc} needs calibration data; pass calibration token ids")
        inps, kwargs = capture_block_inputs(model, blocks, calib_ids)
        if not torch.isfinite(inps).all():
            raise AWQInputError("calibration activations contain NaN/Inf at the first block: the embedding "
                                "weights are corrupt or the dtype overflows; load the model in float32")
    source.after_capture()
    reports: list = []
    bar = tqdm(range(len(blocks)), desc=step.desc, disable=not progress)
    for i in bar:
        tb = time.time()
        prefix = f"{spec.blocks}.{i}."
        block = source.load_block(i, device)
        if not source.resident:
            step.validate(block, prefix)
        ctx = BlockContext(i, prefix, block, block_linears(block, spec), device=device)
        fp_out = None
        if step.calibrated:
            inps = inps.to(device)
            ctx.kwargs = to_device(kwargs, device)
            ctx.references = {n: [] for n in step.reference_modules(block)}
            with timed(ctx.phases, "collect_inputs"):
                ctx.feats, fp_out = collect_inputs(block, inps, ctx.kwargs, step.record_names(block, list(ctx.linears)),
                                                   chunk_size, ctx.references)
            if not torch.isfinite(fp_out).all():
                raise AWQInputError(f"block {i} produced NaN/Inf on the calibration data; check the weights of "
                                    f"{prefix}* and the calibration text")
        report = step.process(ctx)
        ctx.feats, ctx.references = {}, {}
        if step.calibrated:
            with timed(ctx.phases, "propagate"):
                q_out = run_chunked(block, inps, ctx.kwargs, chunk_size)
            if not torch.isfinite(q_out).all():
                raise AWQInputError(f"block {i} produced NaN/Inf after quantization; {step.nan_hint}")
            report.rel_error = relative_error(q_out, fp_out)
            inps = q_out if propagate == "quantized" else fp_out
            del fp_out, q_out
        for obs in observers:
            obs.after_block(ctx)
        del ctx, block
        source.release_block(i)
        report.seconds = time.time() - tb
        reports.append(report)
        bar.set_postfix(peak_rss_mb=f"{peak_rss_mb():.0f}", refresh=False)
    return DriverRun(reports, time.time() - t0, peak_rss_mb(), peak_device_mb())
