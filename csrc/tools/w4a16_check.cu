// Standalone, torch-free check and profiling driver for the W4A16 kernels (built by CMakeLists.txt).
// Runs one problem through the GEMV (m <= 8), the GEMM and the dequantize kernel, each on a poisoned
// (NaN-filled) output, compares with an fp64 CPU reference decoded from the packed layout, and wraps every
// launch in an NVTX range so nsys shows them; small enough to run under compute-sanitizer.
//
//   w4a16_check M N K G DTYPE GIDX [ITERS]     e.g.  w4a16_check 5 200 384 64 f16 0
//   DTYPE: f16 | bf16; GIDX: 0 (reorder-free AWQ) | 1 (GPTQ-R, random act-order g_idx)
// Exit status 0 when every path is within tolerance, 1 on a mismatch, 2 on bad arguments or a CUDA error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "awq_kernels.h"

namespace {

#define CHECK_CUDA(x)                                                                          \
  do {                                                                                         \
    cudaError_t e_ = (x);                                                                      \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                            \
    }                                                                                          \
  } while (0)

uint16_t to_bits(float v, bool bf16) {
  uint16_t b;
  if (bf16) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    std::memcpy(&b, &h, 2);
  } else {
    __half h = __float2half_rn(v);
    std::memcpy(&b, &h, 2);
  }
  return b;
}

