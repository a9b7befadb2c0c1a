// Online INT4 -> fp16/bf16 dequantization in registers for the kernel layout "w4tc-v1"
// (awq_ext/pack/kernel_layout.py, KernelW4TCLayout). No lookup tables, no shuffles.
//
// One 32-bit word holds eight codes; nibble i (bits 4i..4i+3) and nibble i+4 form pair i, which is
// one fp16x2/bf16x2 mma B-fragment register:
//   pair 0 = (e0, e1) -> b0 of n8-tile 0     pair 1 = (e2, e3) -> b1 of n8-tile 0
//   pair 2 = (e4, e5) -> b0 of n8-tile 1     pair 3 = (e6, e7) -> b1 of n8-tile 1
// fp16: (w & 0x000f000f) | 0x64006400 is the fp16x2 (1024 + c_lo, 1024 + c_hi): 1024's mantissa ulp is 1,
//       so the 4-bit code lands in the mantissa. (w & 0x00f000f0) | 0x64006400 is (1024 + 16 c, ...);
//       fma(x, 1/16, -(64 + z)) = c - z exactly. Then w >>= 8 gives pairs 2 and 3 the same way.
// bf16: 7 mantissa bits, so 0x4300 = 128 (ulp 1) is the magic and every pair needs its own shift.
// In both: (magic + c) - (magic + z) = c - z exactly, times s: one rounding, identical to ((q - z) * s).to(T).
//
// tests/kernels/test_dequant_emulation.py parses the k* constants below by name and emulates this
// file bit for bit in numpy: keep names and values in sync with it.
#pragma once

#include <cstdint>

#include "ptx.cuh"

namespace awq {

constexpr uint32_t kLoMask = 0x000f000fu;      // the low nibble of each 16-bit half
constexpr uint32_t kHiMask = 0x00f000f0u;      // the second nibble of each half, left in place (fp16 only)
constexpr uint32_t kF16Magic = 0x64006400u;    // fp16x2 (1024, 1024)
constexpr uint32_t kF16Sixteenth = 0x2c002c00u;  // fp16x2 (1/16, 1/16)
constexpr uint32_t kF16NegMagic16 = 0xd400d400u;  // fp16x2 (-64, -64) = -1024 / 16
constexpr uint32_t kBF16Magic = 0x43004300u;   // bf16x2 (128, 128)
constexpr uint32_t kBF16One = 0x3f803f80u;     // bf16x2 (1, 1)
constexpr uint32_t kBF16NegOne = 0xbf80bf80u;  // bf16x2 (-1, -1)
constexpr uint32_t kBF16NegZero = 0x80008000u; // bf16x2 (-0, -0): a * b = fma(a, b, -0)
constexpr int kAndOrLut = 0xEA;                // lop3 truth table of (a & b) | c

// Per-pair dequantization constants: pair i = (code_pair - zc[i]) * scale[i]  (fp16 odd pairs: fma form).
struct PairParams {
  uint32_t scale[4];
  uint32_t zc[4];
};

// Byte permutes build pairs from two 16-bit halves without caring whether they are fp16 or bf16.
__device__ __forceinline__ uint32_t lows(uint32_t a, uint32_t b) { return __byte_perm(a, b, 0x5410); }
__device__ __forceinline__ uint32_t highs(uint32_t a, uint32_t b) { return __byte_perm(a, b, 0x7632); }

template <typename T>
struct Dequant;

template <>
struct Dequant<__half> {
  // zero pair (z for two halves) -> constant for an even pair (1024 + z) or an odd pair -(64 + z).
  __device__ __forceinline__ static uint32_t zc_even(uint32_t z) { return hadd2_f16(z, kF16Magic); }
  __device__ __forceinline__ static uint32_t zc_odd(uint32_t z) {
    return hsub2_f16(kF16NegMagic16, z);  // -64 - z, exact (one HADD2 with an immediate)
  }
  static constexpr uint32_t kMagic = kF16Magic;
  // magic: kMagic, passed in so a hot loop can hold it in a pinned register (ptxas re-creates it per step)
  __device__ __forceinline__ static void run(uint32_t w, const PairParams& p, uint32_t (&b)[4],
                                             uint32_t magic = kMagic) {
    const uint32_t r0 = lop3<kAndOrLut>(w, kLoMask, magic);
    const uint32_t r1 = lop3<kAndOrLut>(w, kHiMask, magic);
    w >>= 8;
    const uint32_t r2 = lop3<kAndOrLut>(w, kLoMask, magic);
    const uint32_t r3 = lop3<kAndOrLut>(w, kHiMask, magic);
    b[0] = hmul2_f16(hsub2_f16(r0, p.zc[0]), p.scale[0]);
    b[1] = hmul2_f16(hfma2_f16(r1, kF16Sixteenth, p.zc[1]), p.scale[1]);
    b[2] = hmul2_f16(hsub2_f16(r2, p.zc[2]), p.scale[2]);
    b[3] = hmul2_f16(hfma2_f16(r3, kF16Sixteenth, p.zc[3]), p.scale[3]);
  }
};

template <>
struct Dequant<__nv_bfloat16> {
  __device__ __forceinline__ static uint32_t zc_even(uint32_t z) { return hfma2_bf16(z, kBF16One, kBF16Magic); }
  __device__ __forceinline__ static uint32_t zc_odd(uint32_t z) { return zc_even(z); }
  static constexpr uint32_t kMagic = kBF16Magic;
  __device__ __forceinline__ static void run(uint32_t w, const PairParams& p, uint32_t (&b)[4],
                                             uint32_t magic = kMagic) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t r = lop3<kAndOrLut>(w >> (4 * i), kLoMask, magic);
      const uint32_t d = hfma2_bf16(p.zc[i], kBF16NegOne, r);  // (128 + c) - (128 + z), exact
      b[i] = hfma2_bf16(d, p.scale[i], kBF16NegZero);          // * s, one rounding
    }
  }
};

