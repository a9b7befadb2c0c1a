"""Group-wise uniform integer quantization of weight matrices (pure tensor math).

A weight ``w`` has shape ``[out_features, in_features]`` = ``[N, K]``. Groups are contiguous runs of
``group_size`` input channels within one output row, so parameters have shape ``[N, K // G]``;
``group_size = -1`` means one group per output row (per-channel, "no-group").

Asymmetric (default, ``zero_point=True``)::

    scale = (max - min) / (2**bits - 1)          zero = round(-min / scale)  in [0, 2**bits - 1]
    q     = clamp(round(w / scale) + zero, 0, 2**bits - 1)
    w_hat = (q - zero) * scale

Symmetric (``zero_point=False``)::

    scale = max|w| / (2**(bits-1) - 1)           q in [-2**(bits-1), 2**(bits-1) - 1]
    w_hat = q * scale

Rule for ``K % group_size != 0`` (e.g. SmolLM2's hidden size 576 with G=128): refused with
:class:`AWQInputError`. Padding the last group would make the stored tensors disagree with the
interchange layout (``scales`` is ``[K/G, N]``) and with every kernel, so we do not pad; pick a group
size that divides K (64 and 32 divide 576) or ``-1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from awq_ext.errors import AWQInputError

SUPPORTED_BITS = range(2, 9)
SUPPORTED_GROUP_SIZES = (-1, 32, 64, 128)
# A floor on the step size: a group whose values are all equal would otherwise divide by zero.
_MIN_SCALE = 1e-5


@dataclass(frozen=True)
class QuantSpec:
    """How one weight matrix is quantized."""

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise AWQInputError(
                f"unsupported bit width {self.bits}: weight quantization supports 2..8 bits "
                "(use --w-bit between 2 and 8)"
            )
        if self.group_size not in SUPPORTED_GROUP_SIZES:
            raise AWQInputError(
                f"unsupported group size {self.group_size}: use one of 32, 64, 128, or -1 for one "
                "group per output channel"
            )

    @property
    def qmin(self) -> int:
        return 0 if self.zero_point else -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1 if self.zero_point else 2 ** (self.bits - 1) - 1

    def groups(self, in_features: int) -> int:
        return 1 if self.group_size == -1 else in_features // self.group_size

    def effective_group(self, in_features: int) -> int:
        return in_features if self.group_size == -1 else self.group_size


def check_weight(w: torch.Tensor, spec: QuantSpec, name: str = "weight") -> None:
    """Refuse weights that cannot be quantized with ``spec``, saying why and what to do."""
    if w.dim() != 2:
        raise AWQInputError(f"{name}: expected a 2-D [out_features, in_features] weight, got shape {tuple(w.shape)}")
    if not w.is_floating_point():
        raise AWQInputError(f"{name}: expected a floating-point weight, got dtype {w.dtype}")
    k = w.shape[1]
    if spec.group_size != -1 and k % spec.group_size != 0:
        divisors = [g for g in (128, 64, 32) if k % g == 0]
        hint = f"use --group-size {divisors[0]}" if divisors else "use --group-size -1 (per channel)"
        raise AWQInputError(
            f"{name}: in_features {k} is not divisible by group_size {spec.group_size}; "
            f"groups never straddle rows or get padded, so {hint}"
        )
    if not torch.isfinite(w).all():
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise AWQInputError(
            f"{name}: weight holds NaN/Inf (first at index {bad}); the checkpoint is corrupt or was "
            "loaded in a dtype that overflowed - reload it in float32"
        )


def _grouped(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    n, k = w.shape
    g = spec.effective_group(k)
    return w.reshape(n, k // g, g)


def compute_qparams(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-group ``(scales, zeros)`` of shape ``[N, K/G]`` from each group's min/max (the "minmax"
    observer); ``zeros`` is ``None`` when symmetric.

    ``zeros`` holds integers stored in the weight's float dtype, so it can be used in float math.
    """
    wg = _grouped(w.float(), spec)
    if spec.zero_point:
        return _range_qparams(wg.amin(dim=-1), wg.amax(dim=-1), spec)
    return _range_qparams(None, wg.abs().amax(dim=-1), spec)


