// Host-side helpers shared by the launchers (validation, error capture). Not part of the public API.
#pragma once

#include <cstdint>

#include "awq_kernels.h"

namespace awq {
namespace detail {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
inline int round_up(int x, int m) { return (x + m - 1) / m * m; }
inline bool valid_group(int g) { return g == 32 || g == 64 || g == 128; }

// Shape/pointer checks common to every W4 launch; returns kOk or the first problem found.
int check_args(const W4Args& a);
// Record a CUDA error for last_cuda_error(); returns kErrCuda if err != cudaSuccess, else kOk.
int capture(cudaError_t err);
// Largest split count <= request that leaves no split empty, given `steps` K steps and a minimum per split.
int clamp_splits(int request, int steps, int min_steps_per_split);
// Split-K factor for `tiles` output tiles over `steps` K steps when the launcher may choose (request <= 0), from
// the SM count at run time: `slots` = SMs x resident CTAs per SM. A split count s runs tiles * s CTAs in
// ceil(tiles * s / slots) waves, and its slices hold ceil(steps / s) steps; the time is taken proportional to
// (weight bytes + s * partial bytes) / (wave fill x slice balance), so the choice leaves no wave tail while
// the fp32 partials stay cheap. Never more than kMaxSplits or steps / min_steps_per_split; 1 if that is 1.
int auto_splits(int tiles, int steps, int min_steps_per_split, int slots, double weight_bytes,
                double partial_bytes_per_split);
// Fraction of the launch's CTA slots doing useful work: (ctas / slots) / ceil(ctas / slots) times the slice
// balance steps / (splits * ceil(steps / splits)); 1.0 is a launch without a wave tail.
double wave_efficiency(int tiles, int splits, int steps, int slots);
// SM count of the current device (0 when it cannot be read).
int current_sm_count();

}  // namespace detail
}  // namespace awq
