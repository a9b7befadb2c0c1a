// Runs one W4A16 op of csrc/ through the SIMT emulator the way binding.cpp does (plan -> workspace -> launcher)
// and writes the output. Usage: driver CASE_DIR   (CASE_DIR/case.txt + *.bin written by test_simt_emulation.py),
// or driver --plans FILE (the launch plans only, see print_plans).
// Exit 0 and out.bin on success; exit 2 with the status string when the launcher rejects the call; exit 3
// (emulator) on a fault the GPU would hit: misaligned or out-of-range access, deadlock, divergent collective,
// reading a stage before its cp.async landed, counters not returned to zero, non-deterministic split-K.
#include <fstream>
#include <sstream>
#include <string>

#include "awq_kernels.h"

extern "C" {
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (value < 0 || value > emu::kMaxOptinSmem) return cudaErrorInvalidValue;
  emu::g_max_dyn_smem[func] = value;
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return e;
}
const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated launch error"; }
// wgmma_available (gemm.cu) probes a GPU; the driver states the emulated device's support in awq::Device instead.
cudaError_t cudaDeviceGetAttribute(int*, cudaDeviceAttr, int) { return cudaErrorNotSupported; }
cudaError_t cudaPeekAtLastError(void) { return emu::g_last_error; }
cudaError_t cudaMemcpyAsync(void*, const void*, size_t, cudaMemcpyKind, cudaStream_t) { return cudaErrorNotSupported; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaErrorNotSupported; }
}

namespace {

std::map<std::string, long> read_case(const std::string& dir) {
  std::ifstream f(dir + "/case.txt");
  std::map<std::string, long> kv;
  std::string key;
  long v;
  while (f >> key >> v) kv[key] = v;
  return kv;
}

void* load(const std::string& path, size_t bytes) {
  void* p = emu::galloc(bytes, 0);
  std::ifstream f(path, std::ios::binary);
  if (!f) emu::fail("cannot open %s", path.c_str());
  f.read(static_cast<char*>(p), static_cast<std::streamsize>(bytes));
  if (static_cast<size_t>(f.gcount()) != bytes) emu::fail("%s: expected %zu bytes", path.c_str(), bytes);
  return p;
}

}  // namespace

