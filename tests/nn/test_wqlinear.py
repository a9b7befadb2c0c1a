"""WQLinear: reference forward, caching, dtype moves, backend dispatch and replace_linears."""
from __future__ import annotations

import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import awq_ext.nn.wqlinear as wqmod
from awq_ext.errors import AWQInputError, KernelUnavailableError
from awq_ext.nn import WQLinear, replace_linears, set_backend, wq_linears
from awq_ext.pack import pack_interchange, to_interchange_precision
from awq_ext.quant import QuantizedWeight, QuantSpec, quantize_weight


def _quantized_linear(n: int = 32, k: int = 128, group_size: int = 64, zero_point: bool = True, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.05)
        lin.bias.copy_(torch.randn(n, generator=gen))
    spec = QuantSpec(bits=4, group_size=group_size, zero_point=zero_point)
    qw = QuantizedWeight(*quantize_weight(lin.weight.detach(), spec), spec)
    return lin, qw


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("zero_point", [True, False])
def test_reference_forward_matches_dequantized_linear(dtype: torch.dtype, zero_point: bool) -> None:
    lin, qw = _quantized_linear(zero_point=zero_point)
    layer = WQLinear.from_quantized(qw, lin.bias)
    x = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(1)).to(dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (2, 5, 32)
    w_ref = to_interchange_precision(qw).dequantize().to(dtype)
    assert torch.equal(y, F.linear(x, w_ref, lin.bias.to(dtype)))
    # and close to the float layer: the quantization error only
    y_float = lin(x.float())
    assert (y.float() - y_float).abs().max() < 0.1 * y_float.abs().max()


def test_act_order_layer_uses_g_idx() -> None:
    k, n, g = 128, 16, 32
    gen = torch.Generator().manual_seed(2)
    spec = QuantSpec(bits=4, group_size=g)
    g_idx = torch.empty(k, dtype=torch.int32)
    g_idx[torch.randperm(k, generator=gen)] = (torch.arange(k) // g).to(torch.int32)
    qw = QuantizedWeight(
        q=torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32),
        scales=torch.rand(n, k // g, generator=gen) + 0.01,
        zeros=torch.randint(0, 16, (n, k // g), generator=gen).float(),
        spec=spec,
        g_idx=g_idx,
    )
    layer = WQLinear.from_quantized(qw)
    assert layer.desc_act and layer.g_idx.shape == (k,)
    x = torch.randn(3, k, generator=gen)
    assert torch.equal(layer(x), F.linear(x, to_interchange_precision(qw).dequantize()))
    # Ignoring g_idx would give a different weight: the test above can fail.
    plain = QuantizedWeight(qw.q, qw.scales.half().float(), qw.zeros, spec)
    assert not torch.equal(layer.dequantized_weight(), plain.dequantize())


def test_state_dict_is_the_interchange_layout() -> None:
    lin, qw = _quantized_linear(n=32, k=128, group_size=64)
    sd = WQLinear.from_quantized(qw, lin.bias).state_dict()
    assert {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()} == {
        "qweight": (torch.int32, (128, 4)),
        "qzeros": (torch.int32, (2, 4)),
        "scales": (torch.float16, (2, 32)),
        "bias": (torch.float32, (32,)),
    }
    packed = pack_interchange(qw)
    assert torch.equal(sd["qweight"], packed.qweight) and torch.equal(sd["scales"], packed.scales)


def test_to_quantized_round_trip() -> None:
    _, qw = _quantized_linear(group_size=32)
    back = WQLinear.from_quantized(qw).to_quantized()
    assert torch.equal(back.q, qw.q) and torch.equal(back.zeros, qw.zeros)


def test_dequantized_weight_is_cached_and_invalidated() -> None:
    lin, qw = _quantized_linear(seed=3)
    layer = WQLinear.from_quantized(qw, lin.bias)
    w1 = layer.dequantized_weight(torch.float32)
    assert layer.dequantized_weight(torch.float32) is w1  # cached
    assert layer.dequantized_weight(torch.float16) is not w1  # per dtype
    _, other = _quantized_linear(seed=4)
    layer.load_state_dict(WQLinear.from_quantized(other, lin.bias).state_dict())  # in-place copy_
    w2 = layer.dequantized_weight(torch.float32)
    assert w2 is not w1 and torch.equal(w2, to_interchange_precision(other).dequantize())


def test_dtype_moves_keep_scales_float16() -> None:
    lin, qw = _quantized_linear()
    layer = WQLinear.from_quantized(qw, lin.bias)
    scales = layer.scales.clone()
    layer.to(torch.bfloat16)
    assert layer.scales.dtype == torch.float16 and torch.equal(layer.scales, scales)
    assert layer.bias.dtype == torch.bfloat16 and layer.qweight.dtype == torch.int32
    layer.float()
    assert layer.scales.dtype == torch.float16 and layer.bias.dtype == torch.float32
    assert list(layer.state_dict()) == ["qweight", "qzeros", "scales", "bias"]
    empty = WQLinear(128, 32, 64, bias=True, device="meta").to_empty(device="cpu")
    assert empty.scales.device.type == "cpu" and empty.scales.dtype == torch.float16


def test_bad_inputs_are_refused() -> None:
    lin, qw = _quantized_linear()
    layer = WQLinear.from_quantized(qw, lin.bias)
    with pytest.raises(AWQInputError, match="last dim is 64, expected 128"):
        layer(torch.randn(2, 64))
    with pytest.raises(AWQInputError, match="activations"):
        layer(torch.ones(2, 128, dtype=torch.int64))
    with pytest.raises(AWQInputError, match="backend must be one of"):
        layer.backend = "triton"
    spec3 = QuantSpec(bits=3, group_size=64)
    qw3 = QuantizedWeight(*quantize_weight(lin.weight.detach(), spec3), spec3)
    with pytest.raises(AWQInputError, match="4-bit codes only"):
        WQLinear.from_quantized(qw3)


class _FakeX:
    """Stands in for a CUDA activation so dispatch can be tested on a CPU-only machine."""

    def __init__(self, dtype: torch.dtype = torch.float16) -> None:
        self.is_cuda = True
        self.dtype = dtype
        self.device = torch.device("cuda", 0)


def test_backend_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    lin, qw = _quantized_linear()
    layer = WQLinear.from_quantized(qw, lin.bias)
    cpu_x = torch.randn(1, 128)
    assert layer._resolve_backend(cpu_x) == "torch"
    layer.backend = "cuda"
    with pytest.raises(KernelUnavailableError, match="needs CUDA inputs"):
        layer(cpu_x)

    monkeypatch.setattr(wqmod, "_load_kernels", lambda: None)
    monkeypatch.setattr(wqmod, "_fallback_warned", False)
    with pytest.raises(KernelUnavailableError, match="kernels are unavailable"):
        layer._resolve_backend(_FakeX())
    layer.backend = "auto"
    with pytest.warns(RuntimeWarning, match="CUDA kernels unavailable"):
        assert layer._resolve_backend(_FakeX()) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert layer._resolve_backend(_FakeX()) == "torch"

    fake = (types.SimpleNamespace(w4a16_linear=None), None)
    monkeypatch.setattr(wqmod, "_load_kernels", lambda: fake)
    assert layer._resolve_backend(_FakeX(torch.float16)) == "cuda"
    assert layer._resolve_backend(_FakeX(torch.bfloat16)) == "cuda"
    assert layer._resolve_backend(_FakeX(torch.float32)) == "torch"  # the kernel is W4A16 only
    layer.backend = "cuda"
    with pytest.raises(KernelUnavailableError, match="fp16/bf16"):
        layer._resolve_backend(_FakeX(torch.float32))


def test_missing_kernels_package_means_unavailable() -> None:
    # Where awq_ext.kernels is absent, partial or cannot run, the loader reports None, never raises.
    try:
        import awq_ext.kernels as kernels
    except ModuleNotFoundError:
        assert wqmod._load_kernels() is None
        return
    is_available = getattr(kernels, "is_available", None)
    if is_available is None or not is_available():
        assert wqmod._load_kernels() is None


@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_kernel_layout_holds_the_same_weights(
    monkeypatch: pytest.MonkeyPatch, zero_point: bool, act_order: bool
) -> None:
    """The data WQLinear hands the CUDA op decodes (by the kernel layout's own reference) to its weights."""
    kernel_layout = pytest.importorskip("awq_ext.pack.kernel_layout")
    lin, qw = _quantized_linear(n=48, k=128, group_size=32, zero_point=zero_point, seed=5)
    if act_order:
        g_idx = torch.empty(128, dtype=torch.int32)
        g_idx[torch.randperm(128, generator=torch.Generator().manual_seed(6))] = (torch.arange(128) // 32).int()
        qw = QuantizedWeight(qw.q, qw.scales, qw.zeros, qw.spec, g_idx)
    layer = WQLinear.from_quantized(qw, lin.bias)
    monkeypatch.setattr(wqmod, "_load_kernels", lambda: (None, kernel_layout.pack_kernel))
    data = layer._kernel_data(torch.float16)
    assert layer._kernel_data(torch.float16) is data  # cached
    decoded = kernel_layout.dequantize_kernel_reference(data)
    assert torch.equal(decoded, layer.dequantized_weight(torch.float32))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 7, 64])
def test_cuda_backend_matches_reference(dtype: torch.dtype, m: int) -> None:
    if wqmod._load_kernels() is None:
        pytest.skip("awq_ext.kernels not available on this machine")
    lin, qw = _quantized_linear(n=256, k=512, group_size=128)
    layer = WQLinear.from_quantized(qw, lin.bias).cuda()
    x = torch.randn(m, 512, device="cuda", dtype=dtype)
    layer.backend = "torch"
    ref = layer(x).float()
    layer.backend = "cuda"
    out = layer(x).float()
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


def test_replace_linears() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16, bias=False))
    ref = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16, bias=False))
    ref.load_state_dict(model.state_dict())
    spec = QuantSpec(bits=4, group_size=32)
    quantized = {}
    for name in ("0", "2"):
        w = model.get_submodule(name).weight.detach()
        qw = QuantizedWeight(*quantize_weight(w, spec, name), spec)
        quantized[name] = qw
        with torch.no_grad():
            ref.get_submodule(name).weight.copy_(to_interchange_precision(qw).dequantize())
    replace_linears(model, quantized, backend="torch")
    assert set(wq_linears(model)) == {"0", "2"}
    assert model[0].backend == "torch" and model[2].bias is None
    x = torch.randn(4, 64)
    assert torch.equal(model(x), ref(x))
    set_backend(model, "auto")
    assert all(m.backend == "auto" for m in wq_linears(model).values())

    fresh = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
    with pytest.raises(AWQInputError, match="no module named 'missing'"):
        replace_linears(fresh, {"missing": quantized["0"]})
    with pytest.raises(AWQInputError, match="is a ReLU, not an nn.Linear"):
        replace_linears(fresh, {"1": quantized["0"]})
    with pytest.raises(AWQInputError, match=r"weight \[out, in\] = \(32, 64\) but its codes are \(16, 32\)"):
        replace_linears(fresh, {"0": quantized["2"]})