float from_bits(uint16_t b, bool bf16) {
  if (bf16) {
    __nv_bfloat16 h;
    std::memcpy(&h, &b, 2);
    return __bfloat162float(h);
  }
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

// Code of W[n][k] in the packed layout (independent decode of the layout documented in kernel_layout.py).
int code_at(const std::vector<uint32_t>& qw, int n_pad, int n, int k) {
  const int kt = k / 16, nt = n / 16, kr = k % 16, nr = n % 16;
  const int lane = (nr % 8) * 4 + (kr % 8) / 2;
  const int e = 4 * (nr / 8) + 2 * (kr / 8) + (kr % 2);
  static const int nibble_of_e[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // inverse of nibble_order (0,2,4,6,1,3,5,7)
  const uint32_t w = qw[(static_cast<size_t>(kt) * (n_pad / 16) + nt) * 32 + lane];
  return (w >> (4 * nibble_of_e[e])) & 0xF;
}

// Column n's position in the pair-interleaved scale/zero rows.
int param_col(int n) { return (n / 16) * 16 + 2 * (n % 8) + (n % 16) / 8; }

double rel_err(const std::vector<uint16_t>& got, const std::vector<double>& ref, bool bf16, bool* finite) {
  double num = 0, den = 0;
  *finite = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = from_bits(got[i], bf16);
    if (!std::isfinite(g)) *finite = false;
    num += (g - ref[i]) * (g - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s M N K G f16|bf16 GIDX(0|1) [ITERS]\n", argv[0]);
    return 2;
  }
  const int m = std::atoi(argv[1]), n = std::atoi(argv[2]), k = std::atoi(argv[3]), g = std::atoi(argv[4]);
  const bool bf16 = std::string(argv[5]) == "bf16";
  const bool gidx = std::atoi(argv[6]) != 0;
  const int iters = argc > 7 ? std::atoi(argv[7]) : 1;
  if (m <= 0 || n <= 0 || k <= 0 || n % 8 || k % g || (g != 32 && g != 64 && g != 128)) {
    std::fprintf(stderr, "bad sizes: need m, n, k > 0, n %% 8 == 0, g in {32, 64, 128}, k %% g == 0\n");
    return 2;
  }
  const int n_pad = (n + 15) / 16 * 16, k_pad = (k + 63) / 64 * 64, ng = k / g;
  const int groups_pad = gidx ? ng : (k_pad + g - 1) / g;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> word(0, 0xFFFFFFFFu);
  std::uniform_int_distribution<int> code(0, 15);
  std::normal_distribution<float> normal(0.f, 1.f);

  // Random packed weights: any 32-bit word is 8 valid codes. Padding rows/cols get code 0, scale 0.
  std::vector<uint32_t> qw(static_cast<size_t>(k_pad / 16) * (n_pad / 16) * 32);
  for (auto& w : qw) w = word(rng);
  std::vector<uint16_t> scales(static_cast<size_t>(groups_pad) * n_pad, to_bits(0.f, bf16)), zeros(scales);
  for (int r = 0; r < ng; ++r)
    for (int c = 0; c < n; ++c) {
      scales[static_cast<size_t>(r) * n_pad + param_col(c)] = to_bits(0.002f + 0.01f * std::fabs(normal(rng)), bf16);
      zeros[static_cast<size_t>(r) * n_pad + param_col(c)] = to_bits(static_cast<float>(code(rng)), bf16);
    }
  std::vector<int32_t> g_idx(k_pad, 0);
  for (int i = 0; i < k; ++i) g_idx[i] = i / g;
  if (gidx) std::shuffle(g_idx.begin(), g_idx.begin() + k, rng);
  std::vector<uint16_t> x(static_cast<size_t>(m) * k);
  for (auto& v : x) v = to_bits(normal(rng), bf16);

  // Reference: weights rounded once to the dtype, products and sums in fp64.
  std::vector<double> wref(static_cast<size_t>(n) * k), yref(static_cast<size_t>(m) * n, 0.0);
  for (int nn = 0; nn < n; ++nn)
    for (int kk = 0; kk < k; ++kk) {
      const int grp = gidx ? g_idx[kk] : kk / g;
      const float s = from_bits(scales[static_cast<size_t>(grp) * n_pad + param_col(nn)], bf16);
      const float z = from_bits(zeros[static_cast<size_t>(grp) * n_pad + param_col(nn)], bf16);
      wref[static_cast<size_t>(nn) * k + kk] = from_bits(to_bits((code_at(qw, n_pad, nn, kk) - z) * s, bf16), bf16);
    }
  for (int mm = 0; mm < m; ++mm)
    for (int nn = 0; nn < n; ++nn) {
      double acc = 0;
      for (int kk = 0; kk < k; ++kk)
        acc += static_cast<double>(from_bits(x[static_cast<size_t>(mm) * k + kk], bf16)) * wref[static_cast<size_t>(nn) * k + kk];
      yref[static_cast<size_t>(mm) * n + nn] = acc;
    }

  uint32_t* d_qw;
  uint16_t *d_s, *d_z, *d_x, *d_y, *d_w;
  int32_t* d_gidx;
  CHECK_CUDA(cudaMalloc(&d_qw, qw.size() * 4));
  CHECK_CUDA(cudaMalloc(&d_s, scales.size() * 2));
  CHECK_CUDA(cudaMalloc(&d_z, zeros.size() * 2));
  CHECK_CUDA(cudaMalloc(&d_gidx, g_idx.size() * 4));
  CHECK_CUDA(cudaMalloc(&d_x, x.size() * 2));
  CHECK_CUDA(cudaMalloc(&d_y, yref.size() * 2));
  CHECK_CUDA(cudaMalloc(&d_w, wref.size() * 2));
  CHECK_CUDA(cudaMemcpy(d_qw, qw.data(), qw.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_s, scales.data(), scales.size() * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_z, zeros.data(), zeros.size() * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_gidx, g_idx.data(), g_idx.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_x, x.data(), x.size() * 2, cudaMemcpyHostToDevice));

  int dev = 0;
  awq::Device limits{0, 0};
  CHECK_CUDA(cudaGetDevice(&dev));
  CHECK_CUDA(cudaDeviceGetAttribute(&limits.sms, cudaDevAttrMultiProcessorCount, dev));
  CHECK_CUDA(cudaDeviceGetAttribute(&limits.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  const double tol = bf16 ? 1e-2 : 2e-3;
  int failures = 0;

  for (int path = 0; path < 2; ++path) {  // 0: GEMV, 1: GEMM
    if (path == 0 && m > awq::kGemvMaxM) continue;
    const awq::Plan plan = path == 0 ? awq::plan_gemv(m, n_pad, k_pad, limits, 0, gidx != 0)
                                       : awq::plan_gemm(m, n_pad, k_pad, g, limits, 0, gidx != 0);
    float* d_part = nullptr;
    int* d_cnt = nullptr;
    if (plan.splits > 1) {
      CHECK_CUDA(cudaMalloc(&d_part, plan.partial_floats * 4));
      CHECK_CUDA(cudaMalloc(&d_cnt, plan.counters * 4));
      CHECK_CUDA(cudaMemset(d_cnt, 0, plan.counters * 4));
    }
    awq::W4Args a{};
    a.dtype = bf16 ? awq::kBF16 : awq::kF16;
    a.a = d_x;
    a.qweight = d_qw;
    a.scales = d_s;
    a.zeros = d_z;
    a.g_idx = gidx ? d_gidx : nullptr;
    a.c = d_y;
    a.m = m;
    a.n = n;
    a.k = k;
    a.n_pad = n_pad;
    a.k_pad = k_pad;
    a.group_size = g;
    a.splits = plan.splits;
    a.partials = d_part;
    a.counters = d_cnt;
    CHECK_CUDA(cudaMemset(d_y, 0xFF, yref.size() * 2));  // poison: NaN in both dtypes
    const char* name = path == 0 ? "w4a16_gemv" : (gidx ? "w4a16_gemm_gptq_r" : "w4a16_gemm");
    for (int it = 0; it < iters; ++it) {
      nvtxRangePushA(name);
      const int rc = path == 0 ? awq::w4a16_gemv(a, nullptr) : awq::w4a16_gemm(a, nullptr);
      nvtxRangePop();
      if (rc != awq::kOk) {
        std::fprintf(stderr, "%s(m=%d, n=%d, k=%d): %s %s\n", name, m, n, k, awq::status_string(rc),
                     rc == awq::kErrCuda ? cudaGetErrorString(awq::last_cuda_error()) : "");
        return 2;
      }
    }
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<uint16_t> y(yref.size());
    CHECK_CUDA(cudaMemcpy(y.data(), d_y, y.size() * 2, cudaMemcpyDeviceToHost));
    bool finite = true;
    const double err = rel_err(y, yref, bf16, &finite);
    const bool ok = finite && err < tol;
    failures += !ok;
    std::printf("%-18s m=%d n=%d k=%d g=%d %s gidx=%d splits=%d rel_err=%.3e %s\n", name, m, n, k, g,
                bf16 ? "bf16" : "f16", gidx, plan.splits, err, ok ? "ok" : "FAIL");
    if (d_part) CHECK_CUDA(cudaFree(d_part));
    if (d_cnt) CHECK_CUDA(cudaFree(d_cnt));
  }

  CHECK_CUDA(cudaMemset(d_w, 0xFF, wref.size() * 2));
  nvtxRangePushA("w4_dequantize");
  const int rc = awq::w4_dequantize(bf16 ? awq::kBF16 : awq::kF16, d_qw, d_s, d_z, gidx ? d_gidx : nullptr, d_w, n, k,
                                    n_pad, k_pad, g, nullptr);
  nvtxRangePop();
  if (rc != awq::kOk) {
    std::fprintf(stderr, "w4_dequantize(n=%d, k=%d): %s\n", n, k, awq::status_string(rc));
    return 2;
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<uint16_t> w(wref.size());
  CHECK_CUDA(cudaMemcpy(w.data(), d_w, w.size() * 2, cudaMemcpyDeviceToHost));
  size_t mismatched = 0;
  for (size_t i = 0; i < w.size(); ++i) mismatched += from_bits(w[i], bf16) != wref[i];
  failures += mismatched != 0;
  std::printf("%-18s n=%d k=%d bit-exact mismatches=%zu %s\n", "w4_dequantize", n, k, mismatched, mismatched ? "FAIL" : "ok");

  cudaFree(d_qw);
  cudaFree(d_s);
  cudaFree(d_z);
  cudaFree(d_gidx);
  cudaFree(d_x);
  cudaFree(d_y);
  cudaFree(d_w);
  return failures ? 1 : 0;
}
