"""Weight-only calibration (RTN, AWQ, GPTQ and combinations) as a block step of the one driver.

The loop itself (capture block 0's inputs, per block: load onto the calibration device, record each
linear's inputs, step, propagate, release) is :func:`awq_ext.calibrate.driver.run_blocks`. The step
here, per block: replay or search and fold AWQ scales, search clipping (``_awq_search_block``),
quantize every linear with the method's quantizer and keep its integer codes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

from awq_ext.calibrate.driver import (
    BlockContext, BlockObserver, BlockSource, calibration_device, run_blocks,
)
from awq_ext.calibrate.fold import apply_clip, fold_group, fold_scales
from awq_ext.calibrate.methods import QUANTIZER_NEEDS_INPUTS, QUANTIZERS, Method, get_method
from awq_ext.calibrate.prepare import prepare_model
from awq_ext.calibrate.records import ScaleEntry, SearchRecord
from awq_ext.calibrate.search_loss import group_loss
from awq_ext.calibrate.timing import timed
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.models import ModelSpec, ScalingGroup, bind_groups, block_linears, get_blocks, get_module, get_spec
from awq_ext.models.groups import clip_skipped, feature_names, n_tokens, search_input
from awq_ext.models.spec_file import check_spec_on_model
from awq_ext.quant.awq import activation_scale, candidate_scales, search_clip, search_scales, weight_scale
from awq_ext.quant.gptq import HessianCache
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
                              exact_shortcuts=acfg.exact_shortcuts,
                              reference=None if tokens_subsampled(group, acfg) else (references or {}).get(group.inspect))
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


def tokens_subsampled(group: ScalingGroup, acfg: AWQConfig) -> bool:
    """Whether the group's loss runs on ``loss_tokens`` spread tokens (per-token inspected modules: called
    without the block's keyword inputs, e.g. MLP, MoE; single-linear groups are left alone, their
    Gram-form loss costs about the same for any count)."""
    return acfg.loss_tokens is not None and not group.inspect_kwargs and group.inspect not in group.linears


def loss_inputs(x: torch.Tensor, group: ScalingGroup, acfg: AWQConfig) -> torch.Tensor:
    """The samples the scale search's loss runs on: the first ``loss_samples`` sequences (all if None) of
    ``[n, seqlen, K]`` inputs (a MoE expert's routed tokens ``[T, K]`` are kept whole), or, where
    :func:`tokens_subsampled`, ``loss_tokens`` tokens spread evenly over ALL sequences (``[1, T', K]``)."""
    if tokens_subsampled(group, acfg):
        return _subsample_tokens(x, acfg.loss_tokens).unsqueeze(0)
    return x if acfg.loss_samples is None or x.dim() != 3 else x[: acfg.loss_samples]


def reference_modules(block: nn.Module, spec: ModelSpec, acfg: AWQConfig) -> list[str]:
    """Inspected modules whose float outputs the scale search compares against, recorded during the
    calibration forward instead of recomputed: all but single linears (Gram form) and groups whose loss
    runs on subsampled tokens (their reference is computed on those tokens)."""
    names: list[str] = []
    for g, why in bind_groups(block, spec):
        if why is None and g.inspect not in g.linears and not tokens_subsampled(g, acfg) and g.inspect not in names:
            names.append(g.inspect)
    return names


def _replay_block(model: nn.Module, prefix: str, record: SearchRecord, feats: dict[str, torch.Tensor],
                  qspec: QuantSpec) -> None:
    entries, clips = record.for_block(prefix)
    for e in entries:
        linears = [get_module(model, n) for n in (*e.linears, *e.routers)]
        fold_scales(get_module(model, e.prev_op), linears, e.scales, e.kind, None if e.rows is None else tuple(e.rows))
        divide_features(feats, tuple(n[len(prefix):] for n in e.linears), e.scales)  # skips experts without tokens
    for name, max_val in clips.items():
        apply_clip(get_module(model, name), max_val, qspec)


def needs_calibration(method: Method, record: SearchRecord | None) -> bool:
    """Whether running ``method`` needs calibration data (a replayed AWQ search + RTN does not)."""
    return (method.transform == "awq" and record is None) or QUANTIZER_NEEDS_INPUTS[method.quantizer]


def validate_block(block: nn.Module, prefix: str, qspec: QuantSpec, spec: ModelSpec | None = None) -> None:
    """Every linear of the block that gets quantized must be quantizable with ``qspec``."""
    for name, lin in block_linears(block, spec).items():
        check_weight(lin.weight.data, qspec, prefix + name)


def validate_model(model: nn.Module, spec: ModelSpec, qspec: QuantSpec) -> None:
    """Refuse before any work: every linear in every block must be quantizable with ``qspec``."""
    for i, block in enumerate(get_blocks(model, spec)):
        validate_block(block, f"{spec.blocks}.{i}.", qspec, spec)


def validate_calibration(ids: torch.Tensor) -> None:
    if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        raise AWQInputError(f"calibration ids must be an integer [n_samples, seqlen] tensor, got {ids.dtype} "
                            f"{tuple(ids.shape)}")


def prepare_for_calibration(model: nn.Module, spec: ModelSpec, spec_file: bool, source: BlockSource | None) -> None:
    """:func:`~awq_ext.calibrate.prepare.prepare_model` for an in-memory model; a streamed skeleton has no
    weights to convert (its store reads them as float32) and its experts are per-expert linears already
    (:func:`awq_ext.io.stream.open_streamed` unfuses them on the meta device)."""
    if source is None:
        prepare_model(model, spec, strict_paths=spec_file)
        return
    check_spec_on_model(model, spec, strict_paths=spec_file)


class WeightOnlyStep:
    """The block step of :func:`quantize_model`: AWQ replay or search (scales + clips), then the
    method's quantizer on every linear; the linears keep their dequantized weights, each block's integer
    codes go to ``ctx.outputs`` and - with ``keep_codes`` - into ``quantized`` by full linear name
    (a streamed model writes them out block by block instead: all codes of a large model as int32 would
    be four times its float16 size)."""

    nan_hint = "check the weights and the calibration text, or try another method"

    def __init__(self, model: nn.Module, spec: ModelSpec, cfg: QuantizeConfig, record: SearchRecord | None,
                 keep_codes: bool = True):
        self.model, self.spec, self.cfg, self.record, self.keep_codes = model, spec, cfg, record, keep_codes
        self.method = get_method(cfg.method)
        self.qspec = cfg.quant_spec()
        self.desc = f"{cfg.method} w{cfg.w_bit} g{cfg.group_size}"
        self.calibrated = needs_calibration(self.method, record)
        self.searching = self.method.transform == "awq" and record is None
        self.out_record = record if record is not None else (SearchRecord(config=cfg.to_dict()) if self.searching
                                                             else None)
        self.quantized: dict[str, QuantizedWeight] = {}

    def validate(self, block: nn.Module, prefix: str) -> None:
        validate_block(block, prefix, self.qspec, self.spec)

    def record_names(self, block: nn.Module, linears: list[str]) -> list[str]:
        """Modules whose inputs the driver records: the linears plus the groups' other inputs."""
        return feature_names(block, self.spec, linears)

    def reference_modules(self, block: nn.Module) -> list[str]:
        """Modules whose float outputs the driver records for the scale search (see
        :func:`reference_modules`)."""
        return reference_modules(block, self.spec, self.cfg.awq) if self.searching and self.cfg.awq.exact_shortcuts else []

    def process(self, ctx: BlockContext) -> BlockReport:
        report = BlockReport(ctx.index, float("nan"), 0.0, phases=ctx.phases)
        if self.method.transform == "awq":
            if self.record is not None:
                _replay_block(self.model, ctx.prefix, self.record, ctx.feats, self.qspec)
            else:
                _awq_search_block(ctx.block, ctx.prefix, self.spec, ctx.feats, ctx.kwargs, self.qspec, self.cfg,
                                  self.out_record, report, ctx.references)
        quantizer = QUANTIZERS[self.method.quantizer]
        needs_inputs = QUANTIZER_NEEDS_INPUTS[self.method.quantizer]
        t_quant = time.perf_counter()
        hessians = HessianCache()  # this block's Hessians, one per distinct input tensor
        for name, lin in ctx.linears.items():
            # a MoE expert (almost) no calibration token was routed to: RTN, as its group's report says
            starved = needs_inputs and (name not in ctx.feats or n_tokens(ctx.feats[name]) < self.cfg.awq.min_tokens)
            if starved:
                report.groups.append({"linear": name, "fallback": f"fewer than {self.cfg.awq.min_tokens} calibration "
                                      f"tokens: RTN instead of {self.method.quantizer}"})
            qw = (QUANTIZERS["rtn"] if starved else quantizer)(
                lin, ctx.feats.get(name) if needs_inputs else None, self.qspec, self.cfg.extra, ctx.prefix + name,
                hessians)
            lin.weight.data = qw.dequantize().to(lin.weight.dtype).to(lin.weight.device)
            ctx.outputs[ctx.prefix + name] = QuantizedWeight(
                qw.q.cpu(), qw.scales.cpu(), None if qw.zeros is None else qw.zeros.cpu(), qw.spec,
                None if qw.g_idx is None else qw.g_idx.cpu()).compact()
            del qw
        report.phases["quantize"] = time.perf_counter() - t_quant
        if self.keep_codes:
            self.quantized.update(ctx.outputs)
        return report


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
    return quantize_blocks(model, calib_ids, cfg, record=record, progress=progress, spec=spec)


def quantize_blocks(
    model: nn.Module,
    calib_ids: torch.Tensor | None,
    cfg: QuantizeConfig,
    record: SearchRecord | None = None,
    progress: bool = True,
    *,
    source: BlockSource | None = None,
    observers: Sequence[BlockObserver] = (),
    keep_codes: bool = True,
    spec: ModelSpec | None = None,
) -> QuantizationResult:
    """:func:`quantize_model` with the driver's options: ``source`` streams the blocks' weights from
    their shards (:class:`awq_ext.io.stream.BlockStore`), ``observers`` see each finished block (the
    streaming checkpoint writer, layer-by-layer evaluation); ``keep_codes=False`` leaves
    ``result.quantized`` empty (the observers consumed the codes)."""
    spec_file, spec = spec is not None, get_spec(model, spec)
    prepare_for_calibration(model, spec, spec_file, source)
    step = WeightOnlyStep(model, spec, cfg, record, keep_codes)
    if step.calibrated:
        if calib_ids is None:
            raise AWQInputError(f"method {cfg.method!r} needs calibration data; pass calibration token ids")
        validate_calibration(calib_ids)
    run = run_blocks(model, step.spec, step, calib_ids, device=calibration_device(cfg.device),
                     chunk_size=cfg.chunk_size, propagate=cfg.propagate, progress=progress, source=source,
                     observers=observers)
    return QuantizationResult(step.quantized, step.out_record, run.reports, run.seconds)
