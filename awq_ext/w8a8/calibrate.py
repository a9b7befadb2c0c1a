"""The W8A8 calibration driver: block by block, equalize, quantize, bias-correct, propagate.

A block step of the one driver (:func:`awq_ext.calibrate.driver.run_blocks`: block 0's inputs,
each linear's recorded inputs, propagation, streaming and memory accounting), with ``fold_scales``
for exact equalization, so memory stays bounded to one block. Per block:

1. record every linear's inputs on the calibration data (previous blocks already quantized);
2. per scaling group of the model's spec (``prev_op -> linears``; GQA's v_proj -> o_proj is skipped
   because its widths differ): compute the factors from ``max|X_j|`` and ``max|W_j|`` (SmoothQuant or
   AWEQ) and fold them into ``prev_op`` and the linears - exact before quantization;
3. quantize every linear of the block: W8A8 replaces it by a :class:`~awq_ext.nn.w8a8.W8A8Linear`
   (INT8 weights per output channel; activation scale calibrated as ``max|X|`` for ``static``);
   weight-only replaces its weight by the group-wise RTN fake-quantized one;
4. bias correction (optional): subtract ``E[Ŵ Q(x) - W x]`` over the calibration tokens from the bias
   (a zero bias is created where the layer has none);
5. run the quantized block to get the next block's inputs.

Which linears get activation quantization: every ``nn.Linear`` inside the decoder blocks (attention
q/k/v/o and the MLP). ``lm_head``, embeddings and norms stay float - the head's vocabulary-sized
output is the most sensitive layer and is kept float by SmoothQuant and AWQ alike.

Bias-correction statistics use each linear's inputs as recorded in step 1 (float upstream within the
block, quantized previous blocks), after equalization.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from awq_ext.calibrate.driver import BlockContext, BlockObserver, BlockSource, calibration_device, run_blocks
from awq_ext.calibrate.fold import fold_group
from awq_ext.calibrate.pipeline import divide_features, prepare_for_calibration
from awq_ext.errors import AWQInputError
from awq_ext.models import ModelSpec, bind_groups, block_linears, get_blocks, get_module, get_spec
from awq_ext.models.groups import feature_names, search_input
from awq_ext.nn.w8a8 import W8A8Linear
from awq_ext.quant.quantizer import check_weight, fake_quantize
from awq_ext.quant.w8a8 import (
    activation_means,
    aweq_factors,
    channel_absmax,
    expected_output_shift,
    smoothquant_factors,
    weight_channel_absmax,
)
from awq_ext.w8a8.config import W8A8Config


@dataclass
class W8A8BlockReport:
    index: int
    rel_error: float  # ||quantized block out - float block out||^2 / ||float block out||^2 (calibration data)
    seconds: float
    groups: list[dict] = field(default_factory=list)
    bias_shift: dict[str, float] = field(default_factory=dict)  # linear -> mean |correction|
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase of this block


@dataclass
class W8A8Result:
    config: W8A8Config
    scales: dict[str, torch.Tensor]  # full prev_op path -> folded factors [K] (replayable with fold_scales)
    blocks: list[W8A8BlockReport]
    seconds: float


def equalization_factors(cfg: W8A8Config, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor | None:
    """Factors ``[K]`` for one scaling group, or ``None`` for ``w8a8-rtn``."""
    if cfg.method == "w8a8-rtn":
        return None
    x_max, w_max = channel_absmax(x), weight_channel_absmax(weights).to(x.device)
    if cfg.method == "smoothquant":
        return smoothquant_factors(x_max, w_max, cfg.alpha)
    return aweq_factors(x_max, w_max)


@torch.no_grad()
def equalize_block(block: nn.Module, spec: ModelSpec, feats: dict[str, torch.Tensor], cfg: W8A8Config,
                   prefix: str = "", out_scales: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Fold the method's factors into every applicable scaling group of ``block`` (exact in real
    arithmetic) and divide the recorded inputs ``feats`` accordingly. Returns one report per group;
    the factors go into ``out_scales`` keyed by ``prefix + prev_op``."""
    groups: list[dict] = []
    for group, skip in bind_groups(block, spec, feats):
        if skip:
            groups.append({"prev_op": group.prev_op, "skipped": skip})
            continue
        lins = [get_module(block, n) for n in group.linears]
        s = equalization_factors(cfg, search_input(group, feats)[0], [lin.weight.data for lin in lins])
        if s is None:
            continue
        fold_group(block, group, s)
        divide_features(feats, group.linears, s)
        if out_scales is not None:
            out_scales[prefix + group.prev_op] = s.cpu()
        groups.append({"prev_op": group.prev_op, "s_min": float(s.min()), "s_max": float(s.max())})
    return groups



def _set_bias(lin: nn.Linear, value: torch.Tensor) -> None:
    if lin.bias is None:
        lin.bias = nn.Parameter(value.to(lin.weight), requires_grad=False)
    else:
        lin.bias.data.copy_(value.to(lin.bias))


