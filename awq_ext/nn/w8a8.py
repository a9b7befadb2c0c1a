"""W8A8Linear: INT8 weights (per output channel) x INT8 activations (per-tensor static or per-token dynamic),
multiplied as integers with int32 accumulation, then rescaled to float.

Buffers: ``qweight`` int8 ``[N, K]`` (row-major, out x in), ``w_scale`` float32 ``[N]``, ``act_scale`` float32
scalar (static mode; ``nan`` placeholder in dynamic mode), ``bias`` float32 ``[N]`` or ``None``.

Forward for ``x`` ``[..., K]``::

    xq, sx = quantize(x)                      # int8 [M, K]; sx scalar (static) or [M, 1] (dynamic)
    acc    = int8_matmul(xq, qweight^T)       # int32 [M, N]  (exact integer product)
    y      = acc * sx * w_scale[None, :] + bias

:func:`int8_matmul` runs ``torch._int_mm`` where it exists:

* CPU: any shape (torch 2.13's CPU kernel takes M, K, N >= 1; checked in the tests).
* CUDA (cuBLASLt IMMA): requires M > 16 and K, N multiples of 8. Rule: pad M up to 17 and K, N up to the
  next multiple of 8 with zero rows/columns, then slice the result back. Zero padding is exact (padded
  K terms add 0; padded rows/columns are dropped). :func:`int_mm_padding` computes the padded shape.
* CPU without int8 dot-product instructions (no AVX512-VNNI / AVX-VNNI / AMX-INT8 / Arm dot product):
  torch's CPU ``_int_mm`` falls back to a scalar loop there (measured 18x slower than an fp32 matmul on an
  AVX2-only EPYC), so :func:`int_mm_backend` picks ``"float32-exact"`` instead.
* ``"float32-exact"`` (also for devices without ``torch._int_mm``): fp32 matmuls over K chunks of 1024,
  each exact (an int8 product is at most 2^14 in magnitude, so every partial sum of 1024 of them is an
  integer below 2^24, which float32 represents exactly), summed in int32. As fast as fp32, not faster.

int32 accumulation is exact for K <= 133,143 (127 * 127 * K < 2^31); larger K is refused.
The ``lm_head`` and everything outside decoder blocks stay float (see ``awq_ext.w8a8``).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from awq_ext.errors import AWQInputError
from awq_ext.quant.w8a8 import (
    ACT_MODES,
    INT8_QMAX,
    quantize_act_per_tensor,
    quantize_act_per_token,
    quantize_weight_int8,
    static_act_scale,
)

MAX_K = (2**31 - 1) // (128 * 128)  # int8 operands may hold -128, so |product| <= 2^14
_CUDA_MIN_M = 17
_CUDA_MULTIPLE = 8


_INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
_EXACT_K_CHUNK = 1024  # 1024 * 128 * 128 = 2^24: the largest exact float32 partial sum


@functools.lru_cache(maxsize=None)
def cpu_has_int8_dot() -> bool:
    """Whether this CPU has int8 dot-product instructions (Linux ``/proc/cpuinfo`` flags; elsewhere assumed)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return True  # not Linux: trust torch's kernel
    return any(f in flags for f in _INT8_DOT_FLAGS)


def int_mm_backend(device: torch.device | str) -> str:
    """Which path :func:`int8_matmul` takes on ``device``: ``"torch._int_mm"`` or ``"float32-exact"``."""
    dev = torch.device(device)
    if hasattr(torch, "_int_mm") and (dev.type == "cuda" or (dev.type == "cpu" and cpu_has_int8_dot())):
        return "torch._int_mm"
    return "float32-exact"


