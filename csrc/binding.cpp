// The one torch binding of the W4A16 kernels: registers torch.ops.awq_ext.{w4a16_gemm, w4a16_gemm_wgmma, w4a16_gemv,
// w4_dequantize} with CUDA and Meta (shape-only, for torch.compile / fake tensors) implementations.
// Every check happens here, before launch, with a message that names m, n, k and says how to fix it;
// kernels run on the current stream; every launch's status is checked.
#include <Python.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "awq_kernels.h"

namespace {

struct Problem {
  const char* op;
  int64_t m, n, k, group_size;
  std::string where() const {
    std::ostringstream s;
    s << "awq_ext::" << op << "(m=" << m << ", n=" << n << ", k=" << k << ", group_size=" << group_size << ")";
    return s.str();
  }
};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

awq::DType to_dtype(const at::Tensor& t, const Problem& pb) {
  TORCH_CHECK(t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16, pb.where(),
              ": activations must be float16 or bfloat16, got ", t.scalar_type(), "; cast with x.half() or x.bfloat16()");
  return t.scalar_type() == at::kHalf ? awq::kF16 : awq::kBF16;
}

// Every g_idx entry must name a scale row, 0 <= g < groups: the kernels index scales/zeros with it unchecked, so an
// out-of-range entry would read outside them. Reading the values needs a reduction and a host sync; inside a
// CUDA-graph capture nothing can be read back, so the check runs on eager calls only (capture after one eager call
// with the same g_idx, as graph warm-up does anyway).
void check_g_idx_values(const at::Tensor& gi, int64_t groups, const Problem& pb) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(c10::cuda::getCurrentCUDAStream(gi.device().index()).stream(), &capture));
  if (capture != cudaStreamCaptureStatusNone) return;
  const auto [lo_t, hi_t] = at::aminmax(gi);
  const int64_t lo = lo_t.item<int>(), hi = hi_t.item<int>();
  TORCH_CHECK(lo >= 0 && hi < groups, pb.where(), ": g_idx values must lie in [0, ", groups,
              ") (the rows of scales/zeros), got values in [", lo, ", ", hi,
              "]; rebuild g_idx and the scales with awq_ext.pack.kernel_layout.pack_kernel");
}

