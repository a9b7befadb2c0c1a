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
// SM count of the current device (0 when it cannot be read).
int current_sm_count();

}  // namespace detail
}  // namespace awq
