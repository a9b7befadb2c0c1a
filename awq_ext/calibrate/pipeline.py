"""The calibration driver: block by block, search transforms, quantize, propagate.

Memory stays bounded to one block's activations: block 0's inputs are captured once, then each block
(moved to the calibration device alone) records its linears' inputs through hooks, searches and folds
AWQ scales, searches clipping, quantizes its linears, and runs again to produce the next block's inputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from awq_ext.calibrate.capture import block_output, capture_block_inputs, run_chunked, to_device
from awq_ext.calibrate.fold import apply_clip, fold_scales
from awq_ext.calibrate.methods import QUANTIZER_NEEDS_INPUTS, QUANTIZERS, Method, get_method
from awq_ext.calibrate.records import ScaleEntry, SearchRecord
from awq_ext.config import QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.models import ModelSpec, block_linears, get_blocks, get_module, get_spec, group_applies
from awq_ext.quant.awq import activation_scale, candidate_scales, scaled_fake_quant, search_clip, search_scales, weight_scale
from awq_ext.quant.gptq import HessianCache
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, check_weight


@dataclass
class BlockReport:
    index: int
    rel_error: float  # ||quantized block out - float block out||^2 / ||float block out||^2 on calibration data
    seconds: float
    groups: list[dict] = field(default_factory=list)
    clips: dict[str, dict] = field(default_factory=dict)


@dataclass
class QuantizationResult:
    quantized: dict[str, QuantizedWeight]  # full linear name -> integer codes + group parameters
    record: SearchRecord | None
    blocks: list[BlockReport]
    seconds: float


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean())


def collect_inputs(
    block: nn.Module, inps: torch.Tensor, kwargs: dict[str, Any], names: list[str], chunk: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs ``[n, seqlen, K]`` of the named linears, and the block's output, for ``inps``.

    Linears fed by the same tensor (q/k/v, gate/up) get one shared tensor object, so the consumers
    (Hessians, scale division) can do their work once per source.
    """
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    # One detached copy per argument object; the argument is kept alive here so its id is never reused
    # by a later chunk's tensor while we key by it.
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(m, args, out, n):
        x = args[0]
        if id(x) not in seen:
            seen[id(x)] = (x, x.detach())
        store[n].append(seen[id(x)][1])

    hooks = [get_module(block, n).register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in names]
    try:
        out = run_chunked(block, inps, kwargs, chunk)
    finally:
        for h in hooks:
            h.remove()
    feats: dict[str, torch.Tensor] = {}
    by_source: dict[int, torch.Tensor] = {}
    for n, chunks in store.items():
        key = id(chunks[0])
        if key not in by_source:
            by_source[key] = torch.cat(chunks)
        feats[n] = by_source[key]
    return feats, out


def _subsample_tokens(x: torch.Tensor, n_tokens: int) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] <= n_tokens:
        return flat
    idx = torch.linspace(0, flat.shape[0] - 1, n_tokens).round().long()
    return flat[idx]


def divide_features(feats: dict[str, torch.Tensor], names: tuple[str, ...], scales: torch.Tensor) -> None:
    # The consumers now see x / s; dividing once per distinct tensor keeps q/k/v sharing one copy.
    done: dict[int, torch.Tensor] = {}
    for n in names:
        src = feats[n]
        if id(src) not in done:
            done[id(src)] = src / scales.to(src).view(*([1] * (src.dim() - 1)), -1)
        feats[n] = done[id(src)]


@torch.no_grad()
def _awq_search_block(
    block: nn.Module, prefix: str, spec: ModelSpec, feats: dict[str, torch.Tensor], kwargs: dict[str, Any],
    qspec: QuantSpec, cfg: QuantizeConfig, record: SearchRecord, report: BlockReport,
) -> None:
    acfg = cfg.awq
    for group in spec.groups:
        if not group_applies(block, group):
            report.groups.append({"prev_op": group.prev_op, "skipped": "output/input widths differ"})
            continue
        linears = [get_module(block, n) for n in group.linears]
        x = feats[group.linears[0]]
        xs = x if acfg.loss_samples is None else x[: acfg.loss_samples]
        inspect = get_module(block, group.inspect)
        kw = kwargs if group.inspect_kwargs else {}
        chunks = [xs[i : i + cfg.chunk_size] for i in range(0, xs.shape[0], cfg.chunk_size)]
        org = [block_output(inspect(c, **kw)) for c in chunks]
        originals = [lin.weight.data.clone() for lin in linears]

        def loss(s: torch.Tensor) -> float:
            for lin, w in zip(linears, originals):
                lin.weight.data = scaled_fake_quant(w, s.to(w.device), qspec)
            # Sum squared errors chunk by chunk: no concatenated copy of the module output.
            sse = sum(float((block_output(inspect(c, **kw)).float() - o.float()).pow(2).sum())
                      for c, o in zip(chunks, org))
            return sse / sum(o.numel() for o in org)

        try:
            s_w = weight_scale(originals, qspec)
            res = search_scales(candidate_scales(activation_scale(x), s_w, acfg.scale_mode, acfg.n_grid), loss)
        finally:
            for lin, w in zip(linears, originals):
                lin.weight.data = w
        prev = get_module(block, group.prev_op)
        fold_scales(prev, linears, res.scales)
        divide_features(feats, group.linears, res.scales)
        record.scales[prefix + group.prev_op] = ScaleEntry(
            prefix + group.prev_op, [prefix + n for n in group.linears], res.scales.cpu(),
            res.alpha, res.beta, res.loss, res.identity_loss,
        )
        report.groups.append({"prev_op": group.prev_op, "alpha": res.alpha, "beta": res.beta,
                              "loss": res.loss, "rtn_loss": res.identity_loss})
    if not acfg.clip:
        return
    for name, lin in block_linears(block).items():
        if name in spec.clip_skip:
            continue
        xs = _subsample_tokens(feats[name], acfg.clip_tokens)
        r = search_clip(lin.weight.data, xs, qspec, acfg.clip_n_grid, acfg.max_shrink)
        apply_clip(lin, r.max_val, qspec)
        record.clips[prefix + name] = r.max_val.cpu()
        report.clips[name] = {"mse_before": r.error_before, "mse_after": r.error_after}


