import copy

import pytest
import torch

from awq_ext.calibrate import quantize_model
from awq_ext.config import QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.quant import QuantSpec, compute_qparams, fake_quantize
from awq_ext.quant.gptq import HessianAccumulator, gptq_quantize, hessian_from_inputs, output_error
from tests.conftest import plant_outliers, tiny_llama


def _correlated(t=1024, k=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    x = torch.randn(t, k, generator=g) @ mix + 0.05 * torch.randn(t, k, generator=g)
    x[:, :4] *= 10.0  # a few salient channels, as in LLM activations
    return x


@pytest.mark.parametrize("bits,group", [(4, 32), (3, 32), (2, 64), (3, -1)])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_correlated_inputs(bits, group, act_order):
    x = _correlated()
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    spec = QuantSpec(bits, group)
    r = gptq_quantize(w, hessian_from_inputs(x), spec, act_order=act_order)
    e_rtn = output_error(w, fake_quantize(w, spec), x)
    e_gptq = output_error(w, r.weight, x)
    assert e_gptq < 0.8 * e_rtn, (e_gptq, e_rtn)


def test_uncorrelated_unit_hessian_reduces_to_rtn():
    # With H = I there is no error to feed forward: GPTQ must be exactly round-to-nearest.
    w = torch.randn(16, 64)
    spec = QuantSpec(3, 32)
    r = gptq_quantize(w, torch.eye(64, dtype=torch.float64), spec)
    assert torch.equal(r.weight, fake_quantize(w, spec))
    assert r.quantized.g_idx is None


@pytest.mark.parametrize("group", [32, 64, -1])
def test_act_order_permutation_and_g_idx_consistent(group):
    x = _correlated(k=128)
    x[:, 10] *= 7.0
    w = torch.randn(24, 128)
    h = hessian_from_inputs(x)
    spec = QuantSpec(4, group)
    r = gptq_quantize(w, h, spec, act_order=True, block_size=64)
    qw = r.quantized
    # processing order = descending Hessian diagonal
    assert torch.equal(r.perm, torch.argsort(torch.diagonal(h), descending=True, stable=True))
    assert int(r.perm[0]) == 10 or float(h[r.perm[0], r.perm[0]]) >= float(h[10, 10])
    # dequantizing the codes through g_idx reproduces the GPTQ weights bit for bit
    assert torch.equal(qw.dequantize(), r.weight)
    assert qw.q.dtype == torch.int32 and int(qw.q.min()) >= spec.qmin and int(qw.q.max()) <= spec.qmax
    if group == -1:
        assert qw.g_idx is None and qw.scales.shape == (24, 1)
        return
    g_idx = qw.g_idx
    assert g_idx.dtype == torch.int32 and g_idx.shape == (128,)
    # channel perm[j] is the j-th processed; groups are runs of `group` channels in processing order
    assert torch.equal(g_idx[r.perm].long(), torch.arange(128) // group)
    assert torch.equal(torch.bincount(g_idx.long()), torch.full((128 // group,), group))
    assert qw.scales.shape == (24, 128 // group)
    # without g_idx the codes would be read with the wrong groups: the reordering really matters
    plain = type(qw)(qw.q, qw.scales, qw.zeros, qw.spec).dequantize()
    assert not torch.equal(plain, r.weight)


def test_static_groups_keep_plain_layout():
    x = _correlated(k=128)
    w = torch.randn(8, 128)
    spec = QuantSpec(4, 32)
    r = gptq_quantize(w, hessian_from_inputs(x), spec, act_order=True, static_groups=True)
    assert r.quantized.g_idx is None
    assert torch.equal(r.quantized.dequantize(), r.weight)
    # static parameters are those of the original weights' contiguous groups
    s, z = compute_qparams(w, spec)
    assert torch.equal(r.quantized.scales, s) and torch.equal(r.quantized.zeros, z)


def test_natural_order_codes_match_plain_dequantize():
    x = _correlated(k=64)
    w = torch.randn(8, 64)
    r = gptq_quantize(w, hessian_from_inputs(x), QuantSpec(3, 32, zero_point=False))
    assert r.quantized.zeros is None and r.quantized.g_idx is None
    assert torch.equal(r.quantized.dequantize(), r.weight)


def test_hessian_streaming_equals_batch():
    x = torch.randn(3, 50, 16)
    acc = HessianAccumulator(16)
    acc.add(x[:1])
    acc.add(x[1:])
    assert acc.tokens == 150
    assert torch.allclose(acc.hessian, hessian_from_inputs(x), rtol=1e-5, atol=1e-6)
    flat = x.reshape(-1, 16).double()
    assert torch.allclose(acc.hessian, 2 * flat.t() @ flat / 150, rtol=1e-5, atol=1e-6)  # fp32 products


def test_dead_channels_are_zeroed_not_nan():
    x = torch.randn(256, 32)
    x[:, 5] = 0.0
    w = torch.randn(8, 32)
    r = gptq_quantize(w, hessian_from_inputs(x), QuantSpec(4, 32))
    assert torch.isfinite(r.weight).all()
    assert torch.equal(r.weight[:, 5], torch.zeros(8))


def test_errors():
    spec = QuantSpec(4, 32)
    with pytest.raises(AWQInputError, match="does not match"):
        gptq_quantize(torch.randn(4, 64), torch.eye(32), spec)
    with pytest.raises(AWQInputError, match="not divisible"):
        gptq_quantize(torch.randn(4, 48), torch.eye(48), spec)
    with pytest.raises(AWQInputError, match="channels"):
        HessianAccumulator(8).add(torch.randn(4, 9))
    with pytest.raises(AWQInputError, match="NaN"):
        HessianAccumulator(2).add(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(AWQInputError, match="none were recorded"):
        HessianAccumulator(2).hessian
    # duplicated channels make H singular; without dampening the factorisation must refuse clearly
    x = torch.randn(100, 16)
    x[:, 1] = x[:, 0]
    with pytest.raises(AWQInputError, match="positive definite"):
        gptq_quantize(torch.randn(4, 32), hessian_from_inputs(torch.cat([x, x], 1)), spec, damp=0.0)


def test_gptq_methods_through_pipeline(calib_ids):
    base = tiny_llama(layers=1)
    plant_outliers(base)
    calib_ids = calib_ids[:2, :16]
    for m in ("gptq", "gptq-r", "awq+gptq"):
        model = copy.deepcopy(base)
        cfg = QuantizeConfig(method=m, w_bit=3, group_size=32, chunk_size=2, propagate="fp")
        res = quantize_model(model, calib_ids, cfg, progress=False)
        assert all(b.rel_error < 0.5 for b in res.blocks)
        for name, qw in res.quantized.items():
            lin = model.get_submodule(name)
            assert torch.equal(qw.dequantize(), lin.weight)  # the model holds exactly what would be packed
            assert (qw.g_idx is not None) == (m == "gptq-r")
    with pytest.raises(AWQInputError, match="unknown GPTQ option"):
        quantize_model(copy.deepcopy(base), calib_ids,
                       QuantizeConfig(method="gptq", group_size=32, extra={"dampp": 0.1}), progress=False)
