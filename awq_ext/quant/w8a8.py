"""W8A8 math (pure tensors, no model names): INT8 weight/activation quantizers, SmoothQuant and AWEQ
equalization factors, and bias correction.

Conventions: a linear computes ``y = x W^T + b`` with ``W`` ``[N, K]`` (out x in) and ``x`` ``[..., K]``.
All INT8 quantizers here are **symmetric with codes in [-127, 127]** (``-128`` unused, so negation is
exact and the grid is centred on zero, as SmoothQuant and most INT8 GEMM pipelines do).

* Weights: per output channel. ``w_scale[i] = max_k |W[i, k]| / 127``, ``q = clamp(round(W / w_scale), ±127)``.
* Activations, per-tensor **static**: one scale calibrated offline, ``act_scale = max|X_calib| / 127``;
  values beyond the calibrated range are clamped at run time.
* Activations, per-token **dynamic**: ``scale[t] = max_k |x[t, k]| / 127`` computed at run time per row.

Per-input-channel equalization (both fold exactly into the previous op, see
:func:`awq_ext.calibrate.fold.fold_scales`: the consumer sees ``x / s`` and holds ``W · diag(s)``):

* SmoothQuant: ``s_j = max|X_j|^α / max|W_j|^(1-α)``.
* AWEQ: ``s_j = sqrt(max|X_j| / max|W_j|)`` - see :func:`aweq_factors` for the derivation.

Bias correction (:func:`expected_output_shift`): the mean output error of the quantized layer on the
calibration data, ``E[Ŵ Q(x) - W x] = ΔW·E[x] + Ŵ·(E[Q(x)] - E[x])``, is subtracted from the bias.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

from awq_ext.errors import AWQInputError

INT8_QMAX = 127
ACT_MODES: tuple[str, ...] = ("static", "dynamic")
ActMode = Literal["static", "dynamic"]
# Floors: an all-zero row/token/channel would otherwise divide by zero; values this small carry no signal.
_MIN_SCALE = 1e-8
_MIN_RANGE = 1e-5


def _check_float(t: torch.Tensor, name: str) -> None:
    if not t.is_floating_point():
        raise AWQInputError(f"{name}: expected a floating-point tensor, got {t.dtype}")


# ----------------------------------------------------------------------------------------- weights
def quantize_weight_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric INT8: ``(q int8 [N, K], scale float32 [N])`` with ``w ≈ q * scale[:, None]``."""
    if w.dim() != 2:
        raise AWQInputError(f"weight: expected [out_features, in_features], got shape {tuple(w.shape)}")
    _check_float(w, "weight")
    if not torch.isfinite(w).all():
        raise AWQInputError("weight holds NaN/Inf; reload the model in float32")
    w32 = w.float()
    scale = (w32.abs().amax(dim=1) / INT8_QMAX).clamp(min=_MIN_SCALE)
    q = torch.round(w32 / scale.unsqueeze(1)).clamp(-INT8_QMAX, INT8_QMAX).to(torch.int8)
    return q, scale


def dequantize_weight_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Float32 ``[N, K]`` weights for codes ``q`` ``[N, K]`` and per-row ``scale`` ``[N]``."""
    return q.float() * scale.float().unsqueeze(1)


def fake_quantize_weight_int8(w: torch.Tensor) -> torch.Tensor:
    q, s = quantize_weight_int8(w)
    return dequantize_weight_int8(q, s).to(w.dtype)


# ------------------------------------------------------------------------------------- activations
def static_act_scale(absmax: torch.Tensor | float) -> torch.Tensor:
    """Per-tensor scale (float32 scalar tensor) from the calibrated ``max|X|``."""
    a = torch.as_tensor(absmax, dtype=torch.float32)
    if a.numel() != 1 or not torch.isfinite(a).all() or float(a) < 0:
        raise AWQInputError(f"static activation range must be one finite non-negative number, got {a}")
    return (a.reshape(()) / INT8_QMAX).clamp(min=_MIN_SCALE)


def quantize_act_per_tensor(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """INT8 codes of ``x`` (any shape) with one scale; out-of-range values clamp to ±127."""
    _check_float(x, "activation")
    return torch.round(x.float() / scale.float()).clamp_(-INT8_QMAX, INT8_QMAX).to(torch.int8)


def quantize_act_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q int8 [..., K], scale float32 [..., 1])``: one scale per row (token) over its last dim."""
    _check_float(x, "activation")
    x32 = x.float()
    scale = (x32.abs().amax(dim=-1, keepdim=True) / INT8_QMAX).clamp(min=_MIN_SCALE)
    return torch.round(x32 / scale).clamp_(-INT8_QMAX, INT8_QMAX).to(torch.int8), scale


