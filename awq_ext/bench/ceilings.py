"""Roofline arithmetic and ceilings measured in the same run.

Bytes per weight: ``bits + (scale_bits + zero_bits) / G``; INT4 with an fp16 scale and fp16 zero per group
of 128 is ``4 + 32/128 = 4.25`` bits, so at M=1 (pure weight streaming) W4A16 can be at most
``16 / 4.25 = 3.76x`` faster than FP16 - the "bandwidth limit" line in the plots.

Ceilings are measured, not looked up: device-to-device copy bandwidth (what a weight stream can reach) and
the TFLOP/s of a large FP16 GEMM (what the tensor cores reach through cuBLAS).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from awq_ext.bench.timing import TimerConfig, make_timer
from awq_ext.errors import AWQInputError

FP16_BITS = 16.0


def bits_per_weight(bits: int = 4, group_size: int = 128, scale_bits: int = 16, zero_bits: int = 16) -> float:
    """Storage bits per weight including per-group scale and zero (``group_size=-1``: per-row, ~``bits``)."""
    if bits <= 0:
        raise AWQInputError(f"bits must be > 0, got {bits}")
    if group_size == -1:
        return float(bits)  # one scale per row of thousands of weights: negligible
    if group_size <= 0:
        raise AWQInputError(f"group_size must be > 0 or -1, got {group_size}")
    return bits + (scale_bits + zero_bits) / group_size


def bandwidth_limit_ratio(bits: int = 4, group_size: int = 128) -> float:
    """Best possible W4A16/FP16 speedup when the weights dominate the traffic: ``16 / bits_per_weight``."""
    return FP16_BITS / bits_per_weight(bits, group_size)


def gemm_bytes(m: int, n: int, k: int, weight_bits: float, act_bytes: int = 2) -> float:
    """DRAM bytes of ``y[M,N] = x[M,K] @ W[N,K]^T``: weights once + activations in + outputs out."""
    if min(m, n, k) <= 0:
        raise AWQInputError(f"m, n, k must be > 0, got {(m, n, k)}")
    return n * k * weight_bits / 8.0 + (m * k + m * n) * act_bytes


def gemm_flops(m: int, n: int, k: int) -> float:
    """``2*M*N*K`` (one multiply and one add per MAC)."""
    return 2.0 * m * n * k


def achieved_gbps(nbytes: float, ms: float) -> float:
    """GB/s (1e9 bytes) moved at ``ms`` milliseconds per call."""
    if ms <= 0:
        raise AWQInputError(f"time must be > 0 ms, got {ms}")
    return nbytes / (ms * 1e-3) / 1e9


def achieved_tflops(flops: float, ms: float) -> float:
    """TFLOP/s (1e12) at ``ms`` milliseconds per call."""
    if ms <= 0:
        raise AWQInputError(f"time must be > 0 ms, got {ms}")
    return flops / (ms * 1e-3) / 1e12


def speedup(baseline_ms: float, ms: float) -> float:
    """How many times faster than the baseline (>1: faster): ``baseline_ms / ms``."""
    if ms <= 0 or baseline_ms <= 0:
        raise AWQInputError(f"times must be > 0 ms, got baseline {baseline_ms} and {ms}")
    return baseline_ms / ms


@dataclass(frozen=True)
class Ceilings:
    """Measured in this run on this device."""

    copy_gbps: float
    gemm_tflops: float
    gemm_dtype: str
    gemm_size: int
    copy_bytes: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def measure_copy_gbps(device: torch.device, nbytes: int, config: TimerConfig) -> float:
    """Device copy bandwidth: a copy reads and writes ``nbytes`` each, so 2*nbytes move per call."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device).uniform_()
    dst = torch.empty_like(src)
    t = make_timer(device, config).time("ceiling:copy", dst.copy_, [(src,)])
    return achieved_gbps(2.0 * src.numel() * src.element_size(), t.median_ms)


def measure_gemm_tflops(device: torch.device, dtype: torch.dtype, size: int, config: TimerConfig) -> float:
    """TFLOP/s of a square ``size``-cubed GEMM through ``torch.matmul`` (cuBLAS on CUDA)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    t = make_timer(device, config).time("ceiling:gemm", torch.matmul, [(a, b)])
    return achieved_tflops(gemm_flops(size, size, size), t.median_ms)


def measure_ceilings(device: torch.device, dtype: torch.dtype, config: TimerConfig) -> Ceilings:
    """Both ceilings with sizes that saturate an H100 (1 GiB copy, 8192^3 GEMM) or stay quick on CPU."""
    if device.type == "cuda":
        copy_bytes, gemm_size = 1 << 30, 8192
    else:
        copy_bytes, gemm_size = 64 << 20, 512
    # ceilings are steady-state numbers: a few warm-ups and a modest sample suffice
    cfg = TimerConfig(warmup=max(3, min(config.warmup, 10)), iters=max(5, min(config.iters, 30)),
                      nvtx=config.nvtx)
    if config.profile_once:
        cfg = TimerConfig(nvtx=config.nvtx, profile_once=True)
    return Ceilings(
        copy_gbps=measure_copy_gbps(device, copy_bytes, cfg),
        gemm_tflops=measure_gemm_tflops(device, dtype, gemm_size, cfg),
        gemm_dtype=str(dtype).replace("torch.", ""),
        gemm_size=gemm_size,
        copy_bytes=copy_bytes,
    )
