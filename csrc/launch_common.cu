// Host-side helpers shared by the launchers: argument validation, status strings, CUDA error capture.
#include "launch_common.h"
#include "tile_configs.cuh"

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
    case kErrNoWgmma: return "the wgmma path needs an sm_90 GPU (H100/H200) and a build for arch 9.0a (TORCH_CUDA_ARCH_LIST=9.0a)";
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

int resident_ctas(int min_ctas, int smem_per_cta, int smem_per_sm) {
  const int by_smem = smem_per_sm / (smem_per_cta + kReservedSmemPerCta);
  const int r = by_smem < min_ctas ? by_smem : min_ctas;
  return r < 1 ? 1 : r;
}

SplitPlan split_stats(int tiles, int splits, int steps, int sms, int ctas_per_sm, int inflight_per_cta) {
  SplitPlan p{splits, 0, ctas_per_sm, 0, 0.0, 0.0, 0.0, 0.0};
  if (tiles <= 0 || splits <= 0 || steps <= 0 || sms <= 0 || ctas_per_sm <= 0) return p;
  p.ctas = static_cast<long>(tiles) * splits;
  const long per = (steps + splits - 1) / splits;
  p.busiest_sm_steps = (p.ctas + sms - 1) / sms * per;
  p.mean_sm_steps = static_cast<double>(tiles) * steps / sms;
  p.wave_efficiency = p.mean_sm_steps / static_cast<double>(p.busiest_sm_steps);
  const long slots = static_cast<long>(sms) * ctas_per_sm;
  p.bytes_in_flight_per_sm = static_cast<double>(p.ctas < slots ? p.ctas : slots) / sms * inflight_per_cta;
  const double cover = p.bytes_in_flight_per_sm / kInflightTargetPerSm;
  p.latency_cover = cover < 1.0 ? cover : 1.0;
  return p;
}

SplitPlan plan_splits(int tiles, int steps, int min_steps_per_split, int sms, int ctas_per_sm, int inflight_per_cta,
                      double weight_bytes, double partial_bytes_per_split, double mma_flops, int split_request) {
  if (split_request > 0) {
    const int s = clamp_splits(split_request > kMaxSplits ? kMaxSplits : split_request, steps, min_steps_per_split);
    return split_stats(tiles, s, steps, sms, ctas_per_sm, inflight_per_cta);
  }
  const long slots = static_cast<long>(sms) * ctas_per_sm;
  const int cap = clamp_splits(kMaxSplits, steps, min_steps_per_split);
  // The mma work in HBM-byte equivalents: a compute-bound launch (M > 64) is timed by its busiest SM's mma work,
  // which extra waves may balance; a memory-bound one never gains from a second wave (only more partials).
  const double mma_bytes = mma_flops / kMmaFlopsPerHbmByte;
  const bool mma_bound = mma_bytes > weight_bytes;
  const auto cost_of = [&](const SplitPlan& p) {
    const double memory = (weight_bytes + 2.0 * p.splits * partial_bytes_per_split) / p.efficiency();  // write + read
    const double mma = mma_bytes / p.wave_efficiency;
    return memory > mma ? memory : mma;
  };
  SplitPlan best = split_stats(tiles, 1, steps, sms, ctas_per_sm, inflight_per_cta);
  double best_cost = cost_of(best);
  for (int s = 2; s <= cap; ++s) {
    if (clamp_splits(s, steps, min_steps_per_split) != s) continue;  // would leave an empty slice
    if (!mma_bound && static_cast<long>(tiles) * s > slots) break;   // a second wave: more splits only add more
    const SplitPlan p = split_stats(tiles, s, steps, sms, ctas_per_sm, inflight_per_cta);
    const double cost = cost_of(p);
    if (cost < best_cost * 0.999) {
      best = p;
      best_cost = cost;
    }
  }
  return best;
}

Plan to_plan(const SplitPlan& sp, int m, int n_pad, int tiles) {
  Plan plan{sp.splits, 0, 0, sp.ctas_per_sm, sp.wave_efficiency, sp.bytes_in_flight_per_sm};
  if (sp.splits > 1) {
    plan.partial_floats = static_cast<size_t>(sp.splits) * m * n_pad;
    plan.counters = tiles;
  }
  return plan;
}

}  // namespace detail
}  // namespace awq
