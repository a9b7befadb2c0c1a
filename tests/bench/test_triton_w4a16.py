"""The Triton baseline under TRITON_INTERPRET=1 (CPU), against dequantize-then-matmul in fp32.

The interpreter must be switched on before triton builds the kernel, so the check runs in a fresh
subprocess. Sizes are small: the interpreter executes every program instance in numpy.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")

from awq_ext.bench.triton_w4a16 import interpreter_enabled, w4a16_matmul  # noqa: E402
from awq_ext.errors import AWQInputError, KernelUnavailableError  # noqa: E402

CHECK = textwrap.dedent("""
    import torch
    from awq_ext.bench.triton_w4a16 import w4a16_matmul
    from awq_ext.pack.interchange import pack_interchange
    from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, quantize_weight

    torch.manual_seed(0)
    # (M, N, K, G, dtype): odd M, N not a multiple of the 32-wide tile, every G, both dtypes
    cases = [(1, 64, 128, 128, torch.float16), (3, 72, 128, 32, torch.float16), (17, 40, 256, 64, torch.bfloat16),
             (5, 96, 256, 128, torch.bfloat16), (16, 32, 64, 32, torch.float16)]
    for m, n, k, g, dtype in cases:
        spec = QuantSpec(bits=4, group_size=g)
        q, s, z = quantize_weight(torch.randn(n, k) * 0.02, spec)
        qw = QuantizedWeight(q, s.half().float(), z, spec)
        t = pack_interchange(qw)
        x = torch.randn(m, k).to(dtype)
        y = w4a16_matmul(x, t.qweight, t.qzeros, t.scales, g)
        assert y.shape == (m, n) and y.dtype == dtype, (y.shape, y.dtype)
        # the kernel multiplies in x.dtype: compare with the weights rounded the same way
        ref = x.float() @ qw.dequantize().to(dtype).float().t()
        err = float((y.float() - ref).abs().max() / ref.abs().max())
        tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
        assert err < tol, (m, n, k, g, dtype, err)
        # a wrong nibble order would give a large error: swap two columns of the packing and check it is caught
        bad = qw.dequantize()[[1, 0] + list(range(2, n))].to(dtype).float()
        assert float((y.float() - x.float() @ bad.t()).abs().max() / ref.abs().max()) > tol
        print("ok", m, n, k, g, dtype, f"{err:.1e}")
""")


def test_triton_kernel_correct_under_interpreter():
    pytest.importorskip("awq_ext.pack.interchange")
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("ok ") == 5


@pytest.mark.skipif(interpreter_enabled() or torch.cuda.is_available(), reason="checks the CPU refusal")
def test_cpu_without_interpreter_refuses():
    x = torch.randn(2, 128, dtype=torch.float16)
    with pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET"):
        w4a16_matmul(x, torch.zeros(128, 8, dtype=torch.int32), torch.zeros(1, 8, dtype=torch.int32),
                     torch.ones(1, 64, dtype=torch.float16), 128)


def test_input_validation(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # validation happens before any kernel is built
    qw, qz, sc = torch.zeros(128, 8, dtype=torch.int32), torch.zeros(1, 8, dtype=torch.int32), torch.ones(1, 64)
    x = torch.randn(2, 128, dtype=torch.float16)
    with pytest.raises(AWQInputError, match="float16 or bfloat16"):
        w4a16_matmul(x.float(), qw, qz, sc, 128)
    with pytest.raises(AWQInputError, match="qweight"):
        w4a16_matmul(torch.randn(2, 64, dtype=torch.float16), qw, qz, sc, 128)
    with pytest.raises(AWQInputError, match="group_size"):
        w4a16_matmul(x, qw, qz, sc, 96)
    with pytest.raises(AWQInputError, match="qzeros"):
        w4a16_matmul(x, qw, torch.zeros(2, 8, dtype=torch.int32), sc, 128)
    with pytest.raises(AWQInputError, match="2-D"):
        w4a16_matmul(x[None], qw, qz, sc, 128)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_kernel_on_gpu(dtype):
    from awq_ext.pack.interchange import pack_interchange
    from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, quantize_weight

    spec = QuantSpec(bits=4, group_size=128)
    q, s, z = quantize_weight(torch.randn(1024, 512, device="cuda") * 0.02, spec)
    qw = QuantizedWeight(q, s.half().float(), z, spec)
    t = pack_interchange(qw)
    for m in (1, 17, 256):
        x = torch.randn(m, 512, device="cuda").to(dtype)
        y = w4a16_matmul(x, t.qweight, t.qzeros, t.scales, 128)
        ref = x.float() @ qw.dequantize().to(dtype).float().t()
        assert float((y.float() - ref).abs().max() / ref.abs().max()) < 2e-2
