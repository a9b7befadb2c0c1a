import copy

import pytest
import torch

from awq_ext.calibrate import quantize_model
from awq_ext.config import QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.calibrate.capture import capture_block_inputs
from awq_ext.calibrate.methods import gptq_quantizer
from awq_ext.calibrate.driver import collect_inputs
from awq_ext.cli import _extra, build_parser
from awq_ext.models import block_linears, get_blocks, get_spec
from awq_ext.quant import QuantSpec, compute_qparams, dequantize, fake_quantize, quantize
from awq_ext.quant.gptq import HessianAccumulator, HessianCache, gptq_quantize, hessian_from_inputs, output_error
from awq_ext.quant.quantizer import mse_qparams
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


@pytest.mark.parametrize("observer", ["minmax", "mse"])
@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("bits,group,zero_point", [(4, 32, True), (3, 64, True), (3, 32, False)])
def test_static_groups_exported_layout_reproduces_weights(observer, act_order, bits, group, zero_point):
    x = _correlated(k=128)
    x[:, 7] = 0.0  # a dead channel: zeroed weight column, still inside its group
    w = torch.randn(24, 128, generator=torch.Generator().manual_seed(3))
    w[2, 40] = 9.0  # an outlier makes the MSE observer shrink some ranges
    spec = QuantSpec(bits, group, zero_point)
    r = gptq_quantize(w, hessian_from_inputs(x), spec, act_order=act_order, static_groups=True,
                      block_size=48, observer=observer)
    qw = r.quantized
    # plain layout: no g_idx, channel k in group k // group, scales [N, K/G] in that order
    assert qw.g_idx is None and qw.scales.shape == (24, 128 // group)
    assert torch.equal(qw.group_index(), torch.arange(128) // group)
    # the pseudo-quantized weight is exactly the exported codes dequantized with the exported parameters
    assert torch.equal(dequantize(qw.q, spec, qw.scales, qw.zeros), r.weight)
    assert torch.equal(qw.dequantize(), r.weight)
    assert int(qw.q.min()) >= spec.qmin and int(qw.q.max()) <= spec.qmax
    # parameters fixed before the loop: the observer's on the original (dead-zeroed) contiguous groups
    w0 = w.clone()
    w0[:, 7] = 0.0
    s, z = (compute_qparams if observer == "minmax" else mse_qparams)(w0, spec)
    assert torch.equal(qw.scales, s)
    assert (qw.zeros is None and z is None) or torch.equal(qw.zeros, z)
    # GPTQ changed the codes (error feedback), not just rounded to nearest with those parameters
    assert not torch.equal(qw.q, quantize(w0, spec, s, z))


def test_static_and_dynamic_groups_differ_in_layout_and_both_beat_rtn():
    x = _correlated()
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    spec = QuantSpec(3, 32)
    h = hessian_from_inputs(x)
    dyn = gptq_quantize(w, h, spec, act_order=True)
    sta = gptq_quantize(w, h, spec, act_order=True, static_groups=True)
    assert dyn.quantized.g_idx is not None and sta.quantized.g_idx is None
    e_rtn = output_error(w, fake_quantize(w, spec), x)
    for r in (dyn, sta):
        assert output_error(w, r.weight, x) < 0.8 * e_rtn


@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("group", [32, -1])
def test_mse_observer_never_raises_a_groups_error(zero_point, group):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(96, 128, generator=g) * torch.rand(96, 1, generator=g)
    w += (torch.rand(96, 128, generator=g) < 0.01) * torch.randn(96, 128, generator=g) * 8  # heavy tails
    w[0] = 0.5  # a constant row: every range gives the same error
    for bits in (2, 3, 4):
        spec = QuantSpec(bits, group, zero_point)
        gs = spec.effective_group(128)

        def group_err(params):
            deq = dequantize(quantize(w, spec, *params), spec, *params)
            return (deq - w).pow(2).reshape(96, 128 // gs, gs).sum(-1)

        e_mm, e_mse = group_err(compute_qparams(w, spec)), group_err(mse_qparams(w, spec))
        assert (e_mse <= e_mm).all()
        assert e_mse.sum() < 0.97 * e_mm.sum()  # and the search does find better ranges
    with pytest.raises(AWQInputError, match="max_shrink"):
        mse_qparams(w, QuantSpec(3, 32), max_shrink=1.0)


def test_mse_observer_without_shrink_is_minmax():
    w = torch.randn(8, 64)
    spec = QuantSpec(3, 32)
    s, z = mse_qparams(w, spec, max_shrink=0.0)
    s0, z0 = compute_qparams(w, spec)
    assert torch.equal(s, s0) and torch.equal(z, z0)


def test_hessian_float32_running_mean_matches_float64():
    x = torch.randn(5, 700, 48) * 3
    h64 = hessian_from_inputs(x)
    h32 = hessian_from_inputs(x, torch.float32)
    assert h32.dtype == torch.float32 and h64.dtype == torch.float64
    flat = x.reshape(-1, 48).double()
    exact = 2 * flat.t() @ flat / flat.shape[0]
    assert torch.allclose(h64, exact, rtol=1e-5, atol=1e-5)
    assert torch.allclose(h32.double(), exact, rtol=1e-4, atol=1e-4)
    with pytest.raises(AWQInputError, match="float64 or float32"):
        HessianAccumulator(4, dtype=torch.float16)


def test_hessian_cache_one_per_input_tensor():
    x = torch.randn(2, 30, 32)
    cache = HessianCache()
    h1 = cache.get(x)
    assert cache.get(x) is h1 and len(cache) == 1
    y = x.clone()  # equal values, another tensor: its own entry
    assert cache.get(y) is not h1 and len(cache) == 2
    assert cache.get(x, torch.float32).dtype == torch.float32 and len(cache) == 3
    assert torch.equal(h1, hessian_from_inputs(x))


def test_collect_inputs_shares_one_tensor_per_source(calib_ids):
    model = tiny_llama(layers=1)
    blocks = get_blocks(model, get_spec(model))
    inps, kw = capture_block_inputs(model, blocks, calib_ids[:3, :16])
    names = list(block_linears(blocks[0]))
    feats, _ = collect_inputs(blocks[0], inps, kw, names, chunk=2)  # two chunks
    f = {n.split(".")[-1]: v for n, v in feats.items()}
    assert f["q_proj"] is f["k_proj"] is f["v_proj"] and f["gate_proj"] is f["up_proj"]
    assert len({id(v) for v in feats.values()}) == 4
    assert f["q_proj"].shape == (3, 16, 64) and f["down_proj"].shape == (3, 16, 128)
    # the Hessian of q/k/v is built once for the three linears
    cache = HessianCache()
    lins = block_linears(blocks[0])
    for n in names:
        gptq_quantizer(lins[n], feats[n], QuantSpec(4, 32), {}, n, cache)
    assert len(cache) == 4


def test_cli_gptq_flags_reach_the_options():
    a = build_parser().parse_args(["quantize", "--method", "gptq-r", "--static-groups", "--observer", "mse",
                                   "--hessian-dtype", "float32", "--damp", "0.05"])
    assert _extra(a, "gptq-r") == {"damp": 0.05, "block_size": 128, "static_groups": True, "observer": "mse",
                                   "hessian_dtype": "float32"}
    a = build_parser().parse_args(["quantize", "--method", "awq+gptq-r"])
    assert _extra(a, "awq+gptq-r") == {"damp": 0.01, "block_size": 128}  # the rest: the library defaults


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
    runs = [(m, {}) for m in ("gptq", "gptq-r", "awq+gptq", "awq+gptq-r")]
    runs += [("gptq-r", {"static_groups": True, "observer": "mse", "hessian_dtype": "float32"}),
             ("awq+gptq-r", {"static_groups": True, "observer": "mse"}), ("gptq-r", {"observer": "mse"})]
    for m, extra in runs:
        model = copy.deepcopy(base)
        cfg = QuantizeConfig(method=m, w_bit=3, group_size=32, chunk_size=2, propagate="fp", extra=extra)
        res = quantize_model(model, calib_ids, cfg, progress=False)
        assert all(b.rel_error < 0.5 for b in res.blocks)
        for name, qw in res.quantized.items():
            lin = model.get_submodule(name)
            assert torch.equal(qw.dequantize(), lin.weight)  # the model holds exactly what would be packed
            dynamic_act_order = m.endswith("gptq-r") and not extra.get("static_groups", False)
            assert (qw.g_idx is not None) == dynamic_act_order
    with pytest.raises(AWQInputError, match="unknown GPTQ option"):
        quantize_model(copy.deepcopy(base), calib_ids,
                       QuantizeConfig(method="gptq", group_size=32, extra={"dampp": 0.1}), progress=False)
    with pytest.raises(AWQInputError, match="observer"):
        quantize_model(copy.deepcopy(base), calib_ids,
                       QuantizeConfig(method="gptq", group_size=32, extra={"observer": "max"}), progress=False)
    with pytest.raises(AWQInputError, match="hessian_dtype"):
        quantize_model(copy.deepcopy(base), calib_ids,
                       QuantizeConfig(method="gptq", group_size=32, extra={"hessian_dtype": "half"}),
                       progress=False)


def test_gptq_methods_default_to_the_mse_observer_and_analyses_to_the_reference(calib_ids):
    from awq_ext.analysis.runner import RunSettings, quant_cfg

    base = tiny_llama(layers=1)
    plant_outliers(base)
    calib_ids = calib_ids[:2, :16]
    codes = {}
    for label, extra in (("default", {}), ("mse", {"observer": "mse"}), ("minmax", {"observer": "minmax"})):
        cfg = QuantizeConfig(method="gptq-r", w_bit=3, group_size=32, chunk_size=2, propagate="fp", extra=extra)
        codes[label] = quantize_model(copy.deepcopy(base), calib_ids, cfg, progress=False).quantized
    for name, qw in codes["default"].items():
        assert torch.equal(qw.q, codes["mse"][name].q) and torch.equal(qw.scales, codes["mse"][name].scales)
        assert qw.g_idx is not None  # dynamic groups stay the default: GPTQ-R keeps its g_idx export
    assert any(not torch.equal(qw.scales, codes["minmax"][n].scales) for n, qw in codes["default"].items())
    # the paper's tables compare against the reference GPTQ (min-max ranges), not the CLI default
    s = RunSettings()
    for m in ("gptq", "gptq-r", "awq+gptq"):
        assert quant_cfg(m, 3, 32, s).extra["observer"] == "minmax"
        assert quant_cfg(m, 3, 32, s, extra={"observer": "mse"}).extra["observer"] == "mse"
    assert quant_cfg("awq", 3, 32, s).extra == {}
