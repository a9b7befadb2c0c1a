"""The kernel layout "w4tc-v1": exact round trip, the documented bit order, padding, validation."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from awq_ext.errors import AWQInputError
from awq_ext.pack.kernel_layout import (
    KERNEL_W4_TC,
    dequantize_kernel_reference,
    pack_kernel,
    padded_shape,
    unpack_kernel,
)


def _problem(n: int, k: int, g: int, seed: int, dtype: torch.dtype, gidx: bool):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    ng = k // g
    scales = (torch.randn(n, ng, generator=gen) * 0.05).to(dtype).float()  # representable in dtype
    zeros = torch.randint(0, 16, (n, ng), generator=gen).float()
    g_idx = (torch.randperm(k, generator=gen) // g).to(torch.int32) if gidx else None
    return q, scales, zeros, g_idx


@settings(max_examples=40, deadline=None)
@given(
    n_blocks=st.integers(1, 6),
    n_extra=st.sampled_from([0, 8]),
    k_groups=st.integers(1, 5),
    g=st.sampled_from([32, 64, 128]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    gidx=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact(n_blocks, n_extra, k_groups, g, dtype, gidx, seed):
    n, k = 16 * n_blocks + n_extra, g * k_groups
    q, scales, zeros, g_idx = _problem(n, k, g, seed, dtype, gidx)
    packed = pack_kernel(q, scales, zeros, g, g_idx=g_idx, dtype=dtype)
    q2, s2, z2, g2, gi2 = unpack_kernel(packed)
    assert torch.equal(q2, q)
    assert torch.equal(s2, scales)
    assert torch.equal(z2, zeros)
    assert g2 == g
    if gidx:
        assert torch.equal(gi2, g_idx)
    else:
        assert gi2 is None
    n_pad, k_pad = padded_shape(n, k)
    assert packed["qweight"].shape == (k_pad // 16, n_pad // 16, 32)
    assert packed["scales"].dtype == dtype and packed["scales"].shape[1] == n_pad


def test_documented_bit_order():
    """Word [kt, nt, lane], nibble i = e[nibble_order[i]], e as in the KernelW4TCLayout docstring."""
    n, k, g = 32, 64, 32
    q, scales, zeros, _ = _problem(n, k, g, 7, torch.float16, False)
    packed = pack_kernel(q, scales, zeros, g)
    words = packed["qweight"].to(torch.int64) & 0xFFFFFFFF
    order = KERNEL_W4_TC.nibble_order
    for kt in range(k // 16):
        for nt in range(n // 16):
            for lane in range(32):
                gq, t = lane >> 2, lane & 3
                n0, k0 = 16 * nt, 16 * kt
                e = [q[n0 + gq, k0 + 2 * t], q[n0 + gq, k0 + 2 * t + 1], q[n0 + gq, k0 + 2 * t + 8],
                     q[n0 + gq, k0 + 2 * t + 9], q[n0 + 8 + gq, k0 + 2 * t], q[n0 + 8 + gq, k0 + 2 * t + 1],
                     q[n0 + 8 + gq, k0 + 2 * t + 8], q[n0 + 8 + gq, k0 + 2 * t + 9]]
                w = int(words[kt, nt, lane])
                assert [(w >> (4 * i)) & 0xF for i in range(8)] == [int(e[order[i]]) for i in range(8)]
    # pair-interleaved scale columns: position 16 nt + 2 g + j holds column 16 nt + 8 j + g
    for col in range(n):
        nt, r = divmod(col, 16)
        j, gq = divmod(r, 8)
        assert packed["scales"][0, 16 * nt + 2 * gq + j] == scales[col, 0].half()


def test_padding_is_zero_and_reference_dequant_matches_quantizer():
    n, k, g = 24, 96, 32  # N_pad 32, K_pad 128: both padded
    q, scales, zeros, _ = _problem(n, k, g, 11, torch.float16, False)
    packed = pack_kernel(q, scales, zeros, g)
    n_pad, k_pad = padded_shape(n, k)
    assert (n_pad, k_pad) == (32, 128)
    # columns 24..31 are 16 + 8 j + g with j = 1: interleaved positions 16 + 2 g + 1
    assert torch.all(packed["scales"][:, 17::2] == 0) and torch.all(packed["scales"][k // g:, :] == 0)
    assert torch.all(packed["scales"][: k // g, :n:2] != 0)
    w = dequantize_kernel_reference(packed)
    gi = torch.arange(k) // g
    assert torch.equal(w, (q.float() - zeros[:, gi]) * scales[:, gi])


def test_bits_per_weight_g128():
    n, k, g = 4096, 4096, 128
    q = torch.zeros(n, k, dtype=torch.int32)
    packed = pack_kernel(q, torch.ones(n, k // g), torch.zeros(n, k // g), g)
    total_bits = 8 * sum(packed[key].numel() * packed[key].element_size() for key in ("qweight", "scales", "zeros"))
    assert total_bits / (n * k) == pytest.approx(4.25)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.update(q=a["q"] + 16), "0..15"),
        (lambda a: a.update(group_size=16), "group_size"),
        (lambda a: a.update(zeros=None), "zeros"),
        (lambda a: a.update(zeros=a["zeros"] + 0.5), "integer"),
        (lambda a: a.update(scales=a["scales"][:, :1]), "scales must be"),
        (lambda a: a.update(dtype=torch.float32), "dtype"),
        (lambda a: a.update(g_idx=torch.full((64,), 9, dtype=torch.int32)), "g_idx"),
    ],
)
def test_bad_input_raises_clearly(mutate, match):
    q, scales, zeros, _ = _problem(16, 64, 32, 0, torch.float16, False)
    args = {"q": q, "scales": scales, "zeros": zeros, "group_size": 32, "g_idx": None, "dtype": torch.float16}
    mutate(args)
    with pytest.raises(AWQInputError, match=match):
        pack_kernel(**args)


def test_unpack_rejects_other_versions():
    q, scales, zeros, _ = _problem(16, 64, 32, 0, torch.float16, False)
    packed = pack_kernel(q, scales, zeros, 32)
    packed["meta"] = packed["meta"].clone()
    packed["meta"][0] = 99
    with pytest.raises(AWQInputError, match="version"):
        unpack_kernel(packed)
