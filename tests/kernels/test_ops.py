"""awq_ext.kernels.ops: the dispatch table and input validation (CPU), and the kernels against an fp32
reference on small shapes (CUDA only; skipped without a GPU - benchmarks/gpu_suite.py runs the full sweep)."""
from __future__ import annotations

import sys

import pytest
import torch

from awq_ext.errors import AWQInputError
from awq_ext.kernels import is_available
from awq_ext.kernels.ops import DISPATCH_TABLE, GEMV_MAX_M, PATHS, choose_path, w4a16_linear
from awq_ext.pack.kernel_layout import dequantize_kernel_reference, pack_kernel

needs_gpu = pytest.mark.skipif(not is_available(), reason="needs a CUDA GPU (sm_80+) and a buildable extension")


def test_table_is_ordered_and_total():
    limits = [m for m, _ in DISPATCH_TABLE]
    assert limits == sorted(limits) and limits[-1] == sys.maxsize
    assert all(p in PATHS for _, p in DISPATCH_TABLE)
    assert choose_path(1) == "gemm" and choose_path(32) == "gemm" and choose_path(128) == "gemm"
    assert choose_path(129) == "dequant_cublas"
    assert choose_path(10**6) == "dequant_cublas"
    with pytest.raises(AWQInputError):
        choose_path(0)


def _packed(n=64, k=128, g=64, dtype=torch.float16, gidx=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    s = torch.rand(n, k // g, generator=gen) * 0.01 + 1e-3
    z = torch.randint(0, 16, (n, k // g), generator=gen).float()
    gi = (torch.randperm(k, generator=gen) // g).to(torch.int32) if gidx else None
    return pack_kernel(q, s, z, g, g_idx=gi, dtype=dtype)


def test_cpu_input_is_refused_with_a_clear_message():
    packed = _packed()
    x = torch.randn(2, 128, dtype=torch.float16)
    with pytest.raises(AWQInputError, match="GPU"):
        w4a16_linear(x, packed, 64, 64, 128)
    with pytest.raises(AWQInputError, match="k=128"):
        w4a16_linear(torch.randn(2, 100, dtype=torch.float16), packed, 64, 64, 128)
    with pytest.raises(AWQInputError, match="float16 or bfloat16"):
        w4a16_linear(torch.randn(2, 128), packed, 64, 64, 128)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gidx", [False, True])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m", [1, 3, 8, 17])
def test_matches_fp32_reference(dtype, gidx, path, m):
    if path == "gemv" and m > GEMV_MAX_M:
        pytest.skip(f"gemv takes m <= {GEMV_MAX_M}")
    n, k, g = 200, 384, 64
    packed = _packed(n, k, g, dtype, gidx, seed=m)
    w = dequantize_kernel_reference(packed).to(dtype).double()  # the kernels round weights to dtype once
    dev = {key: v.cuda() for key, v in packed.items()}
    x = torch.randn(m, k, dtype=dtype, device="cuda")
    y = w4a16_linear(x, dev, g, n, k, path=path)
    ref = x.double().cpu() @ w.t()
    err = (y.double().cpu() - ref).norm() / ref.norm()
    assert err < (2e-3 if dtype == torch.float16 else 1e-2), f"relative error {err:.2e}"


@needs_gpu
def test_kernel_errors_name_m_n_k():
    packed = {key: v.cuda() for key, v in _packed().items()}
    x = torch.randn(5, 128, dtype=torch.bfloat16, device="cuda")
    with pytest.raises(AWQInputError, match="dtype"):
        w4a16_linear(x, packed, 64, 64, 128)
    with pytest.raises(RuntimeError, match=r"m=5, n=64, k=128"):
        torch.ops.awq_ext.w4a16_gemm(x.half(), packed["qweight"], packed["scales"], packed["scales"][:1],
                                     None, 64, 128, 64)
