"""CPU evidence that the device dequantization is right: csrc/dequant.cuh emulated bit for bit in numpy.

The magic constants are parsed from the CUDA header by name, lop3/byte_perm are emulated from their
PTX definitions (truth table / selector nibbles), fp16 and bf16 arithmetic is emulated with one
round-to-nearest-even per instruction (what the ``.rn`` PTX ops do). The emulated pairs are then
checked against ``((q - z) * s)`` rounded once to the dtype, for every code and zero point, and the
register pairs are placed where the ``mma.m16n8k16`` B fragment (PTX ISA) and the GEMV lane mapping
expect them, on weights packed by :func:`pack_kernel`.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from awq_ext.pack.kernel_layout import pack_kernel, padded_shape

HEADER = Path(__file__).resolve().parents[2] / "csrc" / "dequant.cuh"


def _constants() -> dict[str, int]:
    text = HEADER.read_text()
    found = {name: int(val, 16) for name, val in re.findall(r"constexpr uint32_t (k\w+) = (0x[0-9a-fA-F]+)u;", text)}
    found.update({name: int(val, 16) for name, val in re.findall(r"constexpr int (k\w+) = (0x[0-9a-fA-F]+);", text)})
    return found


C = _constants()
U32 = np.uint64  # hold 32-bit words in uint64 to keep numpy from overflowing on shifts


# ---- PTX primitives ---------------------------------------------------------------------------------

def lop3(a: np.ndarray, b: int | np.ndarray, c: int | np.ndarray, lut: int) -> np.ndarray:
    """lop3.b32 from its definition: bit i of the result is bit (a_i << 2 | b_i << 1 | c_i) of lut."""
    a, b, c = (np.asarray(v, dtype=U32) & 0xFFFFFFFF for v in (a, b, c))
    out = np.zeros(np.broadcast(a, b, c).shape, dtype=U32)
    for bit in range(32):
        idx = (((a >> bit) & 1) << 2) | (((b >> bit) & 1) << 1) | ((c >> bit) & 1)
        out |= ((np.uint64(lut) >> idx) & 1) << np.uint64(bit)
    return out


def byte_perm(x: np.ndarray, y: np.ndarray | int, sel: int) -> np.ndarray:
    """__byte_perm(x, y, s): result byte i = byte (s >> 4i) & 7 of the 8-byte value {y, x}."""
    x = np.asarray(x, dtype=U32) & 0xFFFFFFFF
    y = np.asarray(y, dtype=U32) & 0xFFFFFFFF
    both = x | (y << np.uint64(32))
    out = np.zeros(np.broadcast(x, y).shape, dtype=U32)
    for i in range(4):
        src = (sel >> (4 * i)) & 7
        out |= ((both >> np.uint64(8 * src)) & 0xFF) << np.uint64(8 * i)
    return out


# ---- fp16 / bf16 halves, one rounding per op -----------------------------------------------------------

def _halves(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(u, dtype=U32)
    return (u & 0xFFFF).astype(np.uint16), ((u >> np.uint64(16)) & 0xFFFF).astype(np.uint16)


def _join(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return lo.astype(U32) | (hi.astype(U32) << np.uint64(16))


def f16_val(h: np.ndarray) -> np.ndarray:
    return h.view(np.float16).astype(np.float64)


def f16_bits(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).astype(np.float16).view(np.uint16)  # float64 -> fp16 is one RNE


def bf16_val(h: np.ndarray) -> np.ndarray:
    return (h.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def bf16_bits(v: np.ndarray) -> np.ndarray:
    f = np.asarray(v, dtype=np.float64)
    f32 = f.astype(np.float32)
    # every value the dequant produces before the last rounding is exact in fp32 (<= 16 significant bits)
    assert np.array_equal(f32.astype(np.float64), f), "intermediate not exact in fp32: emulation would double-round"
    b = f32.view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16  # round to nearest even
    return b.astype(np.uint16)


def op2(kind: str, fn, *args: np.ndarray) -> np.ndarray:
    """Apply fn lane-wise to the two halves of packed pairs, rounding once to fp16/bf16."""
    val, bits = (f16_val, f16_bits) if kind == "f16" else (bf16_val, bf16_bits)
    parts = [_halves(a) for a in args]
    lo = bits(fn(*[val(p[0]) for p in parts]))
    hi = bits(fn(*[val(p[1]) for p in parts]))
    return _join(lo, hi)


def hsub2(kind, a, b):
    return op2(kind, lambda x, y: x - y, a, b)


def hadd2(kind, a, b):
    return op2(kind, lambda x, y: x + y, a, b)


def hmul2(kind, a, b):
    return op2(kind, lambda x, y: x * y, a, b)


def hfma2(kind, a, b, c):
    return op2(kind, lambda x, y, z: x * y + z, a, b, c)


# ---- dequant.cuh, line by line -----------------------------------------------------------------------

def zc_even(kind, z):
    if kind == "f16":
        return hadd2(kind, z, C["kF16Magic"])
    return hfma2(kind, z, C["kBF16One"], C["kBF16Magic"])


def zc_odd(kind, z):
    if kind == "f16":
        return hsub2(kind, C["kF16NegMagic16"], z)
    return zc_even(kind, z)


def lows(a, b):
    return byte_perm(a, b, 0x5410)


def highs(a, b):
    return byte_perm(a, b, 0x7632)


def make_params(kind, s01, z01):
    s0, s1 = byte_perm(s01, 0, 0x1010), byte_perm(s01, 0, 0x3232)
    z0, z1 = byte_perm(z01, 0, 0x1010), byte_perm(z01, 0, 0x3232)
    return [s0, s0, s1, s1], [zc_even(kind, z0), zc_odd(kind, z0), zc_even(kind, z1), zc_odd(kind, z1)]


def make_params_rows(kind, s, z):
    scale = [lows(s[0], s[1]), lows(s[2], s[3]), highs(s[0], s[1]), highs(s[2], s[3])]
    zc = [zc_even(kind, lows(z[0], z[1])), zc_odd(kind, lows(z[2], z[3])),
          zc_even(kind, highs(z[0], z[1])), zc_odd(kind, highs(z[2], z[3]))]
    return scale, zc


def dequant_run(kind, w, params):
    scale, zc = params
    w = np.asarray(w, dtype=U32) & 0xFFFFFFFF
    lut = C["kAndOrLut"]
    if kind == "f16":
        r0 = lop3(w, C["kLoMask"], C["kF16Magic"], lut)
        r1 = lop3(w, C["kHiMask"], C["kF16Magic"], lut)
        w = w >> np.uint64(8)
        r2 = lop3(w, C["kLoMask"], C["kF16Magic"], lut)
        r3 = lop3(w, C["kHiMask"], C["kF16Magic"], lut)
        return [
            hmul2(kind, hsub2(kind, r0, zc[0]), scale[0]),
            hmul2(kind, hfma2(kind, r1, C["kF16Sixteenth"], zc[1]), scale[1]),
            hmul2(kind, hsub2(kind, r2, zc[2]), scale[2]),
            hmul2(kind, hfma2(kind, r3, C["kF16Sixteenth"], zc[3]), scale[3]),
        ]
    out = []
    for i in range(4):
        r = lop3(w >> np.uint64(4 * i), C["kLoMask"], C["kBF16Magic"], lut)
        d = hfma2(kind, zc[i], C["kBF16NegOne"], r)
        out.append(hfma2(kind, d, scale[i], C["kBF16NegZero"]))
    return out


# ---- helpers -------------------------------------------------------------------------------------------

TORCH_DTYPE = {"f16": torch.float16, "bf16": torch.bfloat16}


def to_bits(kind: str, x: torch.Tensor) -> np.ndarray:
    return x.to(TORCH_DTYPE[kind]).view(torch.int16).numpy().view(np.uint16)


def pair_values(kind: str, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _halves(u)
    val = f16_val if kind == "f16" else bf16_val
    return val(lo), val(hi)


def reference(kind: str, q: np.ndarray, z: np.ndarray, s_bits: np.ndarray) -> np.ndarray:
    """((q - z) * s) rounded once to the dtype, as float64."""
    val, bits = (f16_val, f16_bits) if kind == "f16" else (bf16_val, bf16_bits)
    return val(bits((q.astype(np.float64) - z) * val(s_bits)))


def nibbles_word(codes: np.ndarray) -> np.ndarray:
    """codes [..., 8] (nibble i = codes[..., i]) -> uint32 word."""
    w = np.zeros(codes.shape[:-1], dtype=U32)
    for i in range(8):
        w |= codes[..., i].astype(U32) << np.uint64(4 * i)
    return w


KINDS = ("f16", "bf16")


def test_constants_parsed_and_lut_is_and_or():
    for name in ("kLoMask", "kHiMask", "kF16Magic", "kF16Sixteenth", "kF16NegMagic16",
                 "kBF16Magic", "kBF16One", "kBF16NegOne", "kBF16NegZero", "kAndOrLut"):
        assert name in C, f"{name} missing from dequant.cuh"
    a, b, c = np.array([0xF0F0A5A5], dtype=U32), 0x0FF00FF0, 0x12345678
    assert lop3(a, b, c, C["kAndOrLut"])[0] == ((0xF0F0A5A5 & b) | c)
    # the magic values are what the comments claim
    assert f16_val(np.array([C["kF16Magic"] & 0xFFFF], dtype=np.uint16))[0] == 1024.0
    assert f16_val(np.array([C["kF16Sixteenth"] & 0xFFFF], dtype=np.uint16))[0] == 1 / 16
    assert bf16_val(np.array([C["kBF16Magic"] & 0xFFFF], dtype=np.uint16))[0] == 128.0


@pytest.mark.parametrize("kind", KINDS)
def test_every_code_and_zero_point(kind):
    """All 16 codes in every nibble position x all 16 zero points, for several scales per dtype."""
    rng = np.random.default_rng(0)
    codes = np.array([[(c + i) % 16 for i in range(8)] for c in range(16)])  # each code in each nibble
    zs = np.arange(16)
    scales = torch.tensor([1.0, 0.5, 3.0e-3, 7.25, -0.0123, 6.1e-5, 1000.0, float(rng.uniform(0, 1))])
    s_bits = to_bits(kind, scales)
    for s_a, s_b in zip(s_bits, np.roll(s_bits, 1)):
        for za in zs:
            zb = (za * 7 + 3) % 16
            z_bits = to_bits(kind, torch.tensor([float(za), float(zb)]))
            s01 = np.uint64(s_a) | (np.uint64(s_b) << np.uint64(16))
            z01 = np.uint64(z_bits[0]) | (np.uint64(z_bits[1]) << np.uint64(16))
            words = nibbles_word(codes)
            pairs = dequant_run(kind, words, make_params(kind, s01, z01))
            # pair p holds nibbles (p, p + 4); pairs 0, 1 use column a's (s, z), pairs 2, 3 column b's
            for p in range(4):
                lo, hi = pair_values(kind, pairs[p])
                s_col, z_col = (s_a, za) if p < 2 else (s_b, zb)
                np.testing.assert_array_equal(lo, reference(kind, codes[:, p], z_col, s_col))
                np.testing.assert_array_equal(hi, reference(kind, codes[:, p + 4], z_col, s_col))


@pytest.mark.parametrize("kind", KINDS)
def test_gptq_rows_params(kind):
    """make_params_rows: each of the four k rows brings its own (scale, zero) pair."""
    rng = np.random.default_rng(1)
    words = rng.integers(0, 2**32, size=64, dtype=np.uint64)
    s = rng.uniform(-0.1, 0.1, size=(4, 2))
    z = rng.integers(0, 16, size=(4, 2))
    s_bits = to_bits(kind, torch.tensor(s))
    z_bits = to_bits(kind, torch.tensor(z, dtype=torch.float64))
    sv = [np.uint64(s_bits[r, 0]) | (np.uint64(s_bits[r, 1]) << np.uint64(16)) for r in range(4)]
    zv = [np.uint64(z_bits[r, 0]) | (np.uint64(z_bits[r, 1]) << np.uint64(16)) for r in range(4)]
    pairs = dequant_run(kind, words, make_params_rows(kind, sv, zv))
    nib = [((words >> np.uint64(4 * i)) & 0xF).astype(np.int64) for i in range(8)]
    # pair p = (nibble p, nibble p+4); rows: pair 0 -> (a, b), pair 1 -> (c, d); tile 0 for p < 2, tile 1 after
    rows_of = {0: (0, 1), 1: (2, 3), 2: (0, 1), 3: (2, 3)}
    for p in range(4):
        col = 0 if p < 2 else 1
        r_lo, r_hi = rows_of[p]
        lo, hi = pair_values(kind, pairs[p])
        np.testing.assert_array_equal(lo, reference(kind, nib[p], z[r_lo, col], s_bits[r_lo, col]))
        np.testing.assert_array_equal(hi, reference(kind, nib[p + 4], z[r_hi, col], s_bits[r_hi, col]))


def _packed_problem(kind: str, n: int, k: int, g: int, seed: int, gidx: bool):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    ng = k // g
    scales = (torch.rand(n, ng, generator=gen) * 0.02 + 1e-3).to(TORCH_DTYPE[kind]).float()
    zeros = torch.randint(0, 16, (n, ng), generator=gen).float()
    g_idx = torch.randperm(k, generator=gen).to(torch.int32) // g if gidx else None
    packed = pack_kernel(q, scales, zeros, g, g_idx=g_idx, dtype=TORCH_DTYPE[kind])
    gi = g_idx.long() if gidx else torch.arange(k) // g
    ref = (q.double() - zeros.double()[:, gi]) * scales.double()[:, gi]
    ref = ref.to(TORCH_DTYPE[kind]).double().numpy()  # one rounding to the dtype
    return packed, ref


def _u32(x: torch.Tensor) -> np.ndarray:
    return x.numpy().astype(np.int64).astype(np.uint64) & 0xFFFFFFFF


def _scale_pair(packed, kind, row: int, col: int):
    s = packed["scales"][row].view(torch.int16).numpy().view(np.uint16)
    z = packed["zeros"][row].view(torch.int16).numpy().view(np.uint16)
    return (np.uint64(s[col]) | (np.uint64(s[col + 1]) << np.uint64(16)),
            np.uint64(z[col]) | (np.uint64(z[col + 1]) << np.uint64(16)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gidx", [False, True])
def test_mma_b_fragments_from_packed_layout(kind, gidx):
    """What the GEMM does per lane, checked against the PTX m16n8k16 B-fragment layout.

    PTX ISA (mma.m16n8k16, .f16/.bf16 B): register r in {0, 1} of a lane holds B[k][n] for
    k = 2 * (lane % 4) + 8 r + {0, 1} (low, high half) and n = lane / 4. Here B[k][n] = W[n0 + n, k0 + k].
    """
    n, k, g = 48, 192, 32
    packed, ref = _packed_problem(kind, n, k, g, seed=3, gidx=gidx)
    n_pad, k_pad = padded_shape(n, k)
    words = _u32(packed["qweight"])
    g_idx = packed["g_idx"].numpy() if gidx else None
    for kt in range(k // 16):
        for nt in range(n_pad // 16):
            for lane in range(32):
                gq, t = lane >> 2, lane & 3
                col = nt * 16 + 2 * gq
                if gidx:
                    rows = [g_idx[kt * 16 + 2 * t + d] for d in (0, 1, 8, 9)]
                    sz = [_scale_pair(packed, kind, r, col) for r in rows]
                    params = make_params_rows(kind, [p[0] for p in sz], [p[1] for p in sz])
                else:
                    params = make_params(kind, *_scale_pair(packed, kind, (kt * 16) // g, col))
                b = dequant_run(kind, words[kt, nt, lane], params)
                for tile in range(2):
                    for r in range(2):
                        lo, hi = pair_values(kind, b[2 * tile + r])
                        nn = nt * 16 + 8 * tile + gq
                        kk = kt * 16 + 2 * t + 8 * r
                        if nn < n:
                            assert lo == ref[nn, kk] and hi == ref[nn, kk + 1], (kt, nt, lane, tile, r)


@pytest.mark.parametrize("kind", KINDS)
def test_gemv_lane_mapping(kind):
    """GEMV: lane L loads 16 bytes at word (kt * NB + 4 strip + L / 8) * 32 + 4 (L % 8); word i covers
    k rows 2i, 2i+1 (pair 0/2), 2i+8, 2i+9 (pair 1/3) of columns n_a = 16 nblk + L % 8 and n_a + 8."""
    n, k, g = 80, 128, 64
    packed, ref = _packed_problem(kind, n, k, g, seed=4, gidx=False)
    n_pad, _ = padded_shape(n, k)
    nb = n_pad // 16
    flat = _u32(packed["qweight"]).reshape(-1)
    for kt in range(k // 16):
        for strip in range(-(-n_pad // 64)):
            for lane in range(32):
                nblk = strip * 4 + lane // 8
                if nblk >= nb:
                    continue
                base = (kt * nb + nblk) * 32 + 4 * (lane % 8)
                na = nblk * 16 + lane % 8
                params = make_params(kind, *_scale_pair(packed, kind, (kt * 16) // g, nblk * 16 + 2 * (lane % 8)))
                for i in range(4):
                    b = dequant_run(kind, flat[base + i], params)
                    for p, (col, dk) in enumerate(((na, 0), (na, 8), (na + 8, 0), (na + 8, 8))):
                        lo, hi = pair_values(kind, b[p])
                        kk = kt * 16 + 2 * i + dk
                        if col < n:
                            assert lo == ref[col, kk] and hi == ref[col, kk + 1]