// Checks the packed weight tensors against the kernel layout "w4tc-v1" for this n, k.
void check_packed(const at::Tensor& qweight, const at::Tensor& scales, const at::Tensor& zeros,
                  const std::optional<at::Tensor>& g_idx, at::ScalarType dtype, const at::Device& dev,
                  const Problem& pb) {
  const std::string w = pb.where();
  TORCH_CHECK(pb.n > 0 && pb.n % 8 == 0, w, ": n must be a positive multiple of 8 (out_features), got ", pb.n);
  TORCH_CHECK(pb.k > 0 && pb.k % 8 == 0, w, ": k must be a positive multiple of 8 (in_features), got ", pb.k);
  if (!g_idx.has_value()) {
    TORCH_CHECK(pb.group_size == 32 || pb.group_size == 64 || pb.group_size == 128, w,
                ": group_size must be 32, 64 or 128; requantize with one of those");
    TORCH_CHECK(pb.k % pb.group_size == 0, w, ": k is not divisible by group_size; pick a group size dividing k");
  }
  const int64_t n_pad = round_up(pb.n, 16), k_pad = round_up(pb.k, 64);
  const std::pair<const char*, const at::Tensor*> all[] = {{"qweight", &qweight}, {"scales", &scales}, {"zeros", &zeros}};
  for (const auto& [name, t] : all) {
    TORCH_CHECK(t->device() == dev, w, ": ", name, " is on ", t->device(), " but the activations are on ", dev,
                "; move the packed weights with .to(x.device)");
    TORCH_CHECK(t->is_contiguous(), w, ": ", name, " must be contiguous; call .contiguous()");
  }
  TORCH_CHECK(qweight.scalar_type() == at::kInt, w, ": qweight must be int32 (kernel layout), got ", qweight.scalar_type());
  TORCH_CHECK(qweight.dim() == 3 && qweight.size(0) == k_pad / 16 && qweight.size(1) == n_pad / 16 && qweight.size(2) == 32,
              w, ": qweight must be [k_pad/16, n_pad/16, 32] = [", k_pad / 16, ", ", n_pad / 16,
              ", 32] for this n and k, got ", qweight.sizes(), "; pack with awq_ext.pack.kernel_layout.pack_kernel");
  const int64_t groups = g_idx.has_value() ? scales.size(0) : (k_pad + pb.group_size - 1) / pb.group_size;
  TORCH_CHECK(scales.scalar_type() == dtype && zeros.scalar_type() == dtype, w,
              ": scales and zeros must have the activation dtype ", dtype, ", got ", scales.scalar_type(), " and ",
              zeros.scalar_type(), "; repack with pack_kernel(..., dtype=x.dtype)");
  TORCH_CHECK(scales.dim() == 2 && scales.size(0) == groups && scales.size(1) == n_pad, w,
              ": scales must be [n_groups_pad, n_pad] = [", groups, ", ", n_pad, "], got ", scales.sizes());
  TORCH_CHECK(zeros.sizes() == scales.sizes(), w, ": zeros must have the shape of scales ", scales.sizes(),
              ", got ", zeros.sizes());
  if (g_idx.has_value()) {
    const at::Tensor& gi = *g_idx;
    TORCH_CHECK(gi.device() == dev && gi.is_contiguous() && gi.scalar_type() == at::kInt, w,
                ": g_idx must be a contiguous int32 tensor on ", dev);
    TORCH_CHECK(gi.dim() == 1 && gi.size(0) == k_pad, w, ": g_idx must be [k_pad] = [", k_pad, "], got ", gi.sizes());
    check_g_idx_values(gi, groups, pb);
  }
}

void check_x(const at::Tensor& x, const Problem& pb) {
  const std::string w = pb.where();
  TORCH_CHECK(x.is_cuda(), w, ": activations must be on a CUDA device, got ", x.device());
  TORCH_CHECK(x.dim() == 2, w, ": activations must be 2-D [m, k]; flatten leading dims first, got ", x.sizes());
  TORCH_CHECK(x.size(1) == pb.k, w, ": activations have ", x.size(1), " features but the weight expects k=", pb.k);
  TORCH_CHECK(x.size(0) > 0, w, ": activations have no rows");
  TORCH_CHECK(x.is_contiguous(), w, ": activations must be contiguous; call .contiguous()");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0, w,
              ": activations must be 16-byte aligned; pass x.contiguous().clone() if x is a view");
}

// Turns a launcher status into an exception naming the problem.
void check_status(int rc, const Problem& pb) {
  if (rc == awq::kOk) return;
  if (rc == awq::kErrCuda) {
    const cudaError_t e = awq::last_cuda_error();
    TORCH_CHECK(false, pb.where(), ": kernel launch failed: ", cudaGetErrorString(e), " (", static_cast<int>(e), ")");
  }
  TORCH_CHECK(false, pb.where(), ": ", awq::status_string(rc));
}

awq::Device device_limits(int device) {
  static std::mutex mu;
  static std::map<int, awq::Device>* cache = new std::map<int, awq::Device>();  // leaked on purpose: no teardown order issues
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(device);
  if (it != cache->end()) return it->second;
  awq::Device d{0, 0, 0};
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  (*cache)[device] = d;
  return d;
}

