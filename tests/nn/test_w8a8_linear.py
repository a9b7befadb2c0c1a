"""W8A8Linear: the real INT8 matmul (torch._int_mm) equals the dequantized float reference."""
import pytest
import torch
from torch import nn

import awq_ext.nn.w8a8 as w8a8_nn
from awq_ext.errors import AWQInputError
from awq_ext.nn.w8a8 import MAX_K, W8A8Linear, int8_matmul, int_mm_backend, int_mm_padding, padded_int_mm

HAS_INT_MM = hasattr(torch, "_int_mm")
CUDA = torch.cuda.is_available()


def _rand_int8(*shape, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8).to(device)


def _reference(a, b):
    return (a.long() @ b.long()).to(torch.int32)


@pytest.mark.parametrize("m,k,n", [(1, 7, 9), (3, 576, 64), (17, 64, 24), (33, 1536, 40)])
@pytest.mark.parametrize("backend", ["torch._int_mm", "float32-exact"])
def test_int8_matmul_exact_on_cpu(m, k, n, backend):
    if backend == "torch._int_mm" and not HAS_INT_MM:
        pytest.skip("this torch has no torch._int_mm")
    a = _rand_int8(m, k, seed=1)
    w = _rand_int8(n, k, seed=2)  # weights are stored [N, K]; the matmul takes the transposed view
    out = int8_matmul(a, w.t(), backend=backend)
    assert out.dtype == torch.int32 and out.shape == (m, n)
    assert torch.equal(out, _reference(a, w.t()))


@pytest.mark.parametrize("k", [1024, 1025, 4096])
def test_float32_exact_backend_worst_case(k):
    # -128 * -128 on every term: each 1024-term float32 partial sum reaches exactly 2^24 and must not round.
    a = torch.full((2, k), -128, dtype=torch.int8)
    b = torch.full((k, 3), -128, dtype=torch.int8)
    assert int(int8_matmul(a, b, backend="float32-exact")[1, 2]) == 128 * 128 * k
    a, b = _rand_int8(5, k, seed=3), _rand_int8(k, 7, seed=4)
    assert torch.equal(int8_matmul(a, b, backend="float32-exact"), _reference(a, b))


def test_float32_exact_backend_odd_sum_above_2_24():
    # 1025 * 128^2 + 1 = 16,793,601: odd and above 2^24, so one unchunked float32 sum would round it.
    a = torch.tensor([[-128] * 1025 + [1]], dtype=torch.int8)
    b = a.t().contiguous()
    assert int(int8_matmul(a, b, backend="float32-exact")[0, 0]) == 1025 * 128 * 128 + 1


def test_int8_matmul_worst_case_accumulation_is_exact():
    k = 4096
    a = torch.full((2, k), -127, dtype=torch.int8)
    b = torch.full((k, 3), -127, dtype=torch.int8)
    assert int(int8_matmul(a, b)[0, 0]) == 127 * 127 * k


def test_cuda_padding_rule():
    assert int_mm_padding(1, 7, 9, "cpu") == (1, 7, 9)
    assert int_mm_padding(1, 7, 9, "cuda") == (17, 8, 16)
    assert int_mm_padding(16, 576, 1536, "cuda") == (17, 576, 1536)
    assert int_mm_padding(17, 576, 1536, "cuda") == (17, 576, 1536)
    assert int_mm_padding(1024, 20, 12, "cuda") == (1024, 24, 16)


@pytest.mark.skipif(not HAS_INT_MM, reason="this torch has no torch._int_mm")
def test_padded_int_mm_is_exact():
    # The CUDA padding path, exercised on CPU: zero rows/columns change nothing after slicing.
    a, w = _rand_int8(3, 20, seed=3), _rand_int8(12, 20, seed=4)
    out = padded_int_mm(a, w.t(), *int_mm_padding(3, 20, 12, "cuda"))
    assert out.shape == (3, 12) and torch.equal(out, _reference(a, w.t()))


