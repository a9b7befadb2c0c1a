"""W4A16 linear on the CUDA kernels, dispatched by the number of activation rows M.

``w4a16_linear(x, packed, group_size, n, k)`` computes ``x @ W^T`` for ``x`` ``[..., k]`` (fp16/bf16,
CUDA) and ``packed`` from :func:`awq_ext.pack.kernel_layout.pack_kernel` (tensors on the same device,
scales in ``x``'s dtype). With ``packed["g_idx"]`` present the GPTQ-R variants run.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping

import torch

from awq_ext.errors import AWQInputError

# The dispatch table, the only place crossovers live: rows in order, (largest M, path).
#   gemv           - bandwidth-bound GEMV kernel (takes M <= GEMV_MAX_M; half2 math, csrc/gemv.cu)
#   gemm           - tensor-core kernel (online dequantization, split-K for small M)
#   gemm_wgmma     - its Hopper variant (sm_90 GPU, a 9.0a build; AWQ layouts): wgmma with the dequantized
#                    weights as the register operand, for M 33-64 where mma.sync is the limit. Not in the table
#                    until the GPU suite has verified and timed it (python -m awq_ext.bench static predicts it)
#   dequant_cublas - dequantize the whole weight once, then torch.matmul (cuBLAS): never slower than
#                    FP16 by more than the dequantization itself, which is amortized at large M
# These crossovers MUST be measured on the target GPU, never assumed: benchmarks/gpu_suite.py times every
# path at every M and writes the measured table ("dispatch_measured" in its JSON); copy it here.
# Until then they come from the static SASS model (python -m awq_ext.bench static; sm_90, no GPU run): the M16
# GEMM tile's hot loop issues ~0.14 warp-instructions per weight byte at any M <= 16 (the mma does the rows for
# free), 7.5 TB/s of issue headroom over the H200's 4.8 TB/s; the GEMV's ~0.20 at M = 1 (5.1 TB/s) rising with
# each row (its own HFMA2 dot products). Both are predicted memory-bound at M = 1 within 1 %, so the GEMM takes
# M = 1 as well, for its headroom (derive_dispatch's tie rule); the GEMV stays callable (path="gemv") and the GPU
# suite times it. M 17-32 run the M32 tile (~0.16 ins/B, 6.5 TB/s). Above M = 64 the M128 tile is bound by
# mma.sync at half of Hopper's tensor rate (0.97 TB/s of weights) while cuBLAS reaches the full rate through
# wgmma: at M = 128 the GEMM is ahead (0.81x ideal FP16 against 0.46x), at M = 256 dequantize + cuBLAS (0.49x
# against 0.46-0.51x on the two 7B shapes).
DISPATCH_TABLE: tuple[tuple[int, str], ...] = (
    (128, "gemm"),
    (sys.maxsize, "dequant_cublas"),
)
GEMV_MAX_M = 8  # the largest M the GEMV kernel takes (kGemvMaxM in csrc/awq_kernels.h)
PATHS = ("gemv", "gemm", "gemm_wgmma", "dequant_cublas")
_PACKED_KEYS = ("qweight", "scales", "zeros")


def choose_path(m: int, table: tuple[tuple[int, str], ...] = DISPATCH_TABLE) -> str:
    """The path the table picks for ``m`` activation rows."""
    if m < 1:
        raise AWQInputError(f"m must be >= 1, got {m}")
    for max_m, path in table:
        if m <= max_m:
            return path
    raise AWQInputError(f"dispatch table has no row for m={m}; its last row must cover sys.maxsize")


def _ops():  # noqa: ANN202 - torch.ops namespace
    from awq_ext.kernels import load

    load()
    return torch.ops.awq_ext


def _check(x: torch.Tensor, packed: Mapping[str, torch.Tensor], group_size: int, n: int, k: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise AWQInputError(f"w4a16_linear(n={n}, k={k}): x must be a tensor of shape [..., k], got {type(x).__name__}")
    where = f"w4a16_linear(m={x.numel() // max(x.shape[-1], 1)}, n={n}, k={k}, group_size={group_size})"
    if x.shape[-1] != k:
        raise AWQInputError(f"{where}: x has {x.shape[-1]} features in its last dim, the weight expects k={k}")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise AWQInputError(f"{where}: x must be float16 or bfloat16, got {x.dtype}; cast with x.half()")
    if not x.is_cuda:
        raise AWQInputError(f"{where}: x is on {x.device}; the CUDA kernels need x on a GPU (use the torch reference on CPU)")
    missing = [key for key in _PACKED_KEYS if key not in packed]
    if missing:
        raise AWQInputError(f"{where}: packed weights lack {missing}; build them with awq_ext.pack.kernel_layout.pack_kernel")
    for key in (*_PACKED_KEYS, "g_idx"):
        t = packed.get(key)
        if t is not None and t.device != x.device:
            raise AWQInputError(f"{where}: packed[{key!r}] is on {t.device}, x on {x.device}; move the packed weights")
    if packed["scales"].dtype != x.dtype:
        raise AWQInputError(
            f"{where}: packed scales are {packed['scales'].dtype} but x is {x.dtype}; repack with "
            "pack_kernel(..., dtype=x.dtype)"
        )
    if n % 8 != 0:
        raise AWQInputError(f"{where}: n must be a multiple of 8")
    if "g_idx" not in packed and (group_size not in (32, 64, 128) or k % group_size != 0):
        raise AWQInputError(f"{where}: group_size must be 32, 64 or 128 and divide k")


def w4a16_linear(
    x: torch.Tensor,
    packed: Mapping[str, torch.Tensor],
    group_size: int,
    n: int,
    k: int,
    *,
    path: str | None = None,
    split_k: int = 0,
) -> torch.Tensor:
    """``x [..., k] @ W^T -> [..., n]`` in ``x``'s dtype; ``path`` overrides the table (benchmarks, tests)."""
    _check(x, packed, group_size, n, k)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if not x2.is_contiguous() or x2.data_ptr() % 16 != 0:  # the kernels load 16-byte rows
        x2 = x2.clone(memory_format=torch.contiguous_format)
    m = x2.shape[0]
    if m == 0:
        return x.new_empty(*lead, n)
    chosen = path if path is not None else choose_path(m)
    if chosen not in PATHS:
        raise AWQInputError(f"unknown path {chosen!r}; use one of {PATHS}")
    ops = _ops()
    qw, s, z, gi = packed["qweight"], packed["scales"], packed["zeros"], packed.get("g_idx")
    if chosen == "gemv":
        if m > GEMV_MAX_M:
            raise AWQInputError(f"path 'gemv' takes m <= {GEMV_MAX_M}, got m={m}; use path='gemm'")
        y = ops.w4a16_gemv(x2, qw, s, z, gi, n, k, group_size, split_k)
    elif chosen == "gemm":
        y = ops.w4a16_gemm(x2, qw, s, z, gi, n, k, group_size, split_k)
    elif chosen == "gemm_wgmma":
        if gi is not None:
            raise AWQInputError("path 'gemm_wgmma' takes AWQ layouts; GPTQ-R (g_idx) runs on path='gemm'")
        y = ops.w4a16_gemm_wgmma(x2, qw, s, z, None, n, k, group_size, split_k)
    else:
        w = ops.w4_dequantize(qw, s, z, gi, n, k, group_size)
        y = torch.matmul(x2, w.t())
    return y.reshape(*lead, n)


def dequantize(packed: Mapping[str, torch.Tensor], group_size: int, n: int, k: int) -> torch.Tensor:
    """Dense ``[n, k]`` weights (the packed scale dtype) from the packed layout, on the GPU."""
    for key in _PACKED_KEYS:
        if key not in packed:
            raise AWQInputError(f"packed weights lack {key!r}; build them with pack_kernel")
    if not packed["scales"].is_cuda:
        raise AWQInputError("dequantize: packed weights must be on a CUDA device (use unpack_kernel on CPU)")
    return _ops().w4_dequantize(
        packed["qweight"], packed["scales"], packed["zeros"], packed.get("g_idx"), n, k, group_size
    )


__all__ = ["DISPATCH_TABLE", "GEMV_MAX_M", "PATHS", "choose_path", "dequantize", "w4a16_linear"]