// Whether the wgmma variant runs on `device` with this build (awq::wgmma_available: a probe kernel and a stream
// sync, once per device). Nothing can be synchronized inside a CUDA-graph capture: the first call must be eager.
bool wgmma_support(int device, cudaStream_t stream, const Problem& pb) {
  static std::mutex mu;
  static auto* cache = new std::map<int, bool>();  // leaked on purpose: no teardown order issues
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(device);
  if (it != cache->end()) return it->second;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  TORCH_CHECK(capture == cudaStreamCaptureStatusNone, pb.where(), ": the first wgmma call on a device probes it "
              "(a stream sync); call the op once outside the CUDA-graph capture (graph warm-up does)");
  C10_CUDA_CHECK(cudaPeekAtLastError());  // an earlier error is reported as itself, not as "no wgmma"
  // the flag comes from torch's caching allocator: no cudaMalloc (which would disturb another stream's capture)
  at::Tensor flag = at::zeros({1}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA, device));
  const int rc = awq::wgmma_available(device, flag.data_ptr<int>(), stream);
  if (rc < 0) {  // a CUDA error: reported, and not cached (a later call probes again)
    const cudaError_t e = awq::last_cuda_error();
    TORCH_CHECK(false, pb.where(), ": probing the device for wgmma failed: ", cudaGetErrorString(e));
  }
  (*cache)[device] = rc == 1;
  return rc == 1;
}

// Split-K tile counters (int32, all zero between launches: the last CTA of each tile resets its counter, so a
// buffer is zeroed once and then reused without a memset). One buffer per (device, stream) so concurrent
// streams never share counters. A buffer that must grow is retired but kept alive: another host thread may
// already hold its pointer for a launch on the same stream, and freeing it would hand that memory to the next
// allocation. Under CUDA-graph capture at::zeros is only recorded, not run, so an eager launch must never get a
// buffer made during capture (it would hold garbage), and a graph must never get an eager buffer (a replay on
// another stream would race eager launches): captures get their own buffers, keyed by (capture id, stream),
// zeroed by a memset node at the start of each replay and kept alive for as long as the graph may run.
int* counters_for(const at::Device& dev, cudaStream_t stream, int count) {
  using Key = std::tuple<int, cudaStream_t, unsigned long long>;  // (device, stream, capture id or 0)
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  unsigned long long capture_id = 0;
  C10_CUDA_CHECK(cudaStreamGetCaptureInfo(stream, &capture, &capture_id));
  if (capture == cudaStreamCaptureStatusInvalidated) {
    TORCH_CHECK(false, "awq_ext: the CUDA graph capture on this stream was invalidated before this op");
  }
  const bool capturing = capture == cudaStreamCaptureStatusActive;
  static std::mutex mu;
  static auto* cache = new std::map<Key, at::Tensor>();      // leaked on purpose: no teardown order issues
  static auto* retired = new std::vector<at::Tensor>();
  std::lock_guard<std::mutex> lock(mu);
  at::Tensor& t = (*cache)[Key{dev.index(), stream, capturing ? capture_id : 0ull}];
  if (!t.defined() || t.numel() < count) {
    if (t.defined()) retired->push_back(t);
    // rounded up so growth (a new memset) is rare; under capture this is one 16 KB buffer per graph
    t = at::zeros({std::max<int64_t>(count, 4096)}, at::TensorOptions().dtype(at::kInt).device(dev));
  }
  return t.data_ptr<int>();
}

enum class Path { kGemv, kGemm, kGemmWgmma };

