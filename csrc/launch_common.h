// Host-side helpers shared by the launchers (validation, error capture). Not part of the public API.
#pragma once

#include <cstdint>

#include "awq_kernels.h"

namespace awq {
namespace detail {

// What a plan assumes when the device cannot be read: an A100's 108 SMs and 164 KB of shared memory per SM.
constexpr int kFallbackSms = 108;
constexpr int kFallbackSmemPerSm = 164 * 1024;

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
inline int round_up(int x, int m) { return (x + m - 1) / m * m; }
inline bool valid_group(int g) { return g == 32 || g == 64 || g == 128; }

// Shape/pointer checks common to every W4 launch; returns kOk or the first problem found.
int check_args(const W4Args& a);
// Record a CUDA error for last_cuda_error(); returns kErrCuda if err != cudaSuccess, else kOk.
int capture(cudaError_t err);
// Largest split count <= request that leaves no split empty, given `steps` K steps and a minimum per split.
int clamp_splits(int request, int steps, int min_steps_per_split);
// CTAs of one kernel resident per SM that a plan may count on: the __launch_bounds__ minimum (registers are
// then guaranteed) unless the device's shared memory per SM holds fewer (each CTA also costs the 1 KB the
// runtime reserves per block; smem_per_cta includes the kernel's static shared memory).
int resident_ctas(int min_ctas, int smem_per_cta, int smem_per_sm);

// How a launch of `tiles` output tiles x `splits` K slices lands on `sms` SMs with `ctas_per_sm` resident each.
// Slice z holds K steps [z * per, min(steps, (z + 1) * per)), per = ceil(steps / splits) (the kernels' rule).
// The busiest SM runs ceil(ctas / sms) CTAs (the block scheduler fills SMs breadth-first), each assumed to hold
// the largest slice; wave_efficiency = mean SM work / busiest SM work in K steps, so an uneven slice, an SM
// with one CTA more than another, and a wave tail all lower it. A memory-bound launch also needs bytes in
// flight: bytes_in_flight_per_sm = min(ctas, sms * ctas_per_sm) / sms CTAs x `inflight_per_cta`, and
// latency_cover = min(1, that / kInflightTargetPerSm) is the share of the HBM bandwidth it is taken to draw.
struct SplitPlan {
  int splits;
  long ctas;
  int ctas_per_sm;               // planned residency (resident_ctas)
  long busiest_sm_steps;
  double mean_sm_steps;
  double wave_efficiency;
  double bytes_in_flight_per_sm;
  double latency_cover;
  double efficiency() const { return wave_efficiency * latency_cover; }
};
SplitPlan split_stats(int tiles, int splits, int steps, int sms, int ctas_per_sm, int inflight_per_cta);
// The split-K plan for `tiles` tiles over `steps` K steps. split_request > 0: that count, clamped. Otherwise
// the count with the least cost, the longer of memory = (weight bytes + fp32 partials written and read back) /
// efficiency() and mma = mma_flops / kMmaFlopsPerHbmByte / wave_efficiency, among those that leave no slice
// empty, give every slice >= min_steps_per_split steps, stay <= kMaxSplits, and - unless the mma term exceeds
// the weight bytes (a compute-bound launch, whose second wave can balance the SMs) - add no second wave: a
// split exists to fill the SMs. Ties (0.1 %) go to fewer splits. mma_flops = 0: no tensor-core work (GEMV).
SplitPlan plan_splits(int tiles, int steps, int min_steps_per_split, int sms, int ctas_per_sm, int inflight_per_cta,
                      double weight_bytes, double partial_bytes_per_split, double mma_flops, int split_request);
// The public Plan of a SplitPlan: workspace for `tiles` counters and [splits, m, n_pad] fp32 partials.
Plan to_plan(const SplitPlan& sp, int m, int n_pad, int tiles);

}  // namespace detail
}  // namespace awq