@torch.no_grad()
def _quantize_linear(block: nn.Module, name: str, lin: nn.Linear, x: torch.Tensor, cfg: W8A8Config) -> float:
    """Quantize one linear in place (W8A8: swap the module); returns the mean |bias correction| (0 if off)."""
    bc = cfg.use_bias_correction
    if cfg.weight_only:
        w = lin.weight.data.float()
        w_hat = fake_quantize(w, cfg.quant_spec())
        shift = 0.0
        if bc:
            mx, mq = activation_means(x, None)
            corr = expected_output_shift(w, w_hat, mx, mq)
            base = lin.bias.data.float() if lin.bias is not None else torch.zeros_like(corr)
            _set_bias(lin, base - corr)
            shift = float(corr.abs().mean())
        lin.weight.data = w_hat.to(lin.weight.dtype)
        return shift
    new = W8A8Linear.from_linear(lin, cfg.act_quant, channel_absmax(x).max() if cfg.act_quant == "static" else None,
                                 bias=bc or None)
    shift = 0.0
    if bc:
        mx, mq = activation_means(x, new.fake_quant_input)
        corr = expected_output_shift(lin.weight.data.float(), new.dequantized_weight(), mx, mq)
        new.bias.sub_(corr.to(new.bias))
        shift = float(corr.abs().mean())
    block.set_submodule(name, new)
    return shift


def validate_block_w8a8(block: nn.Module, prefix: str, cfg: W8A8Config, spec: ModelSpec | None = None) -> None:
    lins = block_linears(block, spec)
    if not lins:
        raise AWQInputError(f"{prefix.rstrip('.')} holds no nn.Linear: the model is already quantized, or "
                            "the adapter spec does not match it; load a float model")
    for name, lin in lins.items():
        if cfg.weight_only:
            check_weight(lin.weight.data, cfg.quant_spec(), prefix + name)
        elif not torch.isfinite(lin.weight).all():
            raise AWQInputError(f"{prefix}{name}: weight holds NaN/Inf; reload in float32")


def validate_model_w8a8(model: nn.Module, cfg: W8A8Config, spec: ModelSpec | None = None) -> None:
    spec = get_spec(model, spec)
    for i, block in enumerate(get_blocks(model, spec)):
        validate_block_w8a8(block, f"{spec.blocks}.{i}.", cfg, spec)


class W8A8Step:
    """The block step of :func:`quantize_w8a8`: equalize, quantize every linear, bias-correct."""

    calibrated = True
    nan_hint = "try --act-quant dynamic or another method"

    def __init__(self, spec: ModelSpec, cfg: W8A8Config):
        self.spec, self.cfg = spec, cfg
        self.desc = cfg.label()
        self.scales: dict[str, torch.Tensor] = {}

    def validate(self, block: nn.Module, prefix: str) -> None:
        validate_block_w8a8(block, prefix, self.cfg, self.spec)

    def record_names(self, block: nn.Module, linears: list[str]) -> list[str]:
        return feature_names(block, self.spec, linears)

    def reference_modules(self, block: nn.Module) -> list[str]:
        return []

    def process(self, ctx: BlockContext) -> W8A8BlockReport:
        report = W8A8BlockReport(ctx.index, float("nan"), 0.0, phases=ctx.phases)
        report.groups = equalize_block(ctx.block, self.spec, ctx.feats, self.cfg, ctx.prefix, self.scales)
        for name, lin in ctx.linears.items():
            if name not in ctx.feats:
                raise AWQInputError(f"{ctx.prefix}{name} received no calibration tokens (a MoE expert no token was "
                                    "routed to); W8A8 needs its activations: use more calibration data or an AWQ "
                                    "method, which falls back to RTN for such experts")
            report.bias_shift[name] = _quantize_linear(ctx.block, name, lin, ctx.feats[name], self.cfg)
        return report


@torch.no_grad()
def quantize_w8a8(model: nn.Module, calib_ids: torch.Tensor, cfg: W8A8Config, progress: bool = True,
                  spec: ModelSpec | None = None, *, source: BlockSource | None = None,
                  observers: Sequence[BlockObserver] = ()) -> W8A8Result:
    """Quantize ``model``'s decoder-block linears in place as ``cfg`` says (see module doc).
    ``spec``: a ``--spec FILE.json`` (default: the registry's); ``source``/``observers``: as in
    :func:`awq_ext.calibrate.pipeline.quantize_blocks`."""
    if calib_ids is None or calib_ids.dim() != 2 or calib_ids.dtype not in (torch.int32, torch.int64):
        raise AWQInputError("W8A8 calibration needs integer token ids [n_samples, seqlen] (static activation "
                            "scales, equalization ranges and bias correction all come from them)")
    if source is None:
        validate_model_w8a8(model, cfg, spec)  # before preparing: an already-quantized model keeps its clear error
    spec_file, spec = spec is not None, get_spec(model, spec)
    prepare_for_calibration(model, spec, spec_file, source)
    step = W8A8Step(spec, cfg)
    run = run_blocks(model, step.spec, step, calib_ids, device=calibration_device(cfg.device),
                     chunk_size=cfg.chunk_size, propagate=cfg.propagate, progress=progress, source=source,
                     observers=observers)
    return W8A8Result(cfg, step.scales, run.reports, run.seconds)
