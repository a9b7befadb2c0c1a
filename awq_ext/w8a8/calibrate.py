"""The W8A8 calibration driver: block by block, equalize, quantize, bias-correct, propagate.

Same machinery as the AWQ pipeline (``capture_block_inputs`` for block 0's inputs, ``collect_inputs``
for each linear's inputs, ``fold_scales`` for exact equalization), so memory stays bounded to one
block's activations. Per block:

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

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from awq_ext.calibrate.capture import capture_block_inputs, run_chunked, to_device
from awq_ext.calibrate.fold import fold_group
from awq_ext.calibrate.prepare import prepare_model
from awq_ext.calibrate.pipeline import collect_inputs, divide_features
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


def validate_model_w8a8(model: nn.Module, cfg: W8A8Config, spec: ModelSpec | None = None) -> None:
    spec = get_spec(model, spec)
    for i, block in enumerate(get_blocks(model, spec)):
        lins = block_linears(block, spec)
        if not lins:
            raise AWQInputError(f"{spec.blocks}.{i} holds no nn.Linear: the model is already quantized, or "
                                "the adapter spec does not match it; load a float model")
        for name, lin in lins.items():
            if cfg.weight_only:
                check_weight(lin.weight.data, cfg.quant_spec(), f"{spec.blocks}.{i}.{name}")
            elif not torch.isfinite(lin.weight).all():
                raise AWQInputError(f"{spec.blocks}.{i}.{name}: weight holds NaN/Inf; reload in float32")


@torch.no_grad()
def quantize_w8a8(model: nn.Module, calib_ids: torch.Tensor, cfg: W8A8Config, progress: bool = True,
                  spec: ModelSpec | None = None) -> W8A8Result:
    """Quantize ``model``'s decoder-block linears in place as ``cfg`` says (see module doc)."""
    t0 = time.time()
    if calib_ids is None or calib_ids.dim() != 2 or calib_ids.dtype not in (torch.int32, torch.int64):
        raise AWQInputError("W8A8 calibration needs integer token ids [n_samples, seqlen] (static activation "
                            "scales, equalization ranges and bias correction all come from them)")
    validate_model_w8a8(model, cfg, spec)
    spec_file, spec = spec is not None, get_spec(model, spec)
    prepare_model(model, spec, strict_paths=spec_file)
    blocks = get_blocks(model, spec)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    inps, kwargs = capture_block_inputs(model, blocks, calib_ids)
    if not torch.isfinite(inps).all():
        raise AWQInputError("calibration activations contain NaN/Inf at the first block; load the model in float32")
    scales: dict[str, torch.Tensor] = {}
    reports: list[W8A8BlockReport] = []
    for i, block in enumerate(tqdm(blocks, desc=cfg.label(), disable=not progress)):
        tb = time.time()
        prefix = f"{spec.blocks}.{i}."
        home = next(block.parameters()).device
        block.to(device)
        inps = inps.to(device)
        kw = to_device(kwargs, device)
        linears = block_linears(block, spec)
        feats, fp_out = collect_inputs(block, inps, kw, feature_names(block, spec, list(linears)), cfg.chunk_size)
        report = W8A8BlockReport(i, float("nan"), 0.0)
        report.groups = equalize_block(block, spec, feats, cfg, prefix, scales)
        for name, lin in linears.items():
            if name not in feats:
                raise AWQInputError(f"{prefix}{name} received no calibration tokens (a MoE expert no token was "
                                    "routed to); W8A8 needs its activations: use more calibration data or an AWQ "
                                    "method, which falls back to RTN for such experts")
            report.bias_shift[name] = _quantize_linear(block, name, lin, feats[name], cfg)
        del feats
        q_out = run_chunked(block, inps, kw, cfg.chunk_size)
        if not torch.isfinite(q_out).all():
            raise AWQInputError(f"block {i} produced NaN/Inf after quantization; try --act-quant dynamic or "
                                "another method")
        report.rel_error = float((q_out - fp_out).pow(2).mean() / fp_out.pow(2).mean().clamp(min=1e-30))
        inps = q_out if cfg.propagate == "quantized" else fp_out
        del fp_out
        block.to(home)
        report.seconds = time.time() - tb
        reports.append(report)
    return W8A8Result(cfg, scales, reports, time.time() - t0)