// driver --plans FILE: one line "path m n k group_size sms smem_per_sm gidx split_request" per case (path 0 = GEMV,
// 1 = GEMM, 2 = its wgmma variant);
// prints the plan_gemv / plan_gemm result per line, for the static model's mirror to reproduce.
int print_plans(const char* file) {
  std::ifstream f(file);
  int path, m, n, k, gs, sms, smem, gidx, request;
  while (f >> path >> m >> n >> k >> gs >> sms >> smem >> gidx >> request) {
    const int n_pad = (n + 15) / 16 * 16, k_pad = (k + 63) / 64 * 64;
    const awq::Device dev{sms, smem, path == 2 ? 1 : 0};
    const awq::Plan p = path == 0 ? awq::plan_gemv(m, n_pad, k_pad, dev, request, gidx != 0)
                                  : awq::plan_gemm(m, n_pad, k_pad, gs, dev, request, gidx != 0, path == 2);
    std::printf("%d %zu %d %d %.17g %.17g\n", p.splits, p.partial_floats, p.counters, p.ctas_per_sm, p.wave_efficiency,
                p.bytes_in_flight_per_sm);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--plans") return print_plans(argv[2]);
  if (argc != 2) return 64;
  const std::string dir = argv[1];
  auto kv = read_case(dir);
  const std::string ops[] = {"gemm", "gemv", "dequant", "gemm_wgmma"};
  const int op = static_cast<int>(kv.at("op"));
  const auto dtype = static_cast<awq::DType>(kv.at("dtype"));
  const int m = static_cast<int>(kv.at("m")), n = static_cast<int>(kv.at("n")), k = static_cast<int>(kv.at("k"));
  const int gs = static_cast<int>(kv.at("group_size")), has_gidx = static_cast<int>(kv.at("gidx"));
  const int split_k = static_cast<int>(kv.at("split_k")), sms = static_cast<int>(kv.at("sms"));
  const int reps = static_cast<int>(kv.at("reps"));
  emu::g_mode = kv.at("mode") ? emu::kLate : emu::kEarly;
  emu::g_seed = static_cast<unsigned>(kv.at("seed"));
  emu::g_rng.seed(emu::g_seed);
  emu::g_host_threads = kv.count("threads") ? static_cast<int>(kv.at("threads")) : 1;
  const int n_pad = (n + 15) / 16 * 16, k_pad = (k + 63) / 64 * 64;
  const long groups = kv.at("groups");

  const auto* qw = static_cast<const uint32_t*>(load(dir + "/qweight.bin", static_cast<size_t>(k_pad) * n_pad / 2));
  const void* scales = load(dir + "/scales.bin", static_cast<size_t>(groups) * n_pad * 2);
  const void* zeros = load(dir + "/zeros.bin", static_cast<size_t>(groups) * n_pad * 2);
  const auto* gidx = has_gidx ? static_cast<const int32_t*>(load(dir + "/gidx.bin", static_cast<size_t>(k_pad) * 4)) : nullptr;

  std::ofstream out(dir + "/out.bin", std::ios::binary);
  std::ostringstream log;
  if (op == 2) {
    void* w = emu::galloc(static_cast<size_t>(n) * k * 2, 0xFF);
    std::snprintf(emu::g_where, sizeof(emu::g_where), "w4_dequantize");
    const int rc = awq::w4_dequantize(dtype, qw, scales, zeros, gidx, w, n, k, n_pad, k_pad, gs, nullptr);
    if (rc != awq::kOk) {
      std::fprintf(stderr, "status %d: %s\n", rc, awq::status_string(rc));
      return 2;
    }
    out.write(static_cast<const char*>(w), static_cast<std::streamsize>(static_cast<size_t>(n) * k * 2));
    return 0;
  }

  const void* x = load(dir + "/x.bin", static_cast<size_t>(m) * k * 2);
  const int smem_per_sm = kv.count("smem_per_sm") ? static_cast<int>(kv.at("smem_per_sm")) : 233472;
  const bool wgmma = op == 3;
  const awq::Device dev{sms, smem_per_sm, wgmma ? 1 : 0};
  const awq::Plan plan = op == 1 ? awq::plan_gemv(m, n_pad, k_pad, dev, split_k, has_gidx != 0)
                                 : awq::plan_gemm(m, n_pad, k_pad, gs, dev, split_k, has_gidx != 0, wgmma);
  int* counters = plan.splits > 1 ? static_cast<int*>(emu::galloc(static_cast<size_t>(plan.counters) * 4, 0)) : nullptr;
  std::vector<char> first;
  for (int rep = 0; rep < reps; ++rep) {
    void* c = emu::galloc(static_cast<size_t>(m) * n * 2, 0xFF);
    float* partials = plan.splits > 1 ? static_cast<float*>(emu::galloc(plan.partial_floats * 4, 0xFF)) : nullptr;
    awq::W4Args a{};
    a.dtype = dtype;
    a.a = x;
    a.qweight = qw;
    a.scales = scales;
    a.zeros = zeros;
    a.g_idx = gidx;
    a.c = c;
    a.m = m;
    a.n = n;
    a.k = k;
    a.n_pad = n_pad;
    a.k_pad = k_pad;
    a.group_size = gs;
    a.splits = plan.splits;
    a.partials = partials;
    a.counters = counters;
    std::snprintf(emu::g_where, sizeof(emu::g_where), "%s m=%d n=%d k=%d splits=%d rep=%d", ops[op].c_str(), m, n, k,
                  plan.splits, rep);
    const int rc = op == 1 ? awq::w4a16_gemv(a, nullptr)
                   : wgmma ? awq::w4a16_gemm_wgmma(a, dev, nullptr)
                           : (gidx ? awq::w4a16_gemm_gptq_r(a, nullptr) : awq::w4a16_gemm(a, nullptr));
    if (rc != awq::kOk) {
      std::fprintf(stderr, "status %d: %s\n", rc, awq::status_string(rc));
      return 2;
    }
    for (int i = 0; i < plan.counters; ++i)
      if (counters[i] != 0) emu::fail("split-K counter %d is %d after the launch (must return to 0)", i, counters[i]);
    const char* cc = static_cast<const char*>(c);
    std::vector<char> bytes(cc, cc + static_cast<size_t>(m) * n * 2);
    if (rep == 0) {
      first = bytes;
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    } else if (bytes != first) {
      emu::fail("repeat %d differs from the first run (split-K must be deterministic)", rep);
    }
    emu::gfree(c);
    if (partials) emu::gfree(partials);
  }
  std::printf("splits %d ctas_per_sm %d wave_efficiency %.9f bytes_in_flight_per_sm %.3f\n", plan.splits, plan.ctas_per_sm,
              plan.wave_efficiency, plan.bytes_in_flight_per_sm);
  return 0;
}