def _replay_block(model: nn.Module, prefix: str, record: SearchRecord, feats: dict[str, torch.Tensor],
                  qspec: QuantSpec) -> None:
    entries, clips = record.for_block(prefix)
    for e in entries:
        linears = [get_module(model, n) for n in e.linears]
        fold_scales(get_module(model, e.prev_op), linears, e.scales)
        local = tuple(n[len(prefix):] for n in e.linears)
        if all(n in feats for n in local):
            divide_features(feats, local, e.scales)
    for name, max_val in clips.items():
        apply_clip(get_module(model, name), max_val, qspec)


def needs_calibration(method: Method, record: SearchRecord | None) -> bool:
    """Whether running ``method`` needs calibration data (a replayed AWQ search + RTN does not)."""
    return (method.transform == "awq" and record is None) or QUANTIZER_NEEDS_INPUTS[method.quantizer]


def validate_model(model: nn.Module, spec: ModelSpec, qspec: QuantSpec) -> None:
    """Refuse before any work: every linear in every block must be quantizable with ``qspec``."""
    for i, block in enumerate(get_blocks(model, spec)):
        for name, lin in block_linears(block).items():
            check_weight(lin.weight.data, qspec, f"{spec.blocks}.{i}.{name}")


def validate_calibration(ids: torch.Tensor) -> None:
    if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        raise AWQInputError(f"calibration ids must be an integer [n_samples, seqlen] tensor, got {ids.dtype} "
                            f"{tuple(ids.shape)}")


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    calib_ids: torch.Tensor | None,
    cfg: QuantizeConfig,
    record: SearchRecord | None = None,
    progress: bool = True,
) -> QuantizationResult:
    """Quantize ``model``'s decoder-block linears in place (weights become their dequantized values).

    ``record``: replay a previous search instead of searching (scales and clips are folded as saved).
    Returns the integer codes per linear (for packing), the search record and per-block reports.
    """
    t0 = time.time()
    method = get_method(cfg.method)
    spec = get_spec(model)
    qspec = cfg.quant_spec()
    validate_model(model, spec, qspec)
    blocks = get_blocks(model, spec)
    needs_inputs = QUANTIZER_NEEDS_INPUTS[method.quantizer]
    searching = method.transform == "awq" and record is None
    calibrated = needs_calibration(method, record)
    quantized: dict[str, QuantizedWeight] = {}
    reports: list[BlockReport] = []
    out_record = record if record is not None else (SearchRecord(config=cfg.to_dict()) if searching else None)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    inps: torch.Tensor | None = None
    kwargs: dict[str, Any] = {}
    if calibrated:
        if calib_ids is None:
            raise AWQInputError(f"method {cfg.method!r} needs calibration data; pass calibration token ids")
        validate_calibration(calib_ids)
        inps, kwargs = capture_block_inputs(model, blocks, calib_ids)
        if not torch.isfinite(inps).all():
            raise AWQInputError("calibration activations contain NaN/Inf at the first block: the embedding "
                                "weights are corrupt or the dtype overflows; load the model in float32")

    for i, block in enumerate(tqdm(blocks, desc=f"{cfg.method} w{cfg.w_bit} g{cfg.group_size}",
                                   disable=not progress)):
        tb = time.time()
        prefix = f"{spec.blocks}.{i}."
        home = next(block.parameters()).device
        block.to(device)
        linears = block_linears(block)
        report = BlockReport(i, float("nan"), 0.0)
        feats: dict[str, torch.Tensor] = {}
        fp_out = None
        kw: dict[str, Any] = {}
        if calibrated:
            inps = inps.to(device)
            kw = to_device(kwargs, device)
            feats, fp_out = collect_inputs(block, inps, kw, list(linears), cfg.chunk_size)
            if not torch.isfinite(fp_out).all():
                raise AWQInputError(f"block {i} produced NaN/Inf on the calibration data; check the weights of "
                                    f"{prefix}* and the calibration text")
        if method.transform == "awq":
            if record is not None:
                _replay_block(model, prefix, record, feats, qspec)
            else:
                _awq_search_block(block, prefix, spec, feats, kw, qspec, cfg, out_record, report)
        quantizer = QUANTIZERS[method.quantizer]
        hessians = HessianCache()  # this block's Hessians, one per distinct input tensor
        for name, lin in linears.items():
            qw = quantizer(lin, feats.get(name) if needs_inputs else None, qspec, cfg.extra, prefix + name,
                           hessians)
            lin.weight.data = qw.dequantize().to(lin.weight.dtype).to(lin.weight.device)
            quantized[prefix + name] = QuantizedWeight(qw.q.cpu(), qw.scales.cpu(),
                                                       None if qw.zeros is None else qw.zeros.cpu(), qw.spec,
                                                       None if qw.g_idx is None else qw.g_idx.cpu())
        if calibrated:
            q_out = run_chunked(block, inps, kw, cfg.chunk_size)
            report.rel_error = _mse(q_out, fp_out) / max(float(fp_out.float().pow(2).mean()), 1e-30)
            inps = q_out if cfg.propagate == "quantized" else fp_out
            del feats, fp_out, hessians
        block.to(home)
        report.seconds = time.time() - tb
        reports.append(report)
    return QuantizationResult(quantized, out_record, reports, time.time() - t0)

