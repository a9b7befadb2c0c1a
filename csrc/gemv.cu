// W4A16 GEMV for m <= kGemvMaxM (decode): bandwidth-bound, so every lane streams 16-byte weight loads (L2
// evict-first) and keeps a whole chunk of kGemvChunk of them in flight before using any; the math is
// fp16x2/bf16x2 (HFMA2): a pair of weights is dequantized with two half2 ops (zero point folded into the
// magic-number subtraction, then the scale; dequant.cuh, the exact rounding of the reference) and multiplied
// into the activations with one more. Both the reorder-free AWQ path and the GPTQ-R path (scales/zeros
// gathered through g_idx per k row) are this kernel.
//
// Lane mapping on the kernel layout "w4tc-v1": a warp reads the four consecutive 16x16 blocks of one k16
// row of its 64-column strip - 512 contiguous bytes - and lane L takes bytes [16L, 16L + 16): the words of
// lanes 4(L%8) .. 4(L%8)+3 of block L/8. Those four words hold all 16 k rows of columns
// n_a = 16 (4 strip + L/8) + L%8 and n_b = n_a + 8 (word i: k rows 2i, 2i+1, 2i+8, 2i+9), so each lane
// finishes whole dot products without shuffles; the 8 warps of the CTA then reduce in shared memory.
// K is cut into chunks of kGemvChunk k16 rows (64 k, so a chunk lies in one group for G >= 64 and in two
// for G = 32); warps take the chunks of their split-K slice round-robin.
//
// Precision (the one place this kernel rounds differently from the fp32 reference): per k16 row and m, the
// 16 products of a column are accumulated in the two halves of one fp16x2/bf16x2 register (8 products each,
// one rounding per HFMA2), then both halves are added to an fp32 accumulator. With u the unit roundoff of T
// (2^-11 fp16, 2^-8 bf16) and gamma_8 = 8u / (1 - 8u), the error of an output before its final rounding is
//   |y_kernel - y| <= gamma_8 * sum_k |w_k x_k| + (fp32 terms, below 2^-24 * (K / 8 + 8) * sum_k |w_k x_k|)
// where w_k is the weight rounded to T exactly as the reference rounds it; the final store rounds once more
// (<= u |y|). tests/kernels/test_simt_emulation.py checks this bound on random data. A run is one k16 row,
// so the half2 partial sums stay within 8 products of the fp32 accumulator and never overflow for outputs
// that fit in T.
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "awq_kernels.h"
#include "dequant.cuh"
#include "launch_common.h"
#include "ptx.cuh"
#include "splitk.cuh"
#include "tile_configs.cuh"

namespace awq {
namespace {

template <typename T>
struct Math2;
template <>
struct Math2<__half> {
  __device__ __forceinline__ static uint32_t fma(uint32_t a, uint32_t b, uint32_t c) { return hfma2_f16(a, b, c); }
  __device__ __forceinline__ static float sum_halves(uint32_t v) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&v));
    return f.x + f.y;
  }
  __device__ __forceinline__ static void store(__half* p, float v) { *p = __float2half_rn(v); }
};
template <>
struct Math2<__nv_bfloat16> {
  __device__ __forceinline__ static uint32_t fma(uint32_t a, uint32_t b, uint32_t c) { return hfma2_bf16(a, b, c); }
  __device__ __forceinline__ static float sum_halves(uint32_t v) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
    return f.x + f.y;
  }
  __device__ __forceinline__ static void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
};

