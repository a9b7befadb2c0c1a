// Reorder-free AWQ W4A16 GEMM: instantiations of gemm.cuh for fp16/bf16 x G in {32, 64, 128}, the
// split-K planner shared with the GPTQ-R variant, and the torch-free launcher.
#include "gemm.cuh"

namespace awq {

Plan plan_gemm(int m, int n_pad, int k_pad, int num_sms, int split_request) {
  Plan plan{1, 0, 0};
  if (m <= 0 || n_pad <= 0 || k_pad <= 0) return plan;
  const int bm = gemm_tile_bm(m), bn = gemm_tile_bn(m);
  const int tiles = ((n_pad + bn - 1) / bn) * ((m + bm - 1) / bm);
  const int ktiles = k_pad / 64;
  int splits;
  if (split_request > 0) {
    splits = detail::clamp_splits(split_request > kMaxSplits ? kMaxSplits : split_request, ktiles,
                                  kGemmMinKTilesPerSplit);
  } else {
    const int slots = (num_sms > 0 ? num_sms : 108) * gemm_tile_min_ctas(m);
    splits = detail::auto_splits(tiles, ktiles, kGemmMinKTilesPerSplit, slots,
                                 static_cast<double>(n_pad) * k_pad / 2, static_cast<double>(m) * n_pad * 4);
  }
  plan.splits = splits;
  if (plan.splits > 1) {
    plan.partial_floats = static_cast<size_t>(plan.splits) * m * (n_pad);
    plan.counters = tiles;
  }
  return plan;
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

int w4a16_gemm(const W4Args& a, cudaStream_t stream) {
  if (a.g_idx != nullptr) return w4a16_gemm_gptq_r(a, stream);
  const int rc = detail::check_args(a);
  if (rc != kOk) return rc;
  return a.dtype == kF16 ? dispatch_group<__half>(a, stream) : dispatch_group<__nv_bfloat16>(a, stream);
}

}  // namespace awq
