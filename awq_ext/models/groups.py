"""Bind a spec's scaling groups to one decoder block: expand ``*`` over expert lists, decide which
groups apply there, and say why the others are skipped.

A group is skipped (and reported, never silently) when its modules are absent in the block (dense
vs MoE layers of DeepSeek / Qwen-MoE), when the block has a module its ``when_absent`` excludes, when
no exact fold exists (widths differ: GQA's v_proj -> o_proj, a fused qkv_proj whose parts differ), or
when its input saw fewer than ``min_tokens`` calibration tokens (a rarely routed expert): that group
keeps scale 1 and its linears are quantized by plain RTN without clip search.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.models.spec import ModelSpec, ScalingGroup, get_module, has_module


def _expand(block: nn.Module, group: ScalingGroup) -> list[ScalingGroup] | str:
    """Concrete groups for ``group`` in ``block`` (``*`` replaced), or why it cannot expand."""
    starred = [p for p in group.paths() if "*" in p]
    if not starred:
        return [group]
    lists = {p.split("*")[0].rstrip(".") for p in starred}
    missing = sorted(p for p in lists if not has_module(block, p))
    if missing:
        return f"modules absent in this block: {', '.join(missing)}"
    counts = {p: len(get_module(block, p)) for p in lists}
    if len(set(counts.values())) != 1:
        raise AWQInputError(f"scaling group {group.prev_op!r}: its '*' lists differ in length ({counts})")
    n = next(iter(counts.values()))
    if "*" in group.prev_op:  # one group per index (each expert's up -> down)
        return [replace(group, prev_op=_sub(group.prev_op, i), linears=tuple(_sub(p, i) for p in group.linears),
                        routers=tuple(_sub(p, i) for p in group.routers), inspect=_sub(group.inspect, i),
                        source=None if group.source is None else _sub(group.source, i)) for i in range(n)]
    # one group whose consumers span every index (the norm before all experts)
    return [replace(group, linears=_every(group.linears, n), routers=_every(group.routers, n))]


def _sub(path: str, i: int) -> str:
    return path.replace("*", str(i))


def _every(paths: tuple[str, ...], n: int) -> tuple[str, ...]:
    return tuple(q for p in paths for q in ([_sub(p, i) for i in range(n)] if "*" in p else [p]))


def prev_width(prev: nn.Module, group: ScalingGroup, consumer_width: int) -> int | str:
    """How many channels ``prev`` can take 1/s on, or why it cannot feed consumers of that width."""
    kind = group.kind
    if kind in ("auto", "linear", "rows") and isinstance(prev, nn.Linear):
        if kind == "rows":
            parts, _ = group.rows
            if prev.out_features != parts * consumer_width:
                return (f"fused rows: {prev.out_features} rows of {group.prev_op} are not {parts} equal parts of "
                        f"{consumer_width} (grouped-query attention or unequal fused parts); no exact fold")
            return consumer_width
        return prev.out_features
    w = getattr(prev, "weight", None)
    if kind in ("auto", "norm", "offset_norm") and isinstance(w, torch.Tensor) and w.dim() == 1:
        return w.numel()
    raise AWQInputError(f"scaling group {group.prev_op!r}: {type(prev).__name__} cannot be folded as kind "
                        f"{kind!r} (linear/rows need an nn.Linear, norm kinds a 1-D weight)")


def consumer_width(module: nn.Module, path: str) -> int:
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise AWQInputError(f"{path}: {type(module).__name__} is not a linear-like consumer (no 2-D weight)")
    return w.shape[1]


def skip_reason(block: nn.Module, group: ScalingGroup) -> str | None:
    """Why ``group`` (already expanded) cannot be scaled exactly in ``block``; ``None`` if it can."""
    present = [p for p in group.when_absent if has_module(block, p)]
    if present:
        return f"applies only without {', '.join(present)}"
    lacking = [p for p in group.when_present if not has_module(block, p)]
    if lacking:
        return f"applies only with {', '.join(lacking)}"
    missing = list(dict.fromkeys(p for p in group.paths() if not has_module(block, p)))
    if missing:
        return f"modules absent in this block: {', '.join(missing)}"
    widths = {p: consumer_width(get_module(block, p), p) for p in (*group.linears, *group.routers)}
    if len(set(widths.values())) != 1:
        raise AWQInputError(f"scaling group {group.prev_op!r}: its consumers read one tensor but their input "
                            f"widths differ: {widths}; fix the spec")
    k = next(iter(widths.values()))
    width = prev_width(get_module(block, group.prev_op), group, k)
    if isinstance(width, str):
        return width
    if width != k:
        if group.kind in ("norm", "offset_norm") or not isinstance(get_module(block, group.prev_op), nn.Linear):
            raise AWQInputError(f"scaling group {group.prev_op!r}: the norm has width {width} but its linears "
                                f"{list(group.linears)} read {k} channels; the spec does not match the model")
        return f"output/input widths differ ({width} vs {k}): no exact per-channel fold"
    return None


def n_tokens(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1] if x.numel() else 0


def bind_groups(block: nn.Module, spec: ModelSpec, feats: dict[str, torch.Tensor] | None = None,
                min_tokens: int = 1) -> list[tuple[ScalingGroup, str | None]]:
    """Every group of ``spec`` resolved on ``block``, in forward order, each with its skip reason (or
    ``None``). With ``feats``, groups whose input saw fewer than ``min_tokens`` tokens are skipped."""
    out: list[tuple[ScalingGroup, str | None]] = []
    for group in spec.groups:
        expanded = _expand(block, group)
        if isinstance(expanded, str):
            out.append((group, expanded))
            continue
        for g in expanded:
            why = skip_reason(block, g)
            if why is None and feats is not None:
                seen = n_tokens(feats[g.input_name]) if g.input_name in feats else 0
                if seen < min_tokens:
                    why = (f"{g.input_name} received {seen} calibration tokens (< {min_tokens}): scale 1, and "
                           "its linears are quantized by RTN without clip search")
            out.append((g, why))
    _check_disjoint(spec, [g for g, why in out if why is None])
    return out


def _check_disjoint(spec: ModelSpec, applied: list[ScalingGroup]) -> None:
    """Each prev-op and each consumer belongs to at most one applied group; else folds would compound."""
    seen: dict[str, str] = {}
    for g in applied:
        for p in (f"prev-op {g.prev_op}", *(f"consumer {c}" for c in (*g.linears, *g.routers))):
            if p in seen:
                raise AWQInputError(f"spec {spec.name!r}: {p} is in two scaling groups that both apply to this "
                                    f"block ({seen[p]} and {g.prev_op}); make them exclusive (when_absent/"
                                    "when_present)")
            seen[p] = g.prev_op


def feature_names(block: nn.Module, spec: ModelSpec, linears: list[str]) -> list[str]:
    """Modules whose inputs calibration records: the quantized linears plus every group input that is
    not one of them (the MoE block, ``""`` = the block for whole-block groups)."""
    extra = [n for g, why in bind_groups(block, spec) if why is None
             for n in (g.input_name, *([""] if g.inspect == "" else []))]
    return list(dict.fromkeys([*linears, *extra]))


def search_input(group: ScalingGroup, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(activation statistics input, inspect input)`` of a bound group: the block's own input when
    the whole block is inspected, else the group's source input for both."""
    x = feats[group.input_name]
    return x, feats[""] if group.inspect == "" else x


def clip_skipped(spec: ModelSpec, name: str, feats: dict[str, torch.Tensor], min_tokens: int) -> bool:
    """Clip search is skipped for spec-excluded linears and for ones that saw too few tokens."""
    return spec.clip_skipped(name) or name not in feats or n_tokens(feats[name]) < min_tokens
