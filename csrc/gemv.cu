// W4A16 GEMV for m <= 8 (decode): bandwidth-bound, so every lane streams 16-byte weight loads and keeps
// kGemvUnroll of them in flight before using any; fp32 accumulation; both the reorder-free AWQ path and the
// GPTQ-R path (scales/zeros gathered through g_idx per k row).
//
// Lane mapping on the kernel layout "w4tc-v1": a warp reads the four consecutive 16x16 blocks of one k16
// row of its 64-column strip - 512 contiguous bytes - and lane L takes bytes [16L, 16L + 16): the words of
// lanes 4(L%8) .. 4(L%8)+3 of block L/8. Those four words hold all 16 k rows of columns
// n_a = 16 (4 strip + L/8) + L%8 and n_b = n_a + 8 (word i: k rows 2i, 2i+1, 2i+8, 2i+9), so each lane
// finishes whole dot products without shuffles; the 8 warps of the CTA then reduce in shared memory.
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
struct Cvt;
template <>
struct Cvt<__half> {
  __device__ __forceinline__ static float2 to_float2(uint32_t v) {
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
  }
  __device__ __forceinline__ static void store(__half* p, float v) { *p = __float2half_rn(v); }
};
template <>
struct Cvt<__nv_bfloat16> {
  __device__ __forceinline__ static float2 to_float2(uint32_t v) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
  }
  __device__ __forceinline__ static void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
};

template <typename T, int MAXM, bool GIDX>
__global__ void __launch_bounds__(kGemvThreads, 2) w4a16_gemv_kernel(const W4Args p, int log2_group) {
  constexpr int WARPS = kGemvWarps, U = kGemvUnroll;
  const T* __restrict__ A = static_cast<const T*>(p.a);
  const T* __restrict__ scales = static_cast<const T*>(p.scales);
  const T* __restrict__ zeros = static_cast<const T*>(p.zeros);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int jb = lane >> 3, gq = lane & 7;
  const int nblocks = p.n_pad / 16;
  const int nblk = blockIdx.x * (kGemvStrip / 16) + jb;
  const bool valid = nblk < nblocks;
  const int pair_col = nblk * 16 + 2 * gq;  // (n_a, n_b) scale/zero pair in the interleaved order

  const int ksteps = p.k_pad / 16;
  const int per_split = (ksteps + p.splits - 1) / p.splits;
  const int kbeg = blockIdx.y * per_split;
  const int kend = min(ksteps, kbeg + per_split);

  const uint4* wbase = reinterpret_cast<const uint4*>(p.qweight) + static_cast<size_t>(nblk) * 8 + gq;
  float acc[MAXM][2];
#pragma unroll
  for (int m = 0; m < MAXM; ++m) acc[m][0] = acc[m][1] = 0.f;

  for (int kt0 = kbeg + warp; kt0 < kend; kt0 += WARPS * U) {
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {  // all loads first: U x 512 B per warp in flight
      const int kt = kt0 + u * WARPS;
      wv[u] = (valid && kt < kend) ? ld_global_nc_v4(wbase + static_cast<size_t>(kt) * nblocks * 8)
                                   : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int kt = kt0 + u * WARPS;
      if (kt >= kend) break;  // warp-uniform
      const uint32_t words[4] = {wv[u].x, wv[u].y, wv[u].z, wv[u].w};
      float2 wf[4][4];  // [word i][pair]: pairs 0,1 -> column n_a (k 2i..2i+1, 2i+8..2i+9); 2,3 -> n_b
      if constexpr (!GIDX) {
        const size_t off = static_cast<size_t>((kt * 16) >> log2_group) * p.n_pad + pair_col;
        const uint32_t s01 = valid ? __ldg(reinterpret_cast<const unsigned int*>(scales + off)) : 0u;
        const uint32_t z01 = valid ? __ldg(reinterpret_cast<const unsigned int*>(zeros + off)) : 0u;
        const PairParams prm = make_params<T>(s01, z01);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          uint32_t b[4];
          Dequant<T>::run(words[i], prm, b);
#pragma unroll
          for (int q = 0; q < 4; ++q) wf[i][q] = Cvt<T>::to_float2(b[q]);
        }
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
            const size_t off = static_cast<size_t>(rows[r]) * p.n_pad + pair_col;
            sv[r] = valid ? __ldg(reinterpret_cast<const unsigned int*>(scales + off)) : 0u;
            zv[r] = valid ? __ldg(reinterpret_cast<const unsigned int*>(zeros + off)) : 0u;
          }
          uint32_t b[4];
          Dequant<T>::run(words[i], make_params_rows<T>(sv, zv), b);
#pragma unroll
          for (int q = 0; q < 4; ++q) wf[i][q] = Cvt<T>::to_float2(b[q]);
        }
      }
      const int k0 = kt * 16;
