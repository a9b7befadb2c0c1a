"""The JIT build users get (awq_ext.kernels.load -> torch.utils.cpp_extension.load + ninja) compiles, links
and imports, with or without a GPU; the ops are registered with their schemas and Meta kernels.

Needs a CUDA build of torch (scripts/ci_kernels.sh makes one in .venv-cuda); skips on CPU-only torch.
The first build takes a minute or two on 2 cores; later runs reuse the cached build.
"""
from __future__ import annotations

import pytest
import torch

from awq_ext.errors import KernelUnavailableError

pytestmark = pytest.mark.skipif(
    torch.version.cuda is None, reason="CPU-only torch (torch.version.cuda is None): the JIT build needs a CUDA torch"
)


@pytest.fixture(scope="module")
def ext():
    from awq_ext import kernels

    return kernels.load(require_gpu=False)


def test_extension_builds_and_imports(ext):
    from awq_ext import kernels

    assert ext.__name__ in (kernels.EXTENSION_NAME, "awq_ext._C")
    assert kernels.source_hash() in ext.__file__ or ext.__name__ == "awq_ext._C"
    for op in ("w4a16_gemm", "w4a16_gemm_wgmma", "w4a16_gemv", "w4_dequantize"):
        assert hasattr(torch.ops.awq_ext, op), f"torch.ops.awq_ext.{op} not registered"
    assert "Tensor? g_idx" in str(torch.ops.awq_ext.w4a16_gemm.default._schema)


def test_meta_kernels_give_shapes(ext):
    m, n, k = 3, 48, 256
    meta = dict(device="meta")
    x = torch.empty(m, k, dtype=torch.bfloat16, **meta)
    qw = torch.empty(k // 16, n // 16, 32, dtype=torch.int32, **meta)
    s = torch.empty(2, n, dtype=torch.bfloat16, **meta)
    for op in (torch.ops.awq_ext.w4a16_gemm, torch.ops.awq_ext.w4a16_gemm_wgmma, torch.ops.awq_ext.w4a16_gemv):
        y = op(x, qw, s, s, None, n, k, 128)
        assert y.shape == (m, n) and y.dtype == torch.bfloat16 and y.device.type == "meta"
    w = torch.ops.awq_ext.w4_dequantize(qw, s, s, None, n, k, 128)
    assert w.shape == (n, k)


def test_cpu_tensors_are_refused(ext):
    x = torch.zeros(1, 64, dtype=torch.float16)
    with pytest.raises(NotImplementedError):
        torch.ops.awq_ext.w4a16_gemm(x, torch.zeros(4, 1, 32, dtype=torch.int32), x, x, None, 16, 64, 64)


def test_load_without_gpu_is_refused_when_gpu_required():
    from awq_ext import kernels

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert not kernels.is_available()
    assert "no CUDA GPU" in (kernels.why_unavailable(require_gpu=True) or "")
    kernels._module = None  # force the check path (load() caches the module)
    try:
        with pytest.raises(KernelUnavailableError, match="no CUDA GPU"):
            kernels.load(require_gpu=True)
    finally:
        kernels._module = None
