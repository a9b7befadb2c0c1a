// Host-side helpers shared by the launchers: argument validation, status strings, CUDA error capture.
#include "launch_common.h"

namespace awq {
namespace {
thread_local cudaError_t g_last_cuda_error = cudaSuccess;
}

const char* status_string(int status) {
  switch (status) {
    case kOk: return "ok";
    case kErrDtype: return "unsupported dtype (use float16 or bfloat16)";
    case kErrShape: return "invalid shape (m, n, k must be positive; n % 8 == 0; k % 8 == 0; n_pad/k_pad must match the kernel layout)";
    case kErrGroupSize: return "invalid group size (use 32, 64 or 128 with k % group_size == 0)";
    case kErrAlignment: return "a pointer is not 16-byte aligned (pass contiguous tensors from the caching allocator)";
    case kErrWorkspace: return "split-K workspace (partials/counters) missing";
    case kErrCuda: return "CUDA error";
    case kErrUnsupportedM: return "GEMV supports m <= 8 only";
    default: return "unknown status";
  }
}

cudaError_t last_cuda_error() { return g_last_cuda_error; }

namespace detail {

int capture(cudaError_t err) {
  if (err == cudaSuccess) return kOk;
  g_last_cuda_error = err;
  return kErrCuda;
}

int check_args(const W4Args& a) {
  if (a.dtype != kF16 && a.dtype != kBF16) return kErrDtype;
  if (a.m <= 0 || a.n <= 0 || a.k <= 0 || a.n % 8 != 0 || a.k % 8 != 0) return kErrShape;
  if (a.n_pad != round_up(a.n, 16) || a.k_pad != round_up(a.k, 64)) return kErrShape;
  if (a.g_idx == nullptr && (!valid_group(a.group_size) || a.k % a.group_size != 0)) return kErrGroupSize;
  if (!aligned16(a.a) || !aligned16(a.qweight) || !aligned16(a.scales) || !aligned16(a.zeros) ||
      (a.g_idx != nullptr && !aligned16(a.g_idx)) || (reinterpret_cast<uintptr_t>(a.c) & 3u) != 0)
    return kErrAlignment;
  if (a.splits < 1 || a.splits > kMaxSplits) return kErrWorkspace;
  if (a.splits > 1 && (a.partials == nullptr || a.counters == nullptr || !aligned16(a.partials))) return kErrWorkspace;
  return kOk;
}

int clamp_splits(int request, int steps, int min_steps_per_split) {
  int s = request < 1 ? 1 : request;
  const int cap = steps / (min_steps_per_split > 0 ? min_steps_per_split : 1);
  if (s > cap) s = cap < 1 ? 1 : cap;
  // no empty split: with per = ceil(steps / s), the last split must start before `steps`
  const int per = (steps + s - 1) / s;
  s = (steps + per - 1) / per;
  return s;
}

double wave_efficiency(int tiles, int splits, int steps, int slots) {
  if (tiles <= 0 || splits <= 0 || steps <= 0 || slots <= 0) return 0.0;
  const long ctas = static_cast<long>(tiles) * splits;
  const long waves = (ctas + slots - 1) / slots;
  const double fill = static_cast<double>(ctas) / (static_cast<double>(waves) * slots);
  const int per = (steps + splits - 1) / splits;
  return fill * static_cast<double>(steps) / (static_cast<double>(splits) * per);
}

int auto_splits(int tiles, int steps, int min_steps_per_split, int slots, double weight_bytes,
                double partial_bytes_per_split) {
  const int cap = clamp_splits(kMaxSplits, steps, min_steps_per_split);
  int best = 1;
  double best_cost = 0.0;
  for (int s = 1; s <= cap; ++s) {
    if (clamp_splits(s, steps, min_steps_per_split) != s) continue;  // would leave an empty slice
    const double bytes = weight_bytes + (s > 1 ? 2.0 * s * partial_bytes_per_split : 0.0);  // write + read back
    const double cost = bytes / wave_efficiency(tiles, s, steps, slots);
    if (s == 1 || cost < best_cost * 0.999) {  // ties go to fewer splits (less partial traffic, fewer atomics)
      best = s;
      best_cost = cost;
    }
  }
  return best;
}

int current_sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
  return sms;
}

}  // namespace detail
}  // namespace awq
