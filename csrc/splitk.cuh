// Deterministic split-K finish shared by the GEMM and the GEMV: every split CTA writes fp32 partials
// [split, m, n], then bumps its tile's counter; the CTA that arrives last sums the partials in split
// order 0..splits-1 (same result every run) and resets the counter to 0, so the counter buffer can be
// reused without a memset.
#pragma once

namespace awq {

// Call with all threads of the CTA after they stored their partials. Returns true (uniformly) in the
// CTA that must do the final reduction.
__device__ __forceinline__ bool splitk_arrive(int* counter, int splits) {
  __shared__ int s_is_last;
  __threadfence();  // publish this thread's partial stores device-wide before the count moves
  __syncthreads();
  if (threadIdx.x == 0) {
    const int prev = atomicAdd(counter, 1);
    const int last = prev == splits - 1;
    if (last) atomicExch(counter, 0);
    s_is_last = last;
  }
  __syncthreads();
  const bool last = s_is_last != 0;
  if (last) __threadfence();  // order the reads of other CTAs' partials after observing the count
  return last;
}

}  // namespace awq