def test_int8_matmul_errors():
    with pytest.raises(AWQInputError, match="int8"):
        int8_matmul(torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(AWQInputError, match="do not chain"):
        int8_matmul(_rand_int8(2, 3), _rand_int8(4, 2))
    with pytest.raises(AWQInputError, match="backend"):
        int8_matmul(_rand_int8(2, 3), _rand_int8(3, 2), backend="magic")
    assert int_mm_backend("meta") == "float32-exact"
    if HAS_INT_MM:  # torch's CPU kernel only where the CPU has int8 dot products; else the exact fp32 path
        assert int_mm_backend("cpu") == ("torch._int_mm" if w8a8_nn.cpu_has_int8_dot() else "float32-exact")
    with pytest.raises(AWQInputError, match="overflow"):
        W8A8Linear(MAX_K + 1, 4)


def _linear(k=96, n=40, bias=True, seed=5):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight.mul_(torch.logspace(-1, 1, n).unsqueeze(1))
    return lin


def _float_reference(mod: W8A8Linear, x: torch.Tensor) -> torch.Tensor:
    y = mod.fake_quant_input(x).double() @ mod.dequantized_weight().double().t()
    if mod.bias is not None:
        y = y + mod.bias.double()
    return y.float()


@pytest.mark.parametrize("mode", ["static", "dynamic"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("backend", ["torch._int_mm", "float32-exact"])
def test_w8a8_linear_matches_dequantized_reference(mode, bias, backend, monkeypatch):
    if backend == "torch._int_mm" and not HAS_INT_MM:
        pytest.skip("this torch has no torch._int_mm")
    monkeypatch.setattr(w8a8_nn, "int_mm_backend", lambda device: backend)  # whatever this CPU would pick
    lin = _linear(bias=bias)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 19, 96, generator=g)
    x[..., 5] *= 30  # an outlier channel
    mod = W8A8Linear.from_linear(lin, mode, act_absmax=x.abs().max() if mode == "static" else None)
    calls = []
    if HAS_INT_MM:
        real = torch._int_mm
        monkeypatch.setattr(torch, "_int_mm", lambda a, b: calls.append(a.shape) or real(a, b))
    y = mod(x)
    assert y.shape == (2, 19, 40) and y.dtype == torch.float32
    ref = _float_reference(mod, x)
    assert float((y - ref).norm() / ref.norm()) < 1e-5
    if HAS_INT_MM:
        # the real INT8 matmul ran, once, on all tokens (and not at all on the float32-exact path)
        assert calls == ([torch.Size([38, 96])] if backend == "torch._int_mm" else [])
    # and INT8 W8A8 is close to the float layer (per-tensor static suffers most from the outlier channel)
    with torch.no_grad():
        ref_fp = lin(x)
    assert float((y - ref_fp).norm() / ref_fp.norm()) < (0.1 if mode == "static" else 0.03)


def test_w8a8_linear_emulation_backend_matches(monkeypatch):
    lin = _linear()
    x = torch.randn(5, 96)
    mod = W8A8Linear.from_linear(lin, "dynamic")
    if not HAS_INT_MM:
        pytest.skip("this torch has no torch._int_mm")
    monkeypatch.setattr(w8a8_nn, "int_mm_backend", lambda device: "torch._int_mm")
    y = mod(x)
    monkeypatch.setattr(w8a8_nn, "int_mm_backend", lambda device: "float32-exact")
    torch.testing.assert_close(mod(x), y, rtol=0, atol=0)


def test_w8a8_linear_keeps_bias_and_creates_one_on_request():
    lin = _linear(bias=False)
    assert W8A8Linear.from_linear(lin).bias is None
    mod = W8A8Linear.from_linear(lin, bias=True)
    assert mod.bias is not None and torch.equal(mod.bias, torch.zeros(40))
    lin_b = _linear(bias=True)
    assert torch.equal(W8A8Linear.from_linear(lin_b).bias, lin_b.bias.detach())


def test_w8a8_linear_static_range_clamps_and_errors():
    lin = _linear()
    mod = W8A8Linear.from_linear(lin, "static", act_absmax=1.0)
    big = torch.full((1, 96), 5.0)
    torch.testing.assert_close(mod(big), mod(torch.ones(1, 96)))  # clamped to the calibrated range
    with pytest.raises(AWQInputError, match="act_absmax"):
        W8A8Linear.from_linear(lin, "static")
    with pytest.raises(AWQInputError, match="unknown activation"):
        W8A8Linear(4, 4, act_mode="per-channel")
    with pytest.raises(AWQInputError, match="last dim"):
        mod(torch.ones(2, 95))
    with pytest.raises(AWQInputError, match="no calibrated act_scale"):
        W8A8Linear(96, 40, act_mode="static")(torch.ones(1, 96))


def test_state_dict_round_trip():
    mod = W8A8Linear.from_linear(_linear(), "static", act_absmax=3.0)
    other = W8A8Linear(96, 40, act_mode="static")
    other.load_state_dict(mod.state_dict())
    x = torch.randn(4, 96)
    torch.testing.assert_close(other(x), mod(x), rtol=0, atol=0)
    assert mod.qweight.dtype == torch.int8 and mod.w_scale.shape == (40,)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("m", [1, 8, 16, 17, 33, 1024])
@pytest.mark.parametrize("k,n", [(576, 1536), (20, 12)])
def test_int8_matmul_cuda_matches_reference(m, k, n):
    a, w = _rand_int8(m, k, seed=7, device="cuda"), _rand_int8(n, k, seed=8, device="cuda")
    out = int8_matmul(a, w.t())
    assert torch.equal(out.cpu(), _reference(a.cpu(), w.cpu().t()))


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_w8a8_linear_cuda_matches_cpu(mode):
    lin = _linear()
    x = torch.randn(3, 96)
    mod = W8A8Linear.from_linear(lin, mode, act_absmax=x.abs().max() if mode == "static" else None)
    y_cpu = mod(x)
    y_gpu = mod.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(y_gpu, y_cpu, rtol=1e-5, atol=1e-5)
