// Reorder-free AWQ W4A16 GEMM: instantiations of gemm.cuh for fp16/bf16 x G in {32, 64, 128}, the
// split-K planner shared with the GPTQ-R variant, and the torch-free launcher.
#include "gemm.cuh"

namespace awq {

Plan plan_gemm(int m, int n_pad, int k_pad, int group_size, const Device& dev, int split_request, bool gptq_r,
               bool wgmma) {
  Plan plan{1, 0, 0, 0, 0.0, 0.0};
  if (m <= 0 || n_pad <= 0 || k_pad <= 0) return plan;
  const GemmTileInfo t = wgmma ? gemm_tile_info<TileM64W, false>() : gemm_tile_info(m, gptq_r);
  const int tiles = ((n_pad + t.bn - 1) / t.bn) * ((m + t.bm - 1) / t.bm);
  // The kernel cuts K in whole groups when a group spans several BK steps (gemm_split_share): plan in those units,
  // so the planned slices, their balance and "no empty slice" are the kernel's own.
  const int per_group = gemm_steps_per_group(group_size, gptq_r);
  const int units = (k_pad / 64 + per_group - 1) / per_group;
  const int sms = dev.sms > 0 ? dev.sms : detail::kFallbackSms;
  const int per_sm = detail::resident_ctas(t.min_ctas, t.smem_per_cta, dev.smem_per_sm > 0 ? dev.smem_per_sm : detail::kFallbackSmemPerSm);
  const detail::SplitPlan sp =
      detail::plan_splits(tiles, units, (kGemmMinKTilesPerSplit + per_group - 1) / per_group, sms, per_sm, t.inflight_bytes,
                          static_cast<double>(n_pad) * k_pad / 2, static_cast<double>(m) * n_pad * 4,
                          2.0 * ((m + t.bm - 1) / t.bm * t.bm) * n_pad * k_pad / (wgmma ? kWgmmaOverMmaSync : 1),
                          split_request);  // mma: padded rows too, in mma.sync-equivalent FLOPs
  return detail::to_plan(sp, m, n_pad, tiles);
}

template <typename T>
static int dispatch_group(const W4Args& a, cudaStream_t stream) {
  switch (a.group_size) {
    case 32: return launch_gemm_m<T, 32, false>(a, stream);
    case 64: return launch_gemm_m<T, 64, false>(a, stream);
    case 128: return launch_gemm_m<T, 128, false>(a, stream);
    default: return kErrGroupSize;
  }
}

template <typename T>
static int dispatch_group_wgmma(const W4Args& a, cudaStream_t stream) {
  switch (a.group_size) {
    case 32: return launch_gemm_tile<T, TileM64W, 32, false>(a, stream);
    case 64: return launch_gemm_tile<T, TileM64W, 64, false>(a, stream);
    case 128: return launch_gemm_tile<T, TileM64W, 128, false>(a, stream);
    default: return kErrGroupSize;
  }
}

// Whether this build holds the wgmma code for the device: the kernels are compiled per architecture, and only an
// arch=compute_90a build (an sm_90 GPU) has it (ptx.cuh AWQ_WGMMA); elsewhere the wgmma launcher is refused.
__global__ void wgmma_probe_kernel(int* out) { *out = AWQ_WGMMA; }

int wgmma_available(int device, int* flag, cudaStream_t stream) {
  int major = 0, minor = 0;
  if (detail::capture(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device)) != kOk ||
      detail::capture(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device)) != kOk)
    return -1;
  if (major != 9 || minor != 0) return 0;
  int host = 0;
  wgmma_probe_kernel<<<1, 1, 0, stream>>>(flag);
  if (detail::capture(cudaPeekAtLastError()) != kOk ||
      detail::capture(cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream)) != kOk ||
      detail::capture(cudaStreamSynchronize(stream)) != kOk)
    return -1;
  return host == 1 ? 1 : 0;
}

int w4a16_gemm_wgmma(const W4Args& a, const Device& dev, cudaStream_t stream) {
  if (!dev.wgmma) return kErrNoWgmma;
  if (a.g_idx != nullptr) return kErrShape;  // AWQ layouts only: GPTQ-R stays on the mma.sync kernel
  const int rc = detail::check_args(a);
  if (rc != kOk) return rc;
  return a.dtype == kF16 ? dispatch_group_wgmma<__half>(a, stream) : dispatch_group_wgmma<__nv_bfloat16>(a, stream);
}

int w4a16_gemm(const W4Args& a, cudaStream_t stream) {
  if (a.g_idx != nullptr) return w4a16_gemm_gptq_r(a, stream);
  const int rc = detail::check_args(a);
  if (rc != kOk) return rc;
  return a.dtype == kF16 ? dispatch_group<__half>(a, stream) : dispatch_group<__nv_bfloat16>(a, stream);
}

}  // namespace awq
