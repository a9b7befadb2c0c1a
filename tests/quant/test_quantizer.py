import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from awq_ext.errors import AWQInputError
from awq_ext.quant import QuantSpec, QuantizedWeight, compute_qparams, dequantize, fake_quantize, quantize, quantize_weight


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("zero_point", [True, False])
@pytest.mark.parametrize("group", [32, 64, 128, -1])
def test_values_on_grid_reproduce_exactly(bits, zero_point, group):
    spec = QuantSpec(bits, group, zero_point)
    torch.manual_seed(bits)
    w = torch.randn(16, 256)
    q, s, z = quantize_weight(w, spec)
    w_hat = dequantize(q, spec, s, z)
    # Quantizing values that already lie on the grid must give back the same codes and values.
    q2 = quantize(w_hat, spec, s, z)
    assert torch.equal(q2, q)
    assert torch.allclose(dequantize(q2, spec, s, z), w_hat)
    assert int(q.min()) >= spec.qmin and int(q.max()) <= spec.qmax


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 8), group=st.sampled_from([32, 64, 128]), zp=st.booleans(),
       rows=st.integers(1, 8), groups=st.integers(1, 4), seed=st.integers(0, 1000))
def test_error_bounded_by_half_step(bits, group, zp, rows, groups, seed):
    spec = QuantSpec(bits, group, zp)
    w = torch.randn(rows, group * groups, generator=torch.Generator().manual_seed(seed))
    s, z = compute_qparams(w, spec)
    err = (fake_quantize(w, spec) - w).abs().reshape(rows, groups, group)
    # Every value inside the representable range is within half a step of its reconstruction.
    assert (err <= s.unsqueeze(-1) / 2 + 1e-6).all()


def test_more_bits_less_error():
    w = torch.randn(64, 256)
    errs = [float((fake_quantize(w, QuantSpec(b, 64)) - w).pow(2).mean()) for b in range(2, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_per_channel_is_one_group():
    spec = QuantSpec(4, -1)
    w = torch.randn(8, 96)
    s, z = compute_qparams(w, spec)
    assert s.shape == (8, 1) and z.shape == (8, 1)


def test_constant_group_does_not_divide_by_zero():
    w = torch.zeros(4, 64)
    assert torch.equal(fake_quantize(w, QuantSpec(4, 64)), w)


@pytest.mark.parametrize("bits", [0, 1, 9, 16])
def test_unsupported_bits(bits):
    with pytest.raises(AWQInputError, match="bit width"):
        QuantSpec(bits, 64)


def test_unsupported_group():
    with pytest.raises(AWQInputError, match="group size"):
        QuantSpec(4, 48)


def test_k_not_divisible_by_group_is_refused_with_hint():
    with pytest.raises(AWQInputError, match=r"576 is not divisible by group_size 128.*--group-size 64"):
        quantize_weight(torch.randn(8, 576), QuantSpec(4, 128), "q_proj")


def test_nan_weight_refused():
    w = torch.randn(8, 64)
    w[2, 5] = float("nan")
    with pytest.raises(AWQInputError, match=r"NaN/Inf.*\[2, 5\]"):
        quantize_weight(w, QuantSpec(4, 64))


def test_integer_weight_refused():
    with pytest.raises(AWQInputError, match="floating-point"):
        quantize_weight(torch.ones(8, 64, dtype=torch.int32), QuantSpec(4, 64))


def test_quantized_weight_with_g_idx_matches_permuted_groups():
    spec = QuantSpec(4, 32)
    w = torch.randn(8, 64)
    q, s, z = quantize_weight(w, spec)
    perm = torch.randperm(64)
    g_idx = (torch.arange(64) // 32).to(torch.int32)
    # Same codes with columns shuffled and g_idx shuffled alike -> same (shuffled) weights.
    qw = QuantizedWeight(q[:, perm], s, z, spec, g_idx[perm])
    assert torch.equal(qw.dequantize(), dequantize(q, spec, s, z)[:, perm])
