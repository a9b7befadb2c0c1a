// Dequantize a packed "w4tc-v1" weight to a dense T [n, k] (nn.Linear orientation) for the large-m path
// (dequantize once, then cuBLAS). One thread per packed word; same register math as the GEMM/GEMV
// (dequant.cuh), so the cuBLAS path sees bit-identical weights.
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "awq_kernels.h"
#include "dequant.cuh"
#include "launch_common.h"
#include "tile_configs.cuh"

namespace awq {
namespace {

template <typename T, bool GIDX>
__global__ void __launch_bounds__(kDequantThreads)
    w4_dequant_kernel(const uint32_t* __restrict__ qweight, const T* __restrict__ scales,
                      const T* __restrict__ zeros, const int32_t* __restrict__ g_idx, T* __restrict__ out, int n,
                      int k, int n_pad, int k_pad, int group_size) {
  const int nblocks = n_pad / 16;
  const size_t total = static_cast<size_t>(k_pad / 16) * nblocks * 32;
  for (size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int lane = static_cast<int>(idx & 31);
    const size_t blk = idx >> 5;
    const int nt = static_cast<int>(blk % nblocks), kt = static_cast<int>(blk / nblocks);
    const int g = lane >> 2, t = lane & 3;
    const int pair_col = nt * 16 + 2 * g;
    const int k0 = kt * 16 + 2 * t;  // rows k0, k0+1 (pairs 0, 2) and k0+8, k0+9 (pairs 1, 3)
    PairParams prm;
    if constexpr (!GIDX) {
      const size_t off = static_cast<size_t>((kt * 16) / group_size) * n_pad + pair_col;
      prm = make_params<T>(*reinterpret_cast<const uint32_t*>(scales + off),
                           *reinterpret_cast<const uint32_t*>(zeros + off));
    } else {
      const int rows[4] = {g_idx[k0], g_idx[k0 + 1], g_idx[k0 + 8], g_idx[k0 + 9]};
      uint32_t sv[4], zv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const size_t off = static_cast<size_t>(rows[r]) * n_pad + pair_col;
        sv[r] = *reinterpret_cast<const uint32_t*>(scales + off);
        zv[r] = *reinterpret_cast<const uint32_t*>(zeros + off);
      }
      prm = make_params_rows<T>(sv, zv);
    }
    uint32_t b[4];
    Dequant<T>::run(qweight[idx], prm, b);
    const int na = nt * 16 + g, nb = na + 8;
    // k is even (k % 8 == 0), so a pair starting below k lies wholly inside
    if (na < n && k0 < k) *reinterpret_cast<uint32_t*>(out + static_cast<size_t>(na) * k + k0) = b[0];
    if (na < n && k0 + 8 < k) *reinterpret_cast<uint32_t*>(out + static_cast<size_t>(na) * k + k0 + 8) = b[1];
    if (nb < n && k0 < k) *reinterpret_cast<uint32_t*>(out + static_cast<size_t>(nb) * k + k0) = b[2];
    if (nb < n && k0 + 8 < k) *reinterpret_cast<uint32_t*>(out + static_cast<size_t>(nb) * k + k0 + 8) = b[3];
  }
}

template <typename T>
int launch(const uint32_t* qweight, const void* scales, const void* zeros, const int32_t* g_idx, void* out, int n,
           int k, int n_pad, int k_pad, int group_size, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(k_pad / 16) * (n_pad / 16) * 32;
  const size_t want = (total + kDequantThreads - 1) / kDequantThreads;
  const int grid = static_cast<int>(want < 65535 * 8 ? want : 65535 * 8);
  const T* s = static_cast<const T*>(scales);
  const T* z = static_cast<const T*>(zeros);
  T* o = static_cast<T*>(out);
  if (g_idx != nullptr) {
    w4_dequant_kernel<T, true><<<grid, kDequantThreads, 0, stream>>>(qweight, s, z, g_idx, o, n, k, n_pad, k_pad, group_size);
  } else {
    w4_dequant_kernel<T, false><<<grid, kDequantThreads, 0, stream>>>(qweight, s, z, g_idx, o, n, k, n_pad, k_pad, group_size);
  }
  return detail::capture(cudaGetLastError());
}

}  // namespace

int w4_dequantize(DType dtype, const uint32_t* qweight, const void* scales, const void* zeros, const int32_t* g_idx,
                  void* out, int n, int k, int n_pad, int k_pad, int group_size, cudaStream_t stream) {
  if (dtype != kF16 && dtype != kBF16) return kErrDtype;
  if (n <= 0 || k <= 0 || n % 8 != 0 || k % 8 != 0 || n_pad != detail::round_up(n, 16) ||
      k_pad != detail::round_up(k, 64))
    return kErrShape;
  if (g_idx == nullptr && (!detail::valid_group(group_size) || k % group_size != 0)) return kErrGroupSize;
  if (!detail::aligned16(qweight) || !detail::aligned16(scales) || !detail::aligned16(zeros) ||
      (reinterpret_cast<uintptr_t>(out) & 3u) != 0)
    return kErrAlignment;
  return dtype == kF16 ? launch<__half>(qweight, scales, zeros, g_idx, out, n, k, n_pad, k_pad, group_size, stream)
                       : launch<__nv_bfloat16>(qweight, scales, zeros, g_idx, out, n, k, n_pad, k_pad, group_size, stream);
}

}  // namespace awq