// Reorder-free (AWQ) parameters of one group for two columns: s01/z01 hold (tile-0 column, tile-1 column), as
// stored by the pair-interleaved scale layout. This is what a kernel keeps in registers per group (3 words):
// the zero constants are computed on both columns at once, and the per-pair broadcasts are left to expand(),
// called where the word is dequantized, so they fold into the .H0_H0 / .H1_H1 operand selectors of the
// dequantizing instructions (bcast_lo/hi, ptx.cuh) and cost nothing. (Kept broadcast in registers across a
// barrier, ptxas materializes them with PRMTs.)
struct GroupParams {
  uint32_t scale;    // (s tile-0 column, s tile-1 column)
  uint32_t zc_even;  // zc_even of both columns
  uint32_t zc_odd;   // zc_odd of both columns
};

template <typename T>
__device__ __forceinline__ GroupParams make_group(uint32_t s01, uint32_t z01) {
  return GroupParams{s01, Dequant<T>::zc_even(z01), Dequant<T>::zc_odd(z01)};
}

// pairs 0, 1 belong to the tile-0 column, pairs 2, 3 to the tile-1 column
__device__ __forceinline__ PairParams expand(const GroupParams& g) {
  PairParams p;
  p.scale[0] = p.scale[1] = bcast_lo(g.scale);
  p.scale[2] = p.scale[3] = bcast_hi(g.scale);
  p.zc[0] = bcast_lo(g.zc_even);
  p.zc[1] = bcast_lo(g.zc_odd);
  p.zc[2] = bcast_hi(g.zc_even);
  p.zc[3] = bcast_hi(g.zc_odd);
  return p;
}

template <typename T>
__device__ __forceinline__ PairParams make_params(uint32_t s01, uint32_t z01) {
  return expand(make_group<T>(s01, z01));
}

// GPTQ-R parameters: every k row of the word may sit in a different group. s_r/z_r are the
// (tile-0, tile-1) pairs of rows a = 2t, b = 2t+1, c = 2t+8, d = 2t+9 of the 16-row block.
template <typename T>
__device__ __forceinline__ PairParams make_params_rows(const uint32_t (&s)[4], const uint32_t (&z)[4]) {
  PairParams p;
  p.scale[0] = lows(s[0], s[1]);
  p.scale[1] = lows(s[2], s[3]);
  p.scale[2] = highs(s[0], s[1]);
  p.scale[3] = highs(s[2], s[3]);
  p.zc[0] = Dequant<T>::zc_even(lows(z[0], z[1]));
  p.zc[1] = Dequant<T>::zc_odd(lows(z[2], z[3]));
  p.zc[2] = Dequant<T>::zc_even(highs(z[0], z[1]));
  p.zc[3] = Dequant<T>::zc_odd(highs(z[2], z[3]));
  return p;
}

}  // namespace awq
