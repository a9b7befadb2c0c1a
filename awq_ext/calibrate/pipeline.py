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
from awq_ext.calibrate.fold import apply_clip, fold_group, fold_scales
from awq_ext.calibrate.prepare import prepare_model
from awq_ext.calibrate.methods import QUANTIZER_NEEDS_INPUTS, QUANTIZERS, Method, get_method
from awq_ext.calibrate.records import ScaleEntry, SearchRecord
from awq_ext.calibrate.search_loss import group_loss
from awq_ext.calibrate.timing import timed
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.models import ModelSpec, ScalingGroup, bind_groups, block_linears, get_blocks, get_module, get_spec
from awq_ext.models.groups import clip_skipped, feature_names, search_input
from awq_ext.quant.awq import activation_scale, candidate_scales, search_clip, search_scales, weight_scale
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, check_weight


@dataclass
class BlockReport:
    index: int
    rel_error: float  # ||quantized block out - float block out||^2 / ||float block out||^2 on calibration data
    seconds: float
    groups: list[dict] = field(default_factory=list)
    clips: dict[str, dict] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # wall seconds per phase of this block


@dataclass
class QuantizationResult:
    quantized: dict[str, QuantizedWeight]  # full linear name -> integer codes + group parameters
    record: SearchRecord | None
    blocks: list[BlockReport]
    seconds: float


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean())