def _range_qparams(wmin: torch.Tensor | None, wmax: torch.Tensor, spec: QuantSpec
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    # wmin is None for symmetric quantization (wmax is then max|w|).
    if spec.zero_point:
        wmax = wmax.clamp(min=0)
        wmin = wmin.clamp(max=0)
        scales = ((wmax - wmin) / spec.qmax).clamp(min=_MIN_SCALE)
        zeros = torch.round(-wmin / scales).clamp(spec.qmin, spec.qmax)
        return scales, zeros
    return (wmax / spec.qmax).clamp(min=_MIN_SCALE), None


MSE_GRID = 100  # shrink step 1/MSE_GRID of the group's range
MSE_MAX_SHRINK = 0.2  # try ranges down to (1 - MSE_MAX_SHRINK) x min-max, as llm-compressor's MSE observer


def mse_qparams(w: torch.Tensor, spec: QuantSpec, max_shrink: float = MSE_MAX_SHRINK, grid: int = MSE_GRID
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-group ``(scales, zeros)`` minimising each group's squared rounding error ``||w - w_hat||^2``
    over ranges ``p·[min, max]``, ``p = 1, 1 - 1/grid, ...`` down to ``1 - max_shrink`` (the "mse" observer).

    ``p = 1`` is exactly :func:`compute_qparams`, and a group keeps a shrunk range only when its error is
    strictly lower, so no group's weight error ever exceeds min-max's.
    """
    if not 0.0 <= max_shrink < 1.0 or grid < 1:
        raise AWQInputError(f"MSE observer needs 0 <= max_shrink < 1 and grid >= 1, got {max_shrink}, {grid}")
    wg = _grouped(w.float(), spec)
    lo = wg.amin(dim=-1) if spec.zero_point else None
    hi = wg.amax(dim=-1) if spec.zero_point else wg.abs().amax(dim=-1)
    best_s = best_z = best_err = None
    for i in range(int(round(max_shrink * grid)) + 1):
        p = 1.0 - i / grid
        s, z = _range_qparams(None if lo is None else lo * p, hi * p, spec)
        q = torch.round(wg / s.unsqueeze(-1))
        if z is not None:
            q = (q + z.unsqueeze(-1)).clamp(spec.qmin, spec.qmax) - z.unsqueeze(-1)
        else:
            q = q.clamp(spec.qmin, spec.qmax)
        err = (q * s.unsqueeze(-1) - wg).pow(2).sum(dim=-1)
        if best_err is None:
            best_s, best_z, best_err = s, z, err
            continue
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s, best_s)
        if z is not None:
            best_z = torch.where(better, z, best_z)
    return best_s, best_z


OBSERVERS = {"minmax": compute_qparams, "mse": mse_qparams}


def quantize(
    w: torch.Tensor, spec: QuantSpec, scales: torch.Tensor, zeros: torch.Tensor | None
) -> torch.Tensor:
    """Integer codes ``q`` (int32, ``[N, K]``) for ``w`` under the given group parameters."""
    return _codes_(_grouped(w.float(), spec) / scales.unsqueeze(-1), spec, zeros).to(torch.int32).reshape(w.shape)


def _codes_(q: torch.Tensor, spec: QuantSpec, zeros: torch.Tensor | None) -> torch.Tensor:
    # round(w / s) + z, clamped - in place on the quotient ``q`` [N, K/G, G]: one buffer, not one per op,
    # which bounds a block's peak memory when a model streams block by block
    q.round_()
    if zeros is not None:
        q.add_(zeros.unsqueeze(-1))
    return q.clamp_(spec.qmin, spec.qmax)


def dequantize(
    q: torch.Tensor, spec: QuantSpec, scales: torch.Tensor, zeros: torch.Tensor | None
) -> torch.Tensor:
    """Float32 weights ``(q - zero) * scale`` for integer codes ``q`` of shape ``[N, K]``."""
    qg = _grouped(q.float(), spec)
    if zeros is not None:
        qg = qg - zeros.float().unsqueeze(-1)
    return (qg * scales.float().unsqueeze(-1)).reshape(q.shape)


def fake_quantize(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Round-to-nearest quantize then dequantize (the RTN baseline); keeps ``w``'s dtype."""
    scales, zeros = compute_qparams(w, spec)
    return fake_quantize_with(w, spec, scales, zeros).to(w.dtype)


def fake_quantize_with(w: torch.Tensor, spec: QuantSpec, scales: torch.Tensor, zeros: torch.Tensor | None
                       ) -> torch.Tensor:
    """Float32 ``dequantize(quantize(w))`` under the given group parameters, bit for bit, computed in one
    float32 buffer (no integer codes in between: the codes are exact integers in float32)."""
    return _fake_quantize_(_grouped(w.float(), spec) / scales.unsqueeze(-1), spec, scales, zeros).reshape(w.shape)


def _fake_quantize_(q: torch.Tensor, spec: QuantSpec, scales: torch.Tensor, zeros: torch.Tensor | None
                    ) -> torch.Tensor:
    # fake_quantize_with on the quotient w / s ([N, K/G, G]), in place
    q = _codes_(q, spec, zeros)
    if zeros is not None:
        q.sub_(zeros.float().unsqueeze(-1))
    return q.mul_(scales.float().unsqueeze(-1))


def scaled_fake_quant(w: torch.Tensor, scales: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``Q(W·diag(s)) · diag(s)^-1``: the weight a linear effectively uses after its inputs are divided by
    ``s`` (``[K]``) and its scaled weight is quantized; keeps ``w``'s dtype. Computed in one float32
    ``[N, K]`` buffer, bit for bit ``fake_quantize_with(W·s) / s``."""
    buf = w.float() * scales.view(1, -1)
    sc, z = compute_qparams(buf, spec)
    g = _grouped(buf, spec)
    g.div_(sc.unsqueeze(-1))
    _fake_quantize_(g, spec, sc, z)
    return buf.div_(scales.view(1, -1)).to(w.dtype)


def quantize_weight(w: torch.Tensor, spec: QuantSpec, name: str = "weight") -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor | None
]:
    """Validate then quantize: ``(q int32 [N,K], scales [N,K/G], zeros [N,K/G] | None)``."""
    check_weight(w, spec, name)
    scales, zeros = compute_qparams(w, spec)
    return quantize(w, spec, scales, zeros), scales, zeros


@dataclass
class QuantizedWeight:
    """Integer codes plus group parameters of one linear: what packing and checkpoints consume.

    ``q`` integer ``[N, K]`` in ``[spec.qmin, spec.qmax]`` (int32 as quantized, uint8/int8 after
    :meth:`compact`); ``scales`` float ``[N, n_groups]``;
    ``zeros`` integer-valued float ``[N, n_groups]`` or ``None`` (symmetric). ``g_idx`` (int32 ``[K]``,
    GPTQ act-order only) gives each input channel's group; without it, channel k is in group
    ``k // group_size``.
    """

    q: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    spec: QuantSpec
    g_idx: torch.Tensor | None = None

    def compact(self) -> QuantizedWeight:
        """The same weight with its codes in the narrowest integer dtype that holds them (uint8 for
        zero-point codes, int8 for symmetric ones; at most 8 bits): a quarter of int32's memory while
        codes wait to be packed."""
        if self.spec.bits > 8:
            return self
        dtype = torch.uint8 if self.spec.qmin >= 0 else torch.int8
        return QuantizedWeight(self.q.to(dtype), self.scales, self.zeros, self.spec, self.g_idx)

    def group_index(self) -> torch.Tensor:
        k = self.q.shape[1]
        if self.g_idx is not None:
            return self.g_idx.long()
        return torch.arange(k) // self.spec.effective_group(k)

    def dequantize(self) -> torch.Tensor:
        """Float32 ``[N, K]`` weights these codes stand for."""
        if self.g_idx is None:
            return dequantize(self.q, self.spec, self.scales, self.zeros)
        gi = self.group_index()
        q = self.q.float()
        if self.zeros is not None:
            q = q - self.zeros.float()[:, gi]
        return q * self.scales.float()[:, gi]
