// A probe kernel for the emulated wgmma (tests/kernels/test_wgmma_emulation.py): one warpgroup (128 threads)
// computes D[64 x 64] = A[64 x 64] x W^T, W[n][k] given row-major (n, k), in four k16 wgmma steps.
// B (= W^T, K-major) is placed in shared memory by cp.async in the K-major 128-byte-swizzled layout, written here
// from the PTX ISA's layout description (9.7.15.5.1.2, Table 38: 8 rows of 128 bytes per 1024-byte atom, 16-byte
// unit j of row n stored at unit j ^ (n % 8)), independently of the emulator's descriptor decoder.
// Usage: wgmma_probe DIR DTYPE(0 f16, 1 bf16) VARIANT LATE(0/1) SEED; reads DIR/a.bin, DIR/w.bin (64 x 64 16-bit),
// writes DIR/d.bin (64 x 64 float32, row-major). The variants are deliberate bugs the emulator must expose.
#include <fstream>
#include <string>

#include "ptx.cuh"

enum Variant { kOk, kReadEarly, kOverwrite, kNoProxyFence, kNoWgmmaFence, kDivergent, kExited, kSwizzle64, kRow1Start,
               kNoCpWait, kChainWaits, kBase1024, kBase512, kWriteD, kPlainStore, kPlainNoFence };

template <typename T>
void probe_kernel(const uint16_t* a_g, const uint16_t* w_g, float* d_g, int variant) {
  // The tile at the first 1024-aligned shared address, or 1024 / 512 past it (the latter a swizzle pattern that
  // does not start on 1024 bytes).
  const uint32_t aligned = (1024 - emu::kDynSmemBase % 1024) % 1024;
  unsigned char* smem = emu::g_cta->dyn + aligned + (variant == kBase1024 ? 1024 : variant == kBase512 ? 512 : 0);
  const int t = static_cast<int>(threadIdx.x), warp = t / 32, lane = t % 32, g = lane / 4, q = lane % 4;
  for (int c = t; c < 64 * 8; c += 128) {  // 16-byte unit j of row n
    const int n = c / 8, j = c % 8;
    unsigned char* dst = smem + n * 128 + ((j ^ (n % 8)) * 16);
    if (variant == kPlainStore || variant == kPlainNoFence)
      std::memcpy(dst, w_g + n * 64 + j * 8, 16);  // st.shared: a generic-proxy write
    else
      awq::cp_async16(awq::smem_u32(dst), w_g + n * 64 + j * 8, true);
  }
  awq::cp_async_commit();
  if (variant != kNoCpWait) awq::cp_async_wait<0>();
  if (variant != kNoProxyFence && variant != kPlainNoFence) awq::fence_proxy_async_shared();
  __syncthreads();
  if (variant == kExited && warp == 3) return;
  if (variant != kNoWgmmaFence) awq::wgmma_fence();
  float d[32];
  for (float& v : d) v = 0.0f;
  const auto pack = [&](int row, int col) {
    return static_cast<uint32_t>(a_g[row * 64 + col]) | (static_cast<uint32_t>(a_g[row * 64 + col + 1]) << 16);
  };
  for (int ks = 0; ks < 4; ++ks) {
    const int r0 = 16 * warp + g, c0 = 16 * ks + 2 * q;
    const uint32_t a[4] = {pack(r0, c0), pack(r0 + 8, c0), pack(r0, c0 + 8), pack(r0 + 8, c0 + 8)};
    uint64_t desc = awq::wgmma_desc_sw128(awq::smem_u32(smem) + 32u * static_cast<uint32_t>(ks));
    if (variant == kSwizzle64) desc = (desc & ~(3ull << 62)) | (2ull << 62);
    if (variant == kRow1Start) desc += 128 >> 4;
    if (variant == kDivergent && warp == 2 && ks == 3) break;
    awq::wgmma_m64n64k16_rs<T>(d, a, desc);
    if (variant == kChainWaits) {
      awq::wgmma_commit();
      if (ks % 2 == 1) awq::wgmma_wait<1>();
    }
  }
  if (variant != kChainWaits) awq::wgmma_commit();
  if (variant == kWriteD) d[5] = 1.0f;
  float early[32];
  for (int i = 0; i < 32; ++i) early[i] = d[i];
  if (variant == kOverwrite) {  // zero the tile, properly waited and fenced, while the wgmmas are in flight
    for (int c = t; c < 64 * 8; c += 128) awq::cp_async16(awq::smem_u32(smem + c * 16), w_g, false);
    awq::cp_async_commit();
    awq::cp_async_wait<0>();
    awq::fence_proxy_async_shared();
    __syncthreads();
  }
  awq::wgmma_wait<0>();
  const float* res = variant == kReadEarly ? early : d;
  for (int i = 0; i < 32; ++i) {
    const int row = 16 * warp + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * q + (i % 2);
    d_g[row * 64 + col] = res[i];
  }
}

int main(int argc, char** argv) {
  if (argc != 6) return 64;
  const std::string dir = argv[1];
  const int dtype = std::stoi(argv[2]), variant = std::stoi(argv[3]);
  emu::g_mode = std::stoi(argv[4]) ? emu::kLate : emu::kEarly;
  emu::g_seed = static_cast<unsigned>(std::stoul(argv[5]));
  emu::g_rng.seed(emu::g_seed);
  auto* a = static_cast<uint16_t*>(emu::galloc(64 * 64 * 2, 0));
  auto* w = static_cast<uint16_t*>(emu::galloc(64 * 64 * 2, 0));
  auto* d = static_cast<float*>(emu::galloc(64 * 64 * 4, 0xFF));
  for (auto [name, p] : {std::pair{"/a.bin", a}, std::pair{"/w.bin", w}}) {
    std::ifstream f(dir + name, std::ios::binary);
    f.read(reinterpret_cast<char*>(p), 64 * 64 * 2);
    if (f.gcount() != 64 * 64 * 2) emu::fail("cannot read %s%s", dir.c_str(), name);
  }
  std::snprintf(emu::g_where, sizeof(emu::g_where), "wgmma_probe variant %d", variant);
  const dim3 grid(1), block(128);
  if (dtype == 0)
    emu::launch(probe_kernel<__half>, grid, block, 8192 + 3072, nullptr, a, w, d, variant);
  else
    emu::launch(probe_kernel<__nv_bfloat16>, grid, block, 8192 + 3072, nullptr, a, w, d, variant);
  std::ofstream(dir + "/d.bin", std::ios::binary).write(reinterpret_cast<const char*>(d), 64 * 64 * 4);
  return 0;
}
