"""Interchange INT4 layout: bit order, round trips (property-based) and refusals."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from awq_ext.errors import AWQInputError
from awq_ext.pack import (
    INTERCHANGE_GEMM,
    InterchangeTensors,
    dequantize_interchange,
    pack_int4,
    pack_interchange,
    to_interchange_precision,
    unpack_int4,
    unpack_interchange,
)
from awq_ext.quant import QuantizedWeight, QuantSpec, quantize_weight


def _random_qw(n: int, k: int, group_size: int, zero_point: bool, act_order: bool, seed: int) -> QuantizedWeight:
    """Random codes and group parameters covering the full code range (not derived from a weight)."""
    gen = torch.Generator().manual_seed(seed)
    spec = QuantSpec(bits=4, group_size=group_size, zero_point=zero_point)
    n_groups = spec.groups(k)
    q = torch.randint(spec.qmin, spec.qmax + 1, (n, k), generator=gen, dtype=torch.int32)
    scales = torch.rand(n, n_groups, generator=gen) * 0.1 + 1e-3
    zeros = torch.randint(0, 16, (n, n_groups), generator=gen).float() if zero_point else None
    g_idx = None
    if act_order:
        # GPTQ act-order: rows visited in a permuted order, group j = the j-th run of G visited rows.
        perm = torch.randperm(k, generator=gen)
        g_idx = torch.empty(k, dtype=torch.int32)
        g_idx[perm] = (torch.arange(k) // spec.effective_group(k)).to(torch.int32)
    return QuantizedWeight(q=q, scales=scales, zeros=zeros, spec=spec, g_idx=g_idx)


def test_bit_order_matches_the_spec() -> None:
    # Columns 0..7 hold the codes 0..7: nibble i holds column (0,2,4,6,1,3,5,7)[i].
    codes = torch.arange(8, dtype=torch.int32).reshape(1, 8)
    word = int(pack_int4(codes)[0, 0]) & 0xFFFFFFFF
    assert word == 0x75316420
    assert INTERCHANGE_GEMM.column_order == (0, 2, 4, 6, 1, 3, 5, 7)
    # A lone 15 in column 1 lands in nibble 4 (bits 16..19).
    one = torch.zeros(1, 8, dtype=torch.int32)
    one[0, 1] = 15
    assert int(pack_int4(one)[0, 0]) == 0xF << 16
    # All-15 words set bit 31: stored as a negative int32.
    assert int(pack_int4(torch.full((1, 8), 15))[0, 0]) == -1


def test_pack_unpack_int4_all_values() -> None:
    codes = torch.randint(0, 16, (37, 64), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    packed = pack_int4(codes)
    assert packed.dtype == torch.int32 and packed.shape == (37, 8)
    assert torch.equal(unpack_int4(packed), codes)


@settings(max_examples=60, deadline=None)
@given(
    n_words=st.integers(1, 12),
    n_groups=st.integers(1, 4),
    group_size=st.sampled_from([32, 64, 128]),
    zero_point=st.booleans(),
    act_order=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_is_bit_exact(
    n_words: int, n_groups: int, group_size: int, zero_point: bool, act_order: bool, seed: int
) -> None:
    n, k = 8 * n_words, group_size * n_groups
    qw = _random_qw(n, k, group_size, zero_point, act_order, seed)
    packed = pack_interchange(qw)
    assert packed.qweight.shape == (k, n // 8) and packed.qweight.dtype == torch.int32
    assert packed.qzeros.shape == (n_groups, n // 8) and packed.qzeros.dtype == torch.int32
    assert packed.scales.shape == (n_groups, n) and packed.scales.dtype == torch.float16

    back = unpack_interchange(packed, group_size, zero_point)
    assert torch.equal(back.q, qw.q)
    if zero_point:
        assert torch.equal(back.zeros, qw.zeros)
    else:
        assert back.zeros is None
    assert torch.equal(back.scales, qw.scales.half().float())
    if act_order:
        assert torch.equal(back.g_idx, qw.g_idx)
    # Packing again gives the very same words.
    again = pack_interchange(back)
    assert torch.equal(again.qweight, packed.qweight) and torch.equal(again.qzeros, packed.qzeros)
    # The dequantized weight is exactly the fp16-scale version of the original.
    assert torch.equal(dequantize_interchange(packed, group_size), to_interchange_precision(qw).dequantize())


def test_quantized_weight_round_trip_from_real_weights() -> None:
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(1))
    spec = QuantSpec(bits=4, group_size=64)
    qw = QuantizedWeight(*quantize_weight(w, spec), spec)
    packed = pack_interchange(qw)
    deq = dequantize_interchange(packed, 64)
    assert torch.equal(deq, to_interchange_precision(qw).dequantize())
    # fp16 scales change the weights by far less than the quantization step.
    assert (deq - qw.dequantize()).abs().max() < 1e-3 * w.abs().max()


def test_group_size_minus_one_is_one_group_per_column() -> None:
    qw = _random_qw(16, 96, -1, True, False, 3)
    packed = pack_interchange(qw)
    assert packed.scales.shape == (1, 16) and packed.qzeros.shape == (1, 2)
    assert torch.equal(unpack_interchange(packed, -1).q, qw.q)


def test_symmetric_codes_are_offset_with_zero_eight() -> None:
    qw = _random_qw(8, 32, 32, False, False, 4)
    packed = pack_interchange(qw)
    assert torch.equal(unpack_int4(packed.qzeros), torch.full((1, 8), 8, dtype=torch.int32))
    assert torch.equal(unpack_int4(packed.qweight).t(), qw.q + 8)
    with pytest.raises(AWQInputError, match="not all 8"):
        asym = _random_qw(8, 32, 32, True, False, 5)
        unpack_interchange(pack_interchange(asym), 32, zero_point=False)


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_other_bit_widths_are_refused(bits: int) -> None:
    spec = QuantSpec(bits=bits, group_size=64)
    w = torch.randn(16, 128)
    qw = QuantizedWeight(*quantize_weight(w, spec), spec)
    with pytest.raises(AWQInputError, match=f"cannot pack {bits}-bit codes.*4-bit codes only"):
        pack_interchange(qw)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(AWQInputError, match="not a multiple of 8"):
        pack_int4(torch.zeros(2, 12, dtype=torch.int32))
    with pytest.raises(AWQInputError, match=r"\[0, 15\]"):
        pack_int4(torch.full((1, 8), 16, dtype=torch.int32))
    with pytest.raises(AWQInputError, match="integer codes"):
        pack_int4(torch.zeros(1, 8))
    with pytest.raises(AWQInputError, match="int32"):
        unpack_int4(torch.zeros(1, 1, dtype=torch.int64))
    qw = _random_qw(12, 64, 32, True, False, 6)  # N = 12 is not a multiple of 8
    with pytest.raises(AWQInputError, match="out_features 12 is not a multiple of 8"):
        pack_interchange(qw)
    good = pack_interchange(_random_qw(16, 64, 32, True, False, 7))
    with pytest.raises(AWQInputError, match="qzeros: expected shape"):
        InterchangeTensors(good.qweight, good.qzeros[:1], good.scales).validate(32)
    with pytest.raises(AWQInputError, match="scales: expected dtype torch.float16"):
        InterchangeTensors(good.qweight, good.qzeros, good.scales.float()).validate(32)
    with pytest.raises(AWQInputError, match="g_idx: group indices"):
        InterchangeTensors(good.qweight, good.qzeros, good.scales, torch.full((64,), 5, dtype=torch.int32)).validate(32)
    big = _random_qw(8, 32, 32, True, False, 8)
    big.scales[0, 0] = 1e6  # overflows float16
    with pytest.raises(AWQInputError, match="overflow float16"):
        pack_interchange(big)
