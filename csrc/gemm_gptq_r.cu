// GPTQ-R W4A16 GEMM: the same kernel as gemm.cu, but every k row's scale and zero are gathered
// through g_idx (act-order checkpoints). Kept deliberately as the comparison point of the AWQ paper
// (Figures 2 and 6): the weights are not reordered, so the group of adjacent k rows changes arbitrarily
// and each weight word needs 8 scattered scale/zero loads instead of one shared-memory read per group.
#include "gemm.cuh"

namespace awq {

int w4a16_gemm_gptq_r(const W4Args& a, cudaStream_t stream) {
  if (a.g_idx == nullptr) return kErrShape;
  const int rc = detail::check_args(a);
  if (rc != kOk) return rc;
  return a.dtype == kF16 ? launch_gemm_m<__half, 0, true>(a, stream)
                         : launch_gemm_m<__nv_bfloat16, 0, true>(a, stream);
}

}  // namespace awq
