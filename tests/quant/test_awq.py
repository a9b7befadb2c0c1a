import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from awq_ext.errors import AWQInputError
from awq_ext.quant import QuantSpec, fake_quantize
from awq_ext.quant.awq import (
    activation_scale, candidate_scales, clip_weight, dequantize_clipped, search_clip, search_scales, weight_scale,
)
from awq_ext.quant.quantizer import scaled_fake_quant


def test_activation_and_weight_scale_shapes():
    x = torch.randn(3, 10, 64)
    assert activation_scale(x).shape == (64,)
    sw = weight_scale([torch.randn(8, 64), torch.randn(4, 64)], QuantSpec(4, 32))
    assert sw.shape == (64,) and (sw <= 1).all() and (sw > 0).all()


@pytest.mark.parametrize("mode,count", [("act", 20), ("duo", 21), ("weight", 20), ("joint", 400)])
def test_candidates_start_with_identity(mode, count):
    c = candidate_scales(torch.rand(16) + 0.1, torch.rand(16) + 0.1, mode, 20)
    assert len(c) == count  # duo adds the identity; the others already hold it at alpha=beta=0
    a, b, s = c[0]
    assert (a, b) == (0.0, 0.0) and torch.equal(s, torch.ones(16))
    for _, _, s in c[1:]:  # normalised: geometric centre of max and min is 1
        assert abs(float(s.max() * s.min()) - 1.0) < 1e-4


def test_unknown_mode():
    with pytest.raises(AWQInputError, match="scale mode"):
        candidate_scales(torch.ones(4), torch.ones(4), "bogus")


def test_identity_scaling_is_rtn():
    w = torch.randn(16, 64)
    spec = QuantSpec(3, 32)
    assert torch.allclose(scaled_fake_quant(w, torch.ones(64), spec), fake_quantize(w, spec))


def test_search_picks_minimum_and_reports_identity_loss():
    cands = [(0.0, 0.0, torch.ones(2)), (0.5, 0.0, torch.full((2,), 2.0)), (0.7, 0.0, torch.full((2,), 3.0))]
    res = search_scales(cands, lambda s: float((s[0] - 2.0) ** 2))
    assert res.alpha == 0.5 and res.loss == 0.0 and res.identity_loss == 1.0


def test_nan_loss_is_an_error():
    with pytest.raises(AWQInputError, match="NaN"):
        search_scales([(0.0, 0.0, torch.ones(2))], lambda s: float("nan"))


def test_scaling_protects_salient_channel():
    # One input channel with huge activations: AWQ's act-scaling must beat RTN on the output error.
    torch.manual_seed(0)
    spec = QuantSpec(3, 64)
    w = torch.randn(32, 64)
    x = torch.randn(256, 64)
    x[:, 5] *= 50
    ref = x @ w.t()
    loss = lambda s: float((x @ scaled_fake_quant(w, s, spec).t() - ref).pow(2).mean())
    res = search_scales(candidate_scales(activation_scale(x), weight_scale([w], spec), "act"), loss)
    assert res.loss < 0.8 * res.identity_loss


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.sampled_from([2, 3, 4]), group=st.sampled_from([32, 64, -1]),
       outlier=st.floats(1.0, 20.0))
def test_clip_never_raises_layer_output_error(seed, bits, group, outlier):
    g = torch.Generator().manual_seed(seed)
    spec = QuantSpec(bits, group)
    w = torch.randn(24, 128, generator=g)
    w[:, 7] *= outlier
    x = torch.randn(64, 128, generator=g)
    res = search_clip(w, x, spec, n_grid=20, max_shrink=0.5, row_batch=10)
    ref = x @ w.t()
    before = float((x @ fake_quantize(w, spec).t() - ref).pow(2).mean())
    after = float((x @ dequantize_clipped(w, res.max_val, spec).t() - ref).pow(2).mean())
    assert after <= before * (1 + 1e-5) + 1e-9
    assert abs(res.error_before - before) <= 1e-4 * max(before, 1e-6)
    assert res.error_after <= res.error_before


def test_gram_group_errors_match_direct_products():
    from awq_ext.quant.awq import _group_outputs, group_grams, group_output_errors

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 96, generator=g, dtype=torch.float64)
    d = torch.randn(7, 96, generator=g, dtype=torch.float64)
    direct = _group_outputs(x, d, 32).pow(2).mean(dim=0)  # [N, J] from the per-group partial products
    assert torch.allclose(group_output_errors(d, group_grams(x, 32)), direct, rtol=1e-10, atol=0)


def test_clip_bounds_are_within_group_max():
    w = torch.randn(8, 64)
    res = search_clip(w, torch.randn(32, 64), QuantSpec(2, 32))
    gmax = w.reshape(8, 2, 32).abs().amax(-1)
    assert (res.max_val <= gmax + 1e-7).all() and (res.max_val >= 0.5 * gmax - 1e-7).all()
    clipped = clip_weight(w, res.max_val, QuantSpec(2, 32))
    assert (clipped.reshape(8, 2, 32).abs().amax(-1) <= res.max_val + 1e-7).all()


def test_clip_shape_mismatch():
    with pytest.raises(AWQInputError, match="do not match"):
        search_clip(torch.randn(8, 64), torch.randn(10, 32), QuantSpec(4, 32))


def _cands(n):
    return [(0.0, 0.0, torch.zeros(1))] + [((i + 1) / (n + 1), 0.0, torch.full((1,), float(i))) for i in range(n)]


@pytest.mark.parametrize("stride", [2, 3, 4, 7, 8, 11])
def test_refined_search_equals_full_grid_on_unimodal_losses(stride):
    # Every unimodal loss along grids of 2..25 points, minimum anywhere: the coarse-to-fine search picks
    # exactly what the full grid picks (on a flat bottom of ties, a point of the same loss), with fewer
    # evaluations once the grid is long enough.
    for n in range(2, 26):
        for m in range(n):
            for flat in (0, 1):
                curve = [max(0, abs(i - m) - flat) for i in range(n)]
                calls = []

                def fn(s, c=curve):
                    calls.append(1)
                    return 100.0 if len(calls) == 1 else float(c[int(s)])  # the identity comes first

                full = search_scales(_cands(n), fn)
                calls.clear()
                fast = search_scales(_cands(n), fn, refine_stride=stride)
                assert fast.loss == full.loss == 0.0 and fast.identity_loss == 100.0, (n, m, stride)
                if not flat:
                    assert fast.alpha == full.alpha, (n, m, stride)
                if n >= 16 and stride >= 4:
                    assert len(calls) <= n // 2 + 3, (n, stride, len(calls))


def test_refined_search_keeps_best_of_what_it_tried():
    g = torch.Generator().manual_seed(0)
    curve = torch.rand(20, generator=g).tolist()
    res = search_scales(_cands(20), lambda s: curve[int(s)] if s.numel() == 1 else 0.0, refine_stride=4)
    assert res.loss == min(l for _, _, l in res.tried)
    assert len(res.tried) < 21
    with pytest.raises(AWQInputError, match="refine_stride"):
        search_scales(_cands(3), lambda s: 0.0, refine_stride=0)
