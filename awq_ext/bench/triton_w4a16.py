"""A Triton W4A16 GEMM: the "compiler" baseline that the hand-written CUDA kernel is compared against.

It reads the interchange checkpoint layout (DESIGN §2) directly, with no repacking:

* ``qweight`` int32 ``[K, N/8]``: word ``qweight[k, j]`` holds output columns ``8j..8j+7`` of input row ``k``;
  the value in bits ``4*i..4*i+3`` (slot ``i``) is column ``8j + ORDER[i]`` with ``ORDER = 0,2,4,6,1,3,5,7``,
  so column offset ``c`` lives in slot ``(c % 2) * 4 + c // 2``.
* ``qzeros`` int32 ``[K/G, N/8]``: the 4-bit zero points packed the same way.
* ``scales`` fp16 ``[K/G, N]``.

``y[m, n] = sum_k x[m, k] * (q[k, n] - z[k // G, n]) * s[k // G, n]``, accumulated in fp32, written in
``x.dtype`` (fp16 or bf16). Dequantization is per tile in registers: each K-tile lies inside one group
(``BLOCK_K`` divides ``G``), so a tile needs one row of scales and zeros.

Triton is imported lazily (it is an optional dependency). On a CPU tensor the kernel runs only under
Triton's interpreter (``TRITON_INTERPRET=1`` set before this module first builds the kernel), which is how
the tests check it without a GPU.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import torch

from awq_ext.errors import AWQInputError, KernelUnavailableError

SUPPORTED_GROUP_SIZES = (32, 64, 128)
_DTYPES = (torch.float16, torch.bfloat16)


def triton_available() -> tuple[bool, str]:
    """``(True, version)`` when triton imports, else ``(False, why)``."""
    try:
        import triton
    except ImportError as exc:
        return False, f"triton is not installed ({exc}); pip install triton"
    return True, str(triton.__version__)


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _m_bucket(m: int) -> int:
    """Autotune key for M: re-tune per size class, not per exact M (12 Ms x many shapes would be slow)."""
    for b in (16, 64, 256):
        if m <= b:
            return b
    return 4096


@functools.lru_cache(maxsize=2)
def _kernels(interpret: bool) -> dict[str, Any]:
    """Build the jitted kernel (and its autotuned wrapper for GPUs). Cached per interpreter mode."""
    import triton
    import triton.language as tl

    def w4a16_kernel(
        x_ptr, qw_ptr, qz_ptr, sc_ptr, y_ptr,
        M, N, K, M_BUCKET,
        stride_xm, stride_xk, stride_ym, stride_yn,
        GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        DOT_FP32: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        mask_m = offs_m < M
        mask_n = offs_n < N
        n_words = N // 8
        word = offs_n // 8
        col = offs_n % 8
        shift = ((col % 2) * 4 + col // 2) * 4  # bit offset of column c under the 0,2,4,6,1,3,5,7 order
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + offs_k
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + kk[None, :] * stride_xk,
                        mask=mask_m[:, None], other=0.0)
            packed = tl.load(qw_ptr + kk[:, None] * n_words + word[None, :], mask=mask_n[None, :], other=0)
            q = (packed >> shift[None, :]) & 0xF
            g = k0 // GROUP
            zp = tl.load(qz_ptr + g * n_words + word, mask=mask_n, other=0)
            z = (zp >> shift) & 0xF
            s = tl.load(sc_ptr + g * N + offs_n, mask=mask_n, other=0.0)
            # (q - z) * s is exact in fp32 (|q - z| <= 15, s fp16), so one rounding to x.dtype. Going through
            # fp32 also sidesteps the interpreter's broken int -> bf16 cast (triton 3.x).
            w = ((q - z[None, :]).to(tl.float32) * s[None, :].to(tl.float32)).to(x.dtype)
            if DOT_FP32:
                acc += tl.dot(x.to(tl.float32), w.to(tl.float32))
            else:
                acc += tl.dot(x, w)
        y = acc.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, y,
                 mask=mask_m[:, None] & mask_n[None, :])

    jitted = triton.jit(w4a16_kernel)
    out: dict[str, Any] = {"jit": jitted}
    if not interpret:
        # Tile configs the compiler baseline may pick from: small-M GEMV-like tiles up to large square tiles.
        configs = [
            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
            for bm, bn, w, st in [
                (16, 64, 4, 4), (16, 128, 4, 4), (16, 256, 8, 3), (32, 128, 4, 4),
                (64, 64, 4, 4), (64, 128, 4, 3), (128, 128, 8, 3), (128, 256, 8, 3),
            ]
        ]
        out["tuned"] = triton.autotune(configs=configs, key=["M_BUCKET", "N", "K", "GROUP"])(jitted)
    return out


def _check_inputs(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                  group_size: int) -> tuple[int, int, int]:
    if x.dim() != 2:
        raise AWQInputError(f"x must be 2-D [M, K], got shape {tuple(x.shape)}; flatten leading dims first")
    if x.dtype not in _DTYPES:
        raise AWQInputError(f"x must be float16 or bfloat16, got {x.dtype}")
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise AWQInputError(f"group_size {group_size} unsupported by the Triton baseline; use 32, 64 or 128")
    m, k = x.shape
    if qweight.dtype != torch.int32 or qweight.dim() != 2 or qweight.shape[0] != k:
        raise AWQInputError(f"qweight must be int32 [K={k}, N/8], got {qweight.dtype} {tuple(qweight.shape)}")
    n = qweight.shape[1] * 8
    if k % group_size != 0:
        raise AWQInputError(f"K={k} is not a multiple of group_size {group_size}")
    ng = k // group_size
    if qzeros.dtype != torch.int32 or tuple(qzeros.shape) != (ng, n // 8):
        raise AWQInputError(f"qzeros must be int32 [{ng}, {n // 8}], got {qzeros.dtype} {tuple(qzeros.shape)}")
    if tuple(scales.shape) != (ng, n) or not scales.is_floating_point():
        raise AWQInputError(f"scales must be float [{ng}, {n}], got {scales.dtype} {tuple(scales.shape)}")
    devs = {t.device for t in (x, qweight, qzeros, scales)}
    if len(devs) != 1:
        raise AWQInputError(f"all tensors must be on one device, got {sorted(map(str, devs))}")
    return m, n, k


def w4a16_matmul(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                 group_size: int, block: tuple[int, int] | None = None) -> torch.Tensor:
    """``x [M, K] @ dequant(W)^T -> [M, N]`` from interchange tensors (see module docstring).

    ``block=(BLOCK_M, BLOCK_N)`` fixes the tile (always the case under the interpreter, default (16, 32));
    on a GPU without it the autotuner picks among the configs above.
    """
    ok, why = triton_available()
    if not ok:
        raise KernelUnavailableError(why)
    interpret = interpreter_enabled()
    if not x.is_cuda and not interpret:
        raise KernelUnavailableError(
            "the Triton baseline needs a CUDA tensor; on CPU run it under the interpreter (TRITON_INTERPRET=1)"
        )
    m, n, k = _check_inputs(x, qweight, qzeros, scales, group_size)
    x, qweight, qzeros, scales = (t.contiguous() for t in (x, qweight, qzeros, scales))
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_k = min(group_size, 64)  # divides every supported G, so a K-tile never straddles two groups
    # The interpreter (numpy, no bf16) computes a bf16 tl.dot wrongly; there, do the same products in fp32
    # on the bf16-rounded operands. On a GPU the dot is always the native fp16/bf16 tensor-core one.
    dot_fp32 = interpret and x.dtype == torch.bfloat16
    kern = _kernels(interpret)
    args = (x, qweight, qzeros, scales, y, m, n, k, _m_bucket(m),
            x.stride(0), x.stride(1), y.stride(0), y.stride(1))
    if block is not None or interpret:
        bm, bn = block or (16, 32)
        grid = (triton_cdiv(m, bm), triton_cdiv(n, bn))
        kern["jit"][grid](*args, GROUP=group_size, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=block_k,
                          DOT_FP32=dot_fp32)
    else:
        def grid(meta: dict[str, int]) -> tuple[int, int]:
            return triton_cdiv(m, meta["BLOCK_M"]), triton_cdiv(n, meta["BLOCK_N"])
        kern["tuned"][grid](*args, GROUP=group_size, BLOCK_K=block_k, DOT_FP32=False)
    return y


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