def int_mm_padding(m: int, k: int, n: int, device_type: str) -> tuple[int, int, int]:
    """Padded ``(M, K, N)`` that ``torch._int_mm`` accepts on ``device_type`` (unchanged on CPU)."""
    if device_type != "cuda":
        return m, k, n

    def up(v: int) -> int:
        return -(-v // _CUDA_MULTIPLE) * _CUDA_MULTIPLE

    return max(m, _CUDA_MIN_M), up(k), up(n)


def int8_matmul(a: torch.Tensor, b: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Exact ``a @ b`` for int8 ``a`` ``[M, K]`` and ``b`` ``[K, N]`` as int32 ``[M, N]``.

    ``b`` may be a transposed view of a contiguous ``[N, K]`` weight (the column-major layout cuBLASLt
    wants); ``torch._int_mm`` does not copy it on CPU or when no padding is needed (the float32-exact path
    converts one K chunk at a time). ``backend`` forces a path (``"torch._int_mm"`` or ``"float32-exact"``);
    default: :func:`int_mm_backend` of the device.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise AWQInputError(f"int8_matmul: both operands must be int8, got {a.dtype} and {b.dtype}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise AWQInputError(f"int8_matmul: shapes {tuple(a.shape)} @ {tuple(b.shape)} do not chain")
    if a.device != b.device:
        raise AWQInputError(f"int8_matmul: operands on {a.device} and {b.device}; move them to one device")
    m, k = a.shape
    n = b.shape[1]
    if k > MAX_K:
        raise AWQInputError(f"int8_matmul: K={k} could overflow int32 accumulation (max {MAX_K})")
    if m == 0:
        return torch.zeros(0, n, dtype=torch.int32, device=a.device)
    backend = backend or int_mm_backend(a.device)
    if backend == "float32-exact":
        acc = torch.zeros(m, n, dtype=torch.int32, device=a.device)
        for k0 in range(0, k, _EXACT_K_CHUNK):
            acc += (a[:, k0 : k0 + _EXACT_K_CHUNK].float() @ b[k0 : k0 + _EXACT_K_CHUNK].float()).to(torch.int32)
        return acc
    if backend != "torch._int_mm":
        raise AWQInputError(f"unknown int8 matmul backend {backend!r}; use 'torch._int_mm' or 'float32-exact'")
    return padded_int_mm(a, b, *int_mm_padding(m, k, n, a.device.type))


def padded_int_mm(a: torch.Tensor, b: torch.Tensor, pm: int, pk: int, pn: int) -> torch.Tensor:
    """``torch._int_mm`` on ``a``/``b`` zero-padded to ``[pm, pk] @ [pk, pn]``, sliced back to ``[M, N]``."""
    m, k = a.shape
    n = b.shape[1]
    if (pm, pk, pn) != (m, k, n):
        a = F.pad(a, (0, pk - k, 0, pm - m))
        # Keep b column-major after padding: pad its [N, K] transpose, then view it back as [K, N].
        b = F.pad(b.t(), (0, pk - k, 0, pn - n)).t()
    return torch._int_mm(a, b)[:m, :n]


class W8A8Linear(nn.Module):
    """An ``nn.Linear`` replacement computing with INT8 weights and INT8 activations (see module doc)."""

    def __init__(self, in_features: int, out_features: int, act_mode: str = "dynamic", bias: bool = True,
                 device: torch.device | str | None = None):
        super().__init__()
        if act_mode not in ACT_MODES:
            raise AWQInputError(f"unknown activation quantization {act_mode!r}; choose one of {', '.join(ACT_MODES)}")
        if in_features > MAX_K:
            raise AWQInputError(f"in_features {in_features} exceeds {MAX_K}: int32 accumulation could overflow")
        self.in_features = in_features
        self.out_features = out_features
        self.act_mode = act_mode
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("w_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("act_scale", torch.tensor(float("nan"), device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device))
        else:
            self.bias = None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, act_mode: str = "dynamic",
                    act_absmax: torch.Tensor | float | None = None, bias: bool | None = None) -> "W8A8Linear":
        """Quantize ``linear``'s weight per output channel; ``act_absmax`` (calibrated ``max|X|``) is
        required for ``act_mode="static"``. ``bias=True`` creates a zero bias when the linear has none
        (for bias correction); by default the linear's own bias presence is kept."""
        has_bias = linear.bias is not None if bias is None else (bias or linear.bias is not None)
        mod = cls(linear.in_features, linear.out_features, act_mode, has_bias, device=linear.weight.device)
        q, s = quantize_weight_int8(linear.weight.data)
        mod.qweight.copy_(q)
        mod.w_scale.copy_(s)
        if act_mode == "static":
            if act_absmax is None:
                raise AWQInputError("static activation quantization needs the calibrated max|X| (act_absmax)")
            mod.act_scale.copy_(static_act_scale(act_absmax))
        if linear.bias is not None:
            mod.bias.copy_(linear.bias.data.float())
        return mod

    def dequantized_weight(self) -> torch.Tensor:
        """Float32 ``[N, K]`` weight the INT8 codes stand for."""
        return self.qweight.float() * self.w_scale.unsqueeze(1)

    def quantize_input(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(xq int8 [M, K], scale)`` for a float ``[M, K]`` input; scale is scalar or ``[M, 1]``."""
        if self.act_mode == "static":
            if not torch.isfinite(self.act_scale):
                raise AWQInputError("W8A8Linear in static mode has no calibrated act_scale; build it with "
                                    "from_linear(..., act_absmax=...)")
            return quantize_act_per_tensor(x2, self.act_scale), self.act_scale
        return quantize_act_per_token(x2)

    def fake_quant_input(self, x: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize ``x`` ``[..., K]`` (float32) as the forward does."""
        x2 = x.reshape(-1, self.in_features)
        q, s = self.quantize_input(x2)
        return (q.float() * s).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise AWQInputError(f"W8A8Linear expects last dim {self.in_features}, got input {tuple(x.shape)}")
        if not x.is_floating_point():
            raise AWQInputError(f"W8A8Linear takes float activations, got {x.dtype}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        xq, sx = self.quantize_input(x2)
        acc = int8_matmul(xq, self.qweight.t())
        # In place on the fresh float copy of the accumulator: the rescale is memory-bound.
        y = acc.float().mul_(sx).mul_(self.w_scale)
        if self.bias is not None:
            y.add_(self.bias)
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, act={self.act_mode}, "
                f"bias={self.bias is not None}, matmul={int_mm_backend(self.qweight.device)}")