#pragma unroll
      for (int m = 0; m < MAXM; ++m) {
        if (m >= p.m) break;  // uniform
        const T* xr = A + static_cast<size_t>(m) * p.k + k0;
        // K % 8 == 0, so each 8-element half of the k16 step is wholly inside or outside [0, K)
        const uint4 x0 = k0 < p.k ? __ldg(reinterpret_cast<const uint4*>(xr)) : make_uint4(0u, 0u, 0u, 0u);
        const uint4 x1 = k0 + 8 < p.k ? __ldg(reinterpret_cast<const uint4*>(xr + 8)) : make_uint4(0u, 0u, 0u, 0u);
        const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};  // pair p: k 2p, 2p+1
        float2 xf[8];
#pragma unroll
        for (int q = 0; q < 8; ++q) xf[q] = Cvt<T>::to_float2(xw[q]);
        float sa = acc[m][0], sb = acc[m][1];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          sa = fmaf(wf[i][0].x, xf[i].x, sa);
          sa = fmaf(wf[i][0].y, xf[i].y, sa);
          sa = fmaf(wf[i][1].x, xf[i + 4].x, sa);
          sa = fmaf(wf[i][1].y, xf[i + 4].y, sa);
          sb = fmaf(wf[i][2].x, xf[i].x, sb);
          sb = fmaf(wf[i][2].y, xf[i].y, sb);
          sb = fmaf(wf[i][3].x, xf[i + 4].x, sb);
          sb = fmaf(wf[i][3].y, xf[i + 4].y, sb);
        }
        acc[m][0] = sa;
        acc[m][1] = sb;
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
      Cvt<T>::store(C + static_cast<size_t>(m) * p.n + n, s);
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
    Cvt<T>::store(C + static_cast<size_t>(m) * p.n + n, s);
  }
}

template <typename T, int MAXM, bool GIDX>
int launch_gemv(const W4Args& a, int log2_group, cudaStream_t stream) {
  const dim3 grid((a.n_pad + kGemvStrip - 1) / kGemvStrip, a.splits);
  w4a16_gemv_kernel<T, MAXM, GIDX><<<grid, kGemvThreads, 0, stream>>>(a, log2_group);
  return detail::capture(cudaGetLastError());
}

// MAXM instantiations 1, 2, 4, 8: the accumulators are unrolled per row, so m = 1 (plain decode) pays for
// exactly one row; the others round m up.
template <typename T, bool GIDX>
int dispatch_m(const W4Args& a, int log2_group, cudaStream_t stream) {
  if (a.m <= 1) return launch_gemv<T, 1, GIDX>(a, log2_group, stream);
  if (a.m <= 2) return launch_gemv<T, 2, GIDX>(a, log2_group, stream);
  if (a.m <= 4) return launch_gemv<T, 4, GIDX>(a, log2_group, stream);
  return launch_gemv<T, 8, GIDX>(a, log2_group, stream);
}

template <typename T>
int dispatch_variant(const W4Args& a, int log2_group, cudaStream_t stream) {
  return a.g_idx != nullptr ? dispatch_m<T, true>(a, log2_group, stream) : dispatch_m<T, false>(a, log2_group, stream);
}

}  // namespace

Plan plan_gemv(int m, int n_pad, int k_pad, int num_sms, int split_request) {
  Plan plan{1, 0, 0};
  if (m <= 0 || n_pad <= 0 || k_pad <= 0) return plan;
  const int strips = (n_pad + kGemvStrip - 1) / kGemvStrip;
  int want = split_request;
  if (want <= 0) {
    const int target = (num_sms > 0 ? num_sms : 108) * kSplitTargetCtasPerSm * 2;  // 256-thread CTAs: 4 per SM
    want = (target + strips - 1) / strips;
  }
  if (want > kMaxSplits) want = kMaxSplits;
  plan.splits = detail::clamp_splits(want, k_pad / 16, kGemvWarps * kGemvUnroll);
  if (plan.splits > 1) {
    plan.partial_floats = static_cast<size_t>(plan.splits) * m * n_pad;
    plan.counters = strips;
  }
  return plan;
}

int w4a16_gemv(const W4Args& a, cudaStream_t stream) {
  const int rc = detail::check_args(a);
  if (rc != kOk) return rc;
  if (a.m > kGemvMaxM) return kErrUnsupportedM;
  int log2_group = 0;
  if (a.g_idx == nullptr) {
    while ((1 << log2_group) < a.group_size) ++log2_group;
  }
  return a.dtype == kF16 ? dispatch_variant<__half>(a, log2_group, stream)
                         : dispatch_variant<__nv_bfloat16>(a, log2_group, stream);
}

}  // namespace awq