def fake_quantize_act(x: torch.Tensor, mode: str, static_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize activations (float32) as the INT8 path sees them."""
    if mode == "static":
        if static_scale is None:
            raise AWQInputError("static activation quantization needs a calibrated scale")
        return quantize_act_per_tensor(x, static_scale).float() * static_scale.float()
    if mode == "dynamic":
        q, s = quantize_act_per_token(x)
        return q.float() * s
    raise AWQInputError(f"unknown activation quantization {mode!r}; choose one of {', '.join(ACT_MODES)}")


# ---------------------------------------------------------------------------------- equalization
def channel_absmax(x: torch.Tensor) -> torch.Tensor:
    """``max|X_j|`` over all tokens of ``x`` ``[..., K]`` (float32 ``[K]``)."""
    return x.detach().reshape(-1, x.shape[-1]).abs().amax(dim=0).float()


def weight_channel_absmax(weights: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``max|W_j|`` per input channel over the rows of every consumer (float32 ``[K]``).

    Linears that read the same tensor (q/k/v) share one factor, so their ranges are taken jointly.
    """
    ks = {w.shape[1] for w in weights}
    if len(ks) != 1:
        raise AWQInputError(f"consumers of one tensor must share in_features, got {sorted(ks)}")
    return torch.cat([w.detach().float().abs() for w in weights], dim=0).amax(dim=0)


def _check_ranges(x_max: torch.Tensor, w_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x_max.shape != w_max.shape or x_max.dim() != 1:
        raise AWQInputError(f"activation and weight ranges must both be [K], got {tuple(x_max.shape)} and "
                            f"{tuple(w_max.shape)}")
    if not (torch.isfinite(x_max).all() and torch.isfinite(w_max).all()):
        raise AWQInputError("channel ranges hold NaN/Inf; check the calibration activations and weights")
    return x_max.float().clamp(min=_MIN_RANGE), w_max.float().clamp(min=_MIN_RANGE)


def smoothquant_factors(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant: ``s_j = max|X_j|^α / max|W_j|^(1-α)`` (float32 ``[K]``), α in [0, 1].

    α = 0 leaves activations alone (only divides by weight ranges), α = 1 moves all of the activation's
    range into the weights. Ranges below 1e-5 are floored so dead channels get finite factors.
    """
    if not 0.0 <= alpha <= 1.0:
        raise AWQInputError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    xm, wm = _check_ranges(x_max, w_max)
    return xm.pow(alpha) / wm.pow(1.0 - alpha)


def aweq_factors(x_max: torch.Tensor, w_max: torch.Tensor) -> torch.Tensor:
    """AWEQ activation-weight equalization: ``s_j = sqrt(max|X_j| / max|W_j|)`` (float32 ``[K]``).

    Why this formula. After folding, input channel j has activation range ``r_X_j / s_j`` and weight range
    ``r_W_j · s_j``. A channel is hard to quantize on a side when its range is small next to that side's
    full range (its values use few of the grid's levels). Following the cross-layer equalization
    argument (Nagel et al., DFQ), maximise the joint precision ``Σ_j (r_X_j / s_j)/R_X · (r_W_j s_j)/R_W``
    where ``R`` is the largest channel range on each side: the optimum makes the two ranges of every
    channel equal, ``r_X_j / s_j = r_W_j · s_j``, i.e. ``s_j = sqrt(r_X_j / r_W_j)``, and both sides end
    with the same range ``sqrt(r_X_j · r_W_j)`` - equally hard to quantize, no hyper-parameter.

    Honest note: numerically this is SmoothQuant's factor at α = 0.5. AWEQ's differences in this
    package are that the balance point is fixed by the derivation (no α search) and that it is paired
    with bias correction (:func:`expected_output_shift`). A global factor ``c·s`` gives identical
    results under per-tensor/per-token activation and per-channel weight quantization, so no
    normalisation is applied.
    """
    xm, wm = _check_ranges(x_max, w_max)
    return (xm / wm).sqrt()


# ------------------------------------------------------------------------------- bias correction
@torch.no_grad()
def activation_means(
    x: torch.Tensor, act_quant: Callable[[torch.Tensor], torch.Tensor] | None, chunk_tokens: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E[x], E[Q(x)])`` per input channel (float32 ``[K]``, float64 accumulation) over all tokens.

    ``act_quant`` maps a float ``[T, K]`` chunk to its quantize-dequantized values; ``None`` means the
    activations stay float (weight-only quantization), so ``E[Q(x)] = E[x]``. Tokens are processed in
    chunks so the quantized copy never exists for all tokens at once.
    """
    flat = x.detach().reshape(-1, x.shape[-1])
    if flat.shape[0] == 0:
        raise AWQInputError("bias correction needs at least one calibration token")
    sx = torch.zeros(flat.shape[1], dtype=torch.float64, device=flat.device)
    sq = torch.zeros_like(sx)
    for i in range(0, flat.shape[0], chunk_tokens):
        c = flat[i : i + chunk_tokens].float()
        sx += c.sum(dim=0, dtype=torch.float64)
        if act_quant is not None:
            sq += act_quant(c).sum(dim=0, dtype=torch.float64)
    n = flat.shape[0]
    mx = (sx / n).float()
    return mx, (mx.clone() if act_quant is None else (sq / n).float())


def expected_output_shift(
    w: torch.Tensor, w_hat: torch.Tensor, x_mean: torch.Tensor, xq_mean: torch.Tensor
) -> torch.Tensor:
    """Mean output error ``E[Ŵ Q(x) - W x] = ΔW·E[x] + Ŵ·(E[Q(x)] - E[x])`` (float32 ``[N]``).

    ``w`` the float weight and ``w_hat`` its dequantized INT8 (or low-bit) version, both ``[N, K]``;
    ``x_mean`` = ``E[x]`` and ``xq_mean`` = ``E[Q(x)]`` (``[K]``) from :func:`activation_means`. The first
    term is the weight-quantization shift, the second the activation-quantization bias seen through the
    quantized weight. Subtracting the result from the layer's bias makes the layer's mean output on the
    calibration data exactly the float layer's (by linearity); on new data from the same distribution it
    removes the systematic part of the error.
    """
    if w.shape != w_hat.shape or w.dim() != 2:
        raise AWQInputError(f"bias correction: weights must be matching [N, K], got {tuple(w.shape)} and "
                            f"{tuple(w_hat.shape)}")
    if x_mean.shape != (w.shape[1],) or xq_mean.shape != (w.shape[1],):
        raise AWQInputError(f"bias correction: means must be [K={w.shape[1]}], got {tuple(x_mean.shape)} and "
                            f"{tuple(xq_mean.shape)}")
    w64, wh64 = w.double(), w_hat.double()
    return ((wh64 - w64) @ x_mean.double() + wh64 @ (xq_mean.double() - x_mean.double())).float()