// G: group size (32/64/128) for the AWQ path, 0 for GPTQ-R (GIDX = true).
template <typename T, int MAXM, int G, bool GIDX>
__global__ void __launch_bounds__(kGemvThreads, gemv_min_ctas(MAXM, GIDX)) w4a16_gemv_kernel(const W4Args p) {
  constexpr int WARPS = kGemvWarps, U = kGemvChunk;
  static_assert(GIDX || G == 32 || G == 64 || G == 128, "group size");
  const T* __restrict__ A = static_cast<const T*>(p.a);
  const T* __restrict__ scales = static_cast<const T*>(p.scales);
  const T* __restrict__ zeros = static_cast<const T*>(p.zeros);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int jb = lane >> 3, gq = lane & 7;
  const int nblocks = p.n_pad / 16;
  // Lanes past the last 16-column block (only in the last strip) read block nblocks - 1 instead of branching:
  // their sums land in columns >= n_pad, which are never stored.
  const int nblk = min(static_cast<int>(blockIdx.x) * (kGemvStrip / 16) + jb, nblocks - 1);
  const int pair_col = nblk * 16 + 2 * gq;  // (n_a, n_b) scale/zero pair in the interleaved order

  const int chunks = p.k_pad / (16 * U);
  const int per_split = (chunks + p.splits - 1) / p.splits;
  const int cbeg = blockIdx.y * per_split;
  const int cend = min(chunks, cbeg + per_split);

  const uint64_t policy = evict_first_policy();
  const int row_v4 = nblocks * 8;  // 16-byte words per k16 row of the layout
  const uint4* wlane = reinterpret_cast<const uint4*>(p.qweight) + nblk * 8 + gq;
  const unsigned int* slane = reinterpret_cast<const unsigned int*>(scales + pair_col);
  const unsigned int* zlane = reinterpret_cast<const unsigned int*>(zeros + pair_col);
  const int pair_stride = p.n_pad / 2;  // 32-bit (scale pair) words per group row
  float acc[MAXM][2];
#pragma unroll
  for (int m = 0; m < MAXM; ++m) acc[m][0] = acc[m][1] = 0.f;

  // Per-warp running sources, advanced by WARPS chunks per iteration (no per-chunk address arithmetic).
  const uint32_t w_row_bytes = static_cast<uint32_t>(row_v4) * 16;
  const char* wc = reinterpret_cast<const char*>(wlane) + static_cast<size_t>(cbeg + warp) * U * w_row_bytes;
  const size_t w_step = static_cast<size_t>(WARPS) * U * w_row_bytes;
  for (int c = cbeg + warp; c < cend; c += WARPS, wc += w_step) {
    const int kt0 = c * U;
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; ++u)  // U x 512 B per warp in flight
      wv[u] = ld_stream_v4(offset_wide(wc, u, w_row_bytes), policy);
    // AWQ: the chunk's 64 rows lie in one group (G >= 64) or two (G = 32: k16 rows 0-1 and 2-3).
    constexpr int NGRP = GIDX ? 0 : (G == 32 ? 2 : 1);
    PairParams grp[NGRP > 0 ? NGRP : 1];
#pragma unroll
    for (int h = 0; h < NGRP; ++h) {
      const int off = ((kt0 * 16 + 32 * h) / (GIDX ? 1 : G)) * pair_stride;
      grp[h] = make_params<T>(__ldg(slane + off), __ldg(zlane + off));
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int kt = kt0 + u;
      const uint32_t words[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
      uint32_t wd[4][4];  // [word i][pair]: pairs 0,1 -> column n_a (k 2i..2i+1, 2i+8..2i+9); 2,3 -> n_b
      if constexpr (!GIDX) {
#pragma unroll
        for (int i = 0; i < 4; ++i) Dequant<T>::run(words[i], grp[NGRP == 2 ? (u >> 1) : 0], wd[i]);
      } else {
        const int4* gp = reinterpret_cast<const int4*>(p.g_idx + kt * 16);
        const int4 g0 = __ldg(gp), g1 = __ldg(gp + 1), g2 = __ldg(gp + 2), g3 = __ldg(gp + 3);
        const int gi[16] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w,
                            g2.x, g2.y, g2.z, g2.w, g3.x, g3.y, g3.z, g3.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int rows[4] = {gi[2 * i], gi[2 * i + 1], gi[2 * i + 8], gi[2 * i + 9]};
          uint32_t sv[4], zv[4];
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            sv[r] = __ldg(slane + rows[r] * pair_stride);
            zv[r] = __ldg(zlane + rows[r] * pair_stride);
          }
          Dequant<T>::run(words[i], make_params_rows<T>(sv, zv), wd[i]);
        }
      }
      const int k0 = kt * 16;
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m >= p.m) break;  // uniform
        const T* xr = A + m * p.k + k0;
        // K % 8 == 0, so each 8-element half of the k16 step is wholly inside or outside [0, K)
        const uint4 x0 = k0 < p.k ? __ldg(reinterpret_cast<const uint4*>(xr)) : make_uint4(0u, 0u, 0u, 0u);
        const uint4 x1 = k0 + 8 < p.k ? __ldg(reinterpret_cast<const uint4*>(xr + 8)) : make_uint4(0u, 0u, 0u, 0u);
        const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};  // pair q: k 2q, 2q+1
        uint32_t ha = 0u, hb = 0u;  // the run: this k16 row's products, 8 per half
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          ha = Math2<T>::fma(wd[i][0], xw[i], ha);
          ha = Math2<T>::fma(wd[i][1], xw[i + 4], ha);
          hb = Math2<T>::fma(wd[i][2], xw[i], hb);
          hb = Math2<T>::fma(wd[i][3], xw[i + 4], hb);
        }
        acc[m][0] += Math2<T>::sum_halves(ha);
        acc[m][1] += Math2<T>::sum_halves(hb);
      }
    }
  }

  __shared__ float red[WARPS][MAXM][kGemvStrip];
