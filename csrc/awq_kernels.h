// Torch-free C++ API of the W4A16 kernels: raw pointers, ints, a stream, error codes.
// The binding (binding.cpp) and the standalone CMake tools are the only callers.
//
// Every weight pointer is in the kernel layout "w4tc-v1" (awq_ext/pack/kernel_layout.py):
//   qweight int32 [k_pad/16, n_pad/16, 32]; scales, zeros T [n_groups_pad, n_pad] (pair-interleaved
//   columns); g_idx int32 [k_pad] or null. A is T [m, k] row-major, C is T [m, n] row-major.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

namespace awq {

enum Status : int {
  kOk = 0,
  kErrDtype = 1,         // dtype is not fp16/bf16
  kErrShape = 2,         // m, n or k out of range, or n_pad/k_pad inconsistent with n/k
  kErrGroupSize = 3,     // group size not in {32, 64, 128} or k % group_size != 0
  kErrAlignment = 4,     // a pointer is not 16-byte aligned
  kErrWorkspace = 5,     // split-K needs partials/counters that were not given
  kErrCuda = 6,          // a CUDA call or launch failed; see last_cuda_error()
  kErrUnsupportedM = 7,  // the GEMV path was asked for m > kGemvMaxM
  kErrNoWgmma = 8,       // the wgmma path was asked for where the device or the build lacks it
};

enum DType : int { kF16 = 0, kBF16 = 1 };

constexpr int kGemvMaxM = 8;
constexpr int kMaxSplits = 16;  // split-K factor limit (partials grow with it)

struct W4Args {
  DType dtype;
  const void* a;             // T [m, k]
  const uint32_t* qweight;   // kernel layout
  const void* scales;        // T [n_groups_pad, n_pad]
  const void* zeros;         // T [n_groups_pad, n_pad]
  const int32_t* g_idx;      // int32 [k_pad] for GPTQ-R, else null
  void* c;                   // T [m, n]
  int m, n, k;               // logical problem: C[m, n] = A[m, k] @ W[n, k]^T
  int n_pad, k_pad;          // padded layout sizes (multiples of 16 and 64)
  int group_size;            // 32, 64, 128 (ignored by the kernels when g_idx is given)
  int splits;                // split-K factor chosen by plan_*(); 1 = none
  float* partials;           // fp32 [splits, m, n] when splits > 1
  int* counters;             // int32 [tiles], all zero on entry; the kernel leaves them zero again
};

// What the launch planner reads from the device at run time (binding.cpp queries it once per device).
struct Device {
  int sms;          // cudaDevAttrMultiProcessorCount
  int smem_per_sm;  // cudaDevAttrMaxSharedMemoryPerMultiprocessor (bytes blocks can use)
  int wgmma;        // wgmma_available(): this build can run the wgmma variant on it
};

// Split-K plan: how many K slices, the workspace they need, and how the grid lands on the device. With
// split_request <= 0 the planner picks the count from the device (launch_common.h, plan_splits) so the
// busiest SM does little more than the average and enough weight bytes are in flight.
struct Plan {
  int splits;             // >= 1
  size_t partial_floats;  // splits * m * n when splits > 1, else 0
  int counters;           // number of output tiles when splits > 1, else 0
  int ctas_per_sm;        // residency the plan counts on
  double wave_efficiency; // mean SM work / busiest SM work (launch_common.h SplitPlan)
  double bytes_in_flight_per_sm;
};

// Tensor-core GEMM (any m >= 1; tuned for 9..crossover). g_idx != null selects the GPTQ-R variant (plan it
// with gptq_r = true: its tiles hold g_idx instead of scale rows, so its residency can differ).
// wgmma: plan for the sm_90a variant (w4a16_gemm_wgmma) instead of the mma.sync tile serving m.
Plan plan_gemm(int m, int n_pad, int k_pad, int group_size, const Device& dev, int split_request, bool gptq_r,
               bool wgmma = false);
int w4a16_gemm(const W4Args& args, cudaStream_t stream);
int w4a16_gemm_gptq_r(const W4Args& args, cudaStream_t stream);
// The Hopper variant (AWQ layouts, any m; tuned for 33..64): wgmma with the dequantized weights as the register
// operand. Only where wgmma_available(device) is 1: an sm_90 GPU and an arch=compute_90a build. It runs a 1-thread
// probe kernel writing `flag` (one int of device memory the caller provides) and synchronizes `stream`: query it
// once per device, into Device::wgmma. 0: definitely not; -1: a CUDA error (last_cuda_error), ask again later.
// Elsewhere w4a16_gemm_wgmma returns kErrNoWgmma.
int wgmma_available(int device, int* flag, cudaStream_t stream);
int w4a16_gemm_wgmma(const W4Args& args, const Device& dev, cudaStream_t stream);

// Bandwidth-bound GEMV for m <= kGemvMaxM. g_idx != null selects the GPTQ-R variant (plan with gptq_r = true:
// it runs fewer CTAs per SM, which changes the split that fills the SMs).
Plan plan_gemv(int m, int n_pad, int k_pad, const Device& dev, int split_request, bool gptq_r);
int w4a16_gemv(const W4Args& args, cudaStream_t stream);

// Dequantize the packed weight to T [n, k] (row-major, nn.Linear orientation) for the cuBLAS path.
int w4_dequantize(DType dtype, const uint32_t* qweight, const void* scales, const void* zeros,
                  const int32_t* g_idx, void* out, int n, int k, int n_pad, int k_pad, int group_size,
                  cudaStream_t stream);

const char* status_string(int status);
// The CUDA error behind the last kErrCuda returned on this host thread.
cudaError_t last_cuda_error();

}  // namespace awq