at::Tensor run_w4(const char* op, Path path, const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                  const at::Tensor& zeros, const std::optional<at::Tensor>& g_idx, int64_t n, int64_t k,
                  int64_t group_size, int64_t split_k) {
  const Problem pb{op, x.dim() == 2 ? x.size(0) : -1, n, k, group_size};
  check_x(x, pb);
  const awq::DType dt = to_dtype(x, pb);
  check_packed(qweight, scales, zeros, g_idx, x.scalar_type(), x.device(), pb);
  const bool gemv = path == Path::kGemv, wgmma = path == Path::kGemmWgmma;
  TORCH_CHECK(!wgmma || !g_idx.has_value(), pb.where(), ": the wgmma path takes AWQ layouts (no g_idx); call "
              "w4a16_gemm for GPTQ-R");
  TORCH_CHECK(!gemv || pb.m <= awq::kGemvMaxM, pb.where(), ": the GEMV path takes m <= ", awq::kGemvMaxM,
              "; call w4a16_gemm (or awq_ext.kernels.ops.w4a16_linear, which dispatches by m)");
  TORCH_CHECK(split_k >= 0 && split_k <= awq::kMaxSplits, pb.where(), ": split_k must be 0 (auto) .. ",
              awq::kMaxSplits, ", got ", split_k);
  TORCH_CHECK(pb.m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX, pb.where(), ": sizes exceed int32");

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  const int m32 = static_cast<int>(pb.m), n32 = static_cast<int>(n), k32 = static_cast<int>(k);
  const int n_pad = static_cast<int>(round_up(n, 16)), k_pad = static_cast<int>(round_up(k, 64));
  awq::Device dev = device_limits(x.device().index());
  if (wgmma) {
    dev.wgmma = wgmma_support(x.device().index(), stream, pb);
    TORCH_CHECK(dev.wgmma, pb.where(), ": ", awq::status_string(awq::kErrNoWgmma),
                "; use w4a16_gemm (mma.sync) here");
  }
  const awq::Plan plan = gemv ? awq::plan_gemv(m32, n_pad, k_pad, dev, static_cast<int>(split_k), g_idx.has_value())
                              : awq::plan_gemm(m32, n_pad, k_pad, static_cast<int>(pb.group_size), dev,
                                               static_cast<int>(split_k), g_idx.has_value(), wgmma);

  at::Tensor out = at::empty({pb.m, n}, x.options());
  at::Tensor partials;
  awq::W4Args a{};
  a.dtype = dt;
  a.a = x.data_ptr();
  a.qweight = reinterpret_cast<const uint32_t*>(qweight.data_ptr<int32_t>());
  a.scales = scales.data_ptr();
  a.zeros = zeros.data_ptr();
  a.g_idx = g_idx.has_value() ? g_idx->data_ptr<int32_t>() : nullptr;
  a.c = out.data_ptr();
  a.m = m32;
  a.n = n32;
  a.k = k32;
  a.n_pad = n_pad;
  a.k_pad = k_pad;
  a.group_size = static_cast<int>(group_size);
  a.splits = plan.splits;
  if (plan.splits > 1) {
    partials = at::empty({static_cast<int64_t>(plan.partial_floats)}, x.options().dtype(at::kFloat));
    a.partials = partials.data_ptr<float>();
    a.counters = counters_for(x.device(), stream, plan.counters);
  }
  const int rc = gemv    ? awq::w4a16_gemv(a, stream)
                 : wgmma ? awq::w4a16_gemm_wgmma(a, dev, stream)
                         : (a.g_idx != nullptr ? awq::w4a16_gemm_gptq_r(a, stream) : awq::w4a16_gemm(a, stream));
  check_status(rc, pb);
  return out;
}

at::Tensor w4a16_gemm(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales, const at::Tensor& zeros,
                      const std::optional<at::Tensor>& g_idx, int64_t n, int64_t k, int64_t group_size, int64_t split_k) {
  return run_w4("w4a16_gemm", Path::kGemm, x, qweight, scales, zeros, g_idx, n, k, group_size, split_k);
}

at::Tensor w4a16_gemm_wgmma(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales,
                            const at::Tensor& zeros, const std::optional<at::Tensor>& g_idx, int64_t n, int64_t k,
                            int64_t group_size, int64_t split_k) {
  return run_w4("w4a16_gemm_wgmma", Path::kGemmWgmma, x, qweight, scales, zeros, g_idx, n, k, group_size, split_k);
}

at::Tensor w4a16_gemv(const at::Tensor& x, const at::Tensor& qweight, const at::Tensor& scales, const at::Tensor& zeros,
                      const std::optional<at::Tensor>& g_idx, int64_t n, int64_t k, int64_t group_size, int64_t split_k) {
  return run_w4("w4a16_gemv", Path::kGemv, x, qweight, scales, zeros, g_idx, n, k, group_size, split_k);
}