#pragma unroll
  for (int m = 0; m < MAXM; ++m) {
    red[warp][m][16 * jb + gq] = acc[m][0];
    red[warp][m][16 * jb + 8 + gq] = acc[m][1];
  }
  __syncthreads();

  T* C = static_cast<T*>(p.c);
  const bool split = p.splits > 1;
  const int mm = p.m < MAXM ? p.m : MAXM;
  for (int idx = tid; idx < mm * kGemvStrip; idx += kGemvThreads) {
    const int m = idx / kGemvStrip, c = idx % kGemvStrip;
    const int n = blockIdx.x * kGemvStrip + c;
    if (n >= p.n) continue;
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w) s += red[w][m][c];
    if (!split) {
      Math2<T>::store(C + static_cast<size_t>(m) * p.n + n, s);
    } else {
      p.partials[(static_cast<size_t>(blockIdx.y) * p.m + m) * p.n + n] = s;
    }
  }
  if (!split) return;
  if (!splitk_arrive(p.counters + blockIdx.x, p.splits)) return;
  for (int idx = tid; idx < mm * kGemvStrip; idx += kGemvThreads) {
    const int m = idx / kGemvStrip, c = idx % kGemvStrip;
    const int n = blockIdx.x * kGemvStrip + c;
    if (n >= p.n) continue;
    float s = 0.f;
    for (int z = 0; z < p.splits; ++z) s += __ldcg(p.partials + (static_cast<size_t>(z) * p.m + m) * p.n + n);
    Math2<T>::store(C + static_cast<size_t>(m) * p.n + n, s);
  }
}

template <typename T, int MAXM, int G, bool GIDX>
int launch_gemv(const W4Args& a, cudaStream_t stream) {
  const dim3 grid((a.n_pad + kGemvStrip - 1) / kGemvStrip, a.splits);
  w4a16_gemv_kernel<T, MAXM, G, GIDX><<<grid, kGemvThreads, 0, stream>>>(a);
  return detail::capture(cudaGetLastError());
}

// MAXM instantiations 1, 2, 4, 8 (gemv_rows): the accumulators are unrolled per row, so m = 1 (plain decode)
// pays for exactly one row; the others round m up.
template <typename T, int G, bool GIDX>
int dispatch_m(const W4Args& a, cudaStream_t stream) {
  switch (gemv_rows(a.m)) {
    case 1: return launch_gemv<T, 1, G, GIDX>(a, stream);
    case 2: return launch_gemv<T, 2, G, GIDX>(a, stream);
    case 4: return launch_gemv<T, 4, G, GIDX>(a, stream);
    default: return launch_gemv<T, 8, G, GIDX>(a, stream);
  }
}

template <typename T>
int dispatch_variant(const W4Args& a, cudaStream_t stream) {
  if (a.g_idx != nullptr) return dispatch_m<T, 0, true>(a, stream);
  switch (a.group_size) {
    case 32: return dispatch_m<T, 32, false>(a, stream);
    case 64: return dispatch_m<T, 64, false>(a, stream);
    case 128: return dispatch_m<T, 128, false>(a, stream);
    default: return kErrGroupSize;
  }
}

}  // namespace

Plan plan_gemv(int m, int n_pad, int k_pad, const Device& dev, int split_request, bool gptq_r) {
  Plan plan{1, 0, 0, 0, 0.0, 0.0};
  if (m <= 0 || n_pad <= 0 || k_pad <= 0) return plan;
  const int strips = (n_pad + kGemvStrip - 1) / kGemvStrip;
  const int chunks = k_pad / (16 * kGemvChunk);
  const int maxm = gemv_rows(m);
  const int smem = kGemvWarps * maxm * kGemvStrip * 4 + kStaticSmemAllowance;  // the reduction array
  const int sms = dev.sms > 0 ? dev.sms : detail::kFallbackSms;
  const int per_sm = detail::resident_ctas(gemv_min_ctas(maxm, gptq_r), smem,
                                           dev.smem_per_sm > 0 ? dev.smem_per_sm : detail::kFallbackSmemPerSm);
  const detail::SplitPlan sp =
      detail::plan_splits(strips, chunks, kGemvWarps, sms, per_sm, kGemvInflightBytes,
                          static_cast<double>(n_pad) * k_pad / 2, static_cast<double>(m) * n_pad * 4, 0.0,
                          split_request);  // no tensor-core work
  return detail::to_plan(sp, m, n_pad, strips);
}

int w4a16_gemv(const W4Args& a, cudaStream_t stream) {
  const int rc = detail::check_args(a);
  if (rc != kOk) return rc;
  if (a.m > kGemvMaxM) return kErrUnsupportedM;
  return a.dtype == kF16 ? dispatch_variant<__half>(a, stream) : dispatch_variant<__nv_bfloat16>(a, stream);
}

}  // namespace awq