def collect_inputs(
    block: nn.Module, inps: torch.Tensor, kwargs: dict[str, Any], names: list[str], chunk: int,
    module_outputs: dict[str, list[torch.Tensor]] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs ``[n, seqlen, K]`` of the named linears, and the block's output, for ``inps``.

    ``module_outputs``: keys are module names; each gets that module's output per chunk of ``chunk``
    samples (what the scale search compares against, so it need not run the float module again).
    """
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [
        get_module(block, n).register_forward_hook(lambda m, args, out, n=n: store[n].append(args[0].detach()))
        for n in names
    ]
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
        if n not in feats:
            continue
        src = feats[n]
        if id(src) not in done:
            done[id(src)] = src / scales.to(src).view(*([1] * (src.dim() - 1)), -1)
        feats[n] = done[id(src)]


@torch.no_grad()
def _awq_search_block(
    block: nn.Module, prefix: str, spec: ModelSpec, feats: dict[str, torch.Tensor], kwargs: dict[str, Any],
    qspec: QuantSpec, cfg: QuantizeConfig, record: SearchRecord, report: BlockReport,
    references: dict[str, list[torch.Tensor]] | None = None,
) -> None:
    acfg = cfg.awq
    for group, skip in bind_groups(block, spec, feats, acfg.min_tokens):
        if skip:
            report.groups.append({"prev_op": group.prev_op, "skipped": skip})
            continue
        linears = [get_module(block, n) for n in group.linears]
        x, x_inspect = search_input(group, feats)
        xs = loss_inputs(x_inspect, group, acfg)
        inspect = get_module(block, group.inspect)
        with timed(report.phases, f"scale_search:{group.inspect or 'block'}"):
            loss = group_loss(inspect, linears, xs, kwargs if group.inspect_kwargs else {}, qspec, cfg.chunk_size,
                              exact_shortcuts=acfg.exact_shortcuts, reference=(references or {}).get(group.inspect))
            try:
                s_w = weight_scale([lin.weight.data for lin in linears], qspec)
                stride = 1 if acfg.scale_mode == "joint" else acfg.refine_stride
                res = search_scales(candidate_scales(activation_scale(x), s_w, acfg.scale_mode, acfg.n_grid), loss,
                                    refine_stride=stride)
            finally:
                loss.close()
        fold_group(block, group, res.scales)
        divide_features(feats, group.linears, res.scales)
        record.scales[prefix + group.prev_op] = ScaleEntry(
            prefix + group.prev_op, [prefix + n for n in group.linears], res.scales.cpu(),
            res.alpha, res.beta, res.loss, res.identity_loss, group.kind,
            None if group.rows is None else list(group.rows), [prefix + n for n in group.routers],
        )
        report.groups.append({"prev_op": group.prev_op, "alpha": res.alpha, "beta": res.beta,
                              "loss": res.loss, "rtn_loss": res.identity_loss,
                              "tried": [list(t) for t in res.tried]})
    if not acfg.clip:
        return
    for name, lin in block_linears(block, spec).items():
        if clip_skipped(spec, name, feats, acfg.min_tokens):
            continue
        xs = _subsample_tokens(feats[name], acfg.clip_tokens)
        with timed(report.phases, "clip_search"):
            r = search_clip(lin.weight.data, xs, qspec, acfg.clip_n_grid, acfg.max_shrink)
        apply_clip(lin, r.max_val, qspec)
        record.clips[prefix + name] = r.max_val.cpu()
        report.clips[name] = {"mse_before": r.error_before, "mse_after": r.error_after}


def loss_inputs(x: torch.Tensor, group: ScalingGroup, acfg: AWQConfig) -> torch.Tensor:
    """The samples the scale search's loss runs on: the first ``loss_samples`` sequences (all if None),
    except for per-token inspected modules (called without the block's keyword inputs: MLP, MoE) when
    ``loss_tokens`` is set: then that many tokens spread evenly over ALL sequences (``[1, T', K]``).
    Single-linear groups are left alone (their Gram-form loss costs about the same for any count)."""
    if acfg.loss_tokens is not None and not group.inspect_kwargs and group.inspect not in group.linears:
        return _subsample_tokens(x, acfg.loss_tokens).unsqueeze(0)
    return x if acfg.loss_samples is None else x[: acfg.loss_samples]


def reference_modules(block: nn.Module, spec: ModelSpec) -> list[str]:
    """Inspected modules whose float outputs the scale search compares against (all but single linears,
    whose loss takes the Gram form): recorded during the calibration forward instead of recomputed."""
    names: list[str] = []
    for g, why in bind_groups(block, spec):
        if why is None and g.inspect not in g.linears and g.inspect not in names:
            names.append(g.inspect)
    return names


def _replay_block(model: nn.Module, prefix: str, record: SearchRecord, feats: dict[str, torch.Tensor],
                  qspec: QuantSpec) -> None:
    entries, clips = record.for_block(prefix)
    for e in entries:
        linears = [get_module(model, n) for n in (*e.linears, *e.routers)]
        fold_scales(get_module(model, e.prev_op), linears, e.scales, e.kind, None if e.rows is None else tuple(e.rows))
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
        for name, lin in block_linears(block, spec).items():
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
    spec: ModelSpec | None = None,
) -> QuantizationResult:
    """Quantize ``model``'s decoder-block linears in place (weights become their dequantized values).

    ``record``: replay a previous search instead of searching (scales and clips are folded as saved).
    ``spec``: the architecture spec (a ``--spec FILE.json``); default: the registry's for the model type.
    The model is first converted for calibration (float32, per-expert linears; see
    :mod:`awq_ext.calibrate.prepare`).
    Returns the integer codes per linear (for packing), the search record and per-block reports.
    """
    t0 = time.time()
    method = get_method(cfg.method)
    spec_file, spec = spec is not None, get_spec(model, spec)
    prepare_model(model, spec, strict_paths=spec_file)
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
        linears = block_linears(block, spec)
        report = BlockReport(i, float("nan"), 0.0)
        feats: dict[str, torch.Tensor] = {}
        fp_out = None
        kw: dict[str, Any] = {}
        if calibrated:
            inps = inps.to(device)
            kw = to_device(kwargs, device)
            refs: dict[str, list[torch.Tensor]] = {}
            if searching and cfg.awq.exact_shortcuts:
                refs = {n: [] for n in reference_modules(block, spec)}
            with timed(report.phases, "collect_inputs"):
                feats, fp_out = collect_inputs(block, inps, kw, feature_names(block, spec, list(linears)),
                                               cfg.chunk_size, refs)
            if not torch.isfinite(fp_out).all():
                raise AWQInputError(f"block {i} produced NaN/Inf on the calibration data; check the weights of "
                                    f"{prefix}* and the calibration text")
        if method.transform == "awq":
            if record is not None:
                _replay_block(model, prefix, record, feats, qspec)
            else:
                _awq_search_block(block, prefix, spec, feats, kw, qspec, cfg, out_record, report, refs)
        quantizer = QUANTIZERS[method.quantizer]
        t_quant = time.perf_counter()
        for name, lin in linears.items():
            starved = needs_inputs and name not in feats  # a MoE expert no calibration token was routed to
            if starved:
                report.groups.append({"linear": name, "fallback": "no calibration tokens: RTN instead of "
                                      f"{method.quantizer}"})
            qw = (QUANTIZERS["rtn"] if starved else quantizer)(lin, feats.get(name) if needs_inputs else None, qspec,
                                                              cfg.extra, prefix + name)
            lin.weight.data = qw.dequantize().to(lin.weight.dtype).to(lin.weight.device)
            quantized[prefix + name] = QuantizedWeight(qw.q.cpu(), qw.scales.cpu(),
                                                       None if qw.zeros is None else qw.zeros.cpu(), qw.spec,
                                                       None if qw.g_idx is None else qw.g_idx.cpu())
        report.phases["quantize"] = time.perf_counter() - t_quant
        if calibrated:
            with timed(report.phases, "propagate"):
                q_out = run_chunked(block, inps, kw, cfg.chunk_size)
            report.rel_error = _mse(q_out, fp_out) / max(float(fp_out.float().pow(2).mean()), 1e-30)
            inps = q_out if cfg.propagate == "quantized" else fp_out
            del feats, fp_out, refs
        block.to(home)
        report.seconds = time.time() - tb
        reports.append(report)
    return QuantizationResult(quantized, out_record, reports, time.time() - t0)

