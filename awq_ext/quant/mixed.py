"""Mixed precision: keep a few input channels of a weight in float, round the rest to nearest.

The paper's Table 1 experiment: a small fraction of input channels (columns of ``W`` ``[N, K]``) is
kept in FP16 and the others are quantized with RTN. Which channels matters:

* ``activation``: the channels with the largest mean |x| on calibration data (the salient ones),
* ``weight``: the channels with the largest L2 norm of their weight column,
* ``random``: a seeded random choice.

Rule for the quantized part: kept columns are excluded from their groups' min/max (set to 0, which is
always inside the asymmetric range, before computing the group parameters), as a real mixed-precision
format that stores them separately would do; afterwards they are written back bit for bit. The number
kept is ``max(1, round(frac · K))`` for ``frac > 0`` (0.1 % of 576 channels still keeps one).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, check_weight, compute_qparams, dequantize, quantize

CRITERIA: tuple[str, ...] = ("activation", "weight", "random")


def n_keep(in_features: int, frac: float) -> int:
    """Channels kept for a fraction ``frac`` in ``[0, 1)``: ``max(1, round(frac·K))`` when ``frac > 0``."""
    if not 0.0 <= frac < 1.0:
        raise AWQInputError(f"keep fraction must be in [0, 1), got {frac}")
    return 0 if frac == 0 else max(1, round(frac * in_features))


def select_channels(
    criterion: str,
    frac: float,
    weight: torch.Tensor,
    act_scale: torch.Tensor | None = None,
    seed: int = 0,
    name: str = "",
) -> torch.Tensor:
    """Sorted int64 indices of the input channels of ``weight`` ``[N, K]`` to keep in float.

    ``act_scale`` (``[K]``, mean |x| per channel) is required for ``activation``. ``random`` draws from a
    generator seeded with ``seed`` and ``name`` (so each layer gets its own, reproducible draw).
    """
    if criterion not in CRITERIA:
        raise AWQInputError(f"unknown salient-channel criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if weight.dim() != 2:
        raise AWQInputError(f"{name or 'weight'}: expected a 2-D [N, K] weight, got {tuple(weight.shape)}")
    k = weight.shape[1]
    m = n_keep(k, frac)
    if m == 0:
        return torch.zeros(0, dtype=torch.long)
    if criterion == "activation":
        if act_scale is None or act_scale.shape != (k,):
            got = None if act_scale is None else tuple(act_scale.shape)
            raise AWQInputError(f"{name or 'weight'}: activation criterion needs act_scale of shape ({k},), got {got}")
        score = act_scale.float().cpu()
    elif criterion == "weight":
        score = weight.float().norm(dim=0).cpu()
    else:
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        return torch.randperm(k, generator=g)[:m].sort().values
    return torch.topk(score, m).indices.sort().values


@dataclass
class MixedResult:
    weight: torch.Tensor  # [N, K] in w's dtype: kept columns identical to w, the rest RTN
    keep: torch.Tensor  # int64 [M] kept input channels (sorted)
    quantized: QuantizedWeight  # integer part (kept columns hold the codes of 0; unused)


def keep_fp_quantize(w: torch.Tensor, keep: torch.Tensor, spec: QuantSpec, name: str = "weight") -> MixedResult:
    """RTN-quantize ``w`` ``[N, K]`` except the input channels ``keep``, which stay exactly as they are."""
    check_weight(w, spec, name)
    keep = keep.to(torch.long).cpu()
    k = w.shape[1]
    if keep.numel() and (keep.min() < 0 or keep.max() >= k or keep.unique().numel() != keep.numel()):
        raise AWQInputError(f"{name}: keep indices must be distinct and in [0, {k}), got {keep.tolist()[:8]}...")
    idx = keep.to(w.device)
    wq = w.detach().float().clone()
    wq[:, idx] = 0.0  # out of the group statistics (0 lies in every asymmetric range)
    scales, zeros = compute_qparams(wq, spec)
    q = quantize(wq, spec, scales, zeros)
    out = dequantize(q, spec, scales, zeros).to(w.dtype)
    out[:, idx] = w.detach()[:, idx]
    return MixedResult(out, keep, QuantizedWeight(q, scales, zeros, spec))