at::Tensor w4_dequantize(const at::Tensor& qweight, const at::Tensor& scales, const at::Tensor& zeros,
                         const std::optional<at::Tensor>& g_idx, int64_t n, int64_t k, int64_t group_size) {
  const Problem pb{"w4_dequantize", 0, n, k, group_size};
  TORCH_CHECK(scales.is_cuda(), pb.where(), ": packed weights must be on a CUDA device, got ", scales.device());
  const awq::DType dt = to_dtype(scales, pb);
  check_packed(qweight, scales, zeros, g_idx, scales.scalar_type(), scales.device(), pb);
  const c10::cuda::CUDAGuard guard(scales.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(scales.device().index()).stream();
  at::Tensor out = at::empty({n, k}, scales.options());
  const int rc = awq::w4_dequantize(dt, reinterpret_cast<const uint32_t*>(qweight.data_ptr<int32_t>()), scales.data_ptr(),
                                    zeros.data_ptr(), g_idx.has_value() ? g_idx->data_ptr<int32_t>() : nullptr,
                                    out.data_ptr(), static_cast<int>(n), static_cast<int>(k),
                                    static_cast<int>(round_up(n, 16)), static_cast<int>(round_up(k, 64)),
                                    static_cast<int>(group_size), stream);
  check_status(rc, pb);
  return out;
}

// Meta (fake) implementations: output shapes only, so torch.compile can trace through the ops.
at::Tensor w4a16_meta(const at::Tensor& x, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const std::optional<at::Tensor>&, int64_t n, int64_t k, int64_t, int64_t) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k, "awq_ext w4a16: activations must be [m, k=", k, "], got ", x.sizes());
  return at::empty({x.size(0), n}, x.options());
}

at::Tensor w4_dequantize_meta(const at::Tensor&, const at::Tensor& scales, const at::Tensor&,
                              const std::optional<at::Tensor>&, int64_t n, int64_t k, int64_t) {
  return at::empty({n, k}, scales.options());
}

}  // namespace

TORCH_LIBRARY(awq_ext, m) {
  m.def("w4a16_gemm(Tensor x, Tensor qweight, Tensor scales, Tensor zeros, Tensor? g_idx, int n, int k, "
        "int group_size, int split_k=0) -> Tensor");
  m.def("w4a16_gemv(Tensor x, Tensor qweight, Tensor scales, Tensor zeros, Tensor? g_idx, int n, int k, "
        "int group_size, int split_k=0) -> Tensor");
  m.def("w4a16_gemm_wgmma(Tensor x, Tensor qweight, Tensor scales, Tensor zeros, Tensor? g_idx, int n, int k, "
        "int group_size, int split_k=0) -> Tensor");
  m.def("w4_dequantize(Tensor qweight, Tensor scales, Tensor zeros, Tensor? g_idx, int n, int k, int group_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(awq_ext, CUDA, m) {
  m.impl("w4a16_gemm", &w4a16_gemm);
  m.impl("w4a16_gemv", &w4a16_gemv);
  m.impl("w4a16_gemm_wgmma", &w4a16_gemm_wgmma);
  m.impl("w4_dequantize", &w4_dequantize);
}

TORCH_LIBRARY_IMPL(awq_ext, Meta, m) {
  m.impl("w4a16_gemm", &w4a16_meta);
  m.impl("w4a16_gemv", &w4a16_meta);
  m.impl("w4a16_gemm_wgmma", &w4a16_meta);
  m.impl("w4_dequantize", &w4_dequantize_meta);
}

// A Python module init so the library is importable both from the JIT build (torch.utils.cpp_extension.load)
// and from setup.py's ahead-of-time build; importing it runs the registrations above.
#define AWQ_CAT_(a, b) a##b
#define AWQ_CAT(a, b) AWQ_CAT_(a, b)
#define AWQ_STR_(a) #a
#define AWQ_STR(a) AWQ_STR_(a)
PyMODINIT_FUNC AWQ_CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, AWQ_STR(TORCH_EXTENSION_NAME),
                                   "awq_ext W4A16 CUDA kernels; ops live under torch.ops.awq_ext", -1, nullptr};
  return PyModule_Create(&def);
}
