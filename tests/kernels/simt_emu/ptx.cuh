// Emulator stand-in for csrc/ptx.cuh (same names and signatures): each PTX wrapper is implemented from its
// PTX ISA definition on the host. fp16/bf16 ops round once (round-to-nearest-even) from an exact double.
#pragma once

#include <cstdint>
#include <cstring>

// The emulated wgmma ops below stand for the sm_90a build (csrc/ptx.cuh defines this per target).
#define AWQ_WGMMA 1

namespace awq {

// A 32-bit shared address: the CTA's dynamic shared memory starts at emu::kDynSmemBase, as on the GPU (after the
// reserved kilobyte and the static shared memory), so alignment the kernels derive from it is tested for real;
// out-of-range addresses fail in the emulated ops' checks.
inline uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - emu::g_cta->dyn) + emu::kDynSmemBase;
}
inline unsigned char* smem_ptr(uint32_t a) {
  if (a < emu::kDynSmemBase) emu::fail("shared address 0x%x below the dynamic shared memory at 0x%x", a, emu::kDynSmemBase);
  return emu::g_cta->dyn + (a - emu::kDynSmemBase);
}

inline void cp_async16(uint32_t smem, const void* gmem, bool pred) { emu::cp_async(smem_ptr(smem), gmem, pred ? 16 : 0); }
// L2 cache policies change no values: the policy is an opaque token, the copy and load are the plain ones.
inline uint64_t evict_first_policy() { return 0x1ull; }
inline void cp_async16_stream(uint32_t smem, const void* gmem, bool pred, uint64_t) { cp_async16(smem, gmem, pred); }
inline void cp_async_commit() { emu::commit(); }
template <int N>
inline void cp_async_wait() {
  emu::wait_group(N);
}

inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) { emu::ldmatrix_x4(r, smem_ptr(smem)); }
inline uint32_t pinned(uint32_t v) { return v; }
template <typename P>
inline const P* pinned_ptr(const P* v) { return v; }
inline const void* offset_wide(const void* base, uint32_t a, uint32_t b) {
  return static_cast<const unsigned char*>(base) + static_cast<uint64_t>(a) * b;
}
inline uint32_t ld_shared_u32(uint32_t smem) { return emu::ld_shared_u32(smem_ptr(smem)); }

template <typename T>
inline void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  emu::mma<T>(c, a, b0, b1);
}

// wgmma (sm_90): the matrix descriptor per PTX ISA 9.7.15.5.1.2.2, encode(x) = (x & 0x3FFFF) >> 4: start address in
// bits 13-0, leading byte offset 1 (unused by the K-major 128B-swizzled layout) in 29-16, stride byte offset 1024
// (8 rows of 128 bytes) in 45-32, base offset 0, swizzle mode 1 (128-byte) in 63-62. The ops are in emu_runtime.h.
// A compiler barrier on the GPU; nothing to emulate (the emulator's accumulators are plain memory).
inline void wgmma_fence_operand(float (&)[32]) {}
inline uint64_t wgmma_desc_sw128(uint32_t smem_addr) {
  const auto enc = [](uint32_t x) { return static_cast<uint64_t>((x & 0x3FFFFu) >> 4); };
  return enc(smem_addr) | (1ull << 16) | (enc(1024) << 32) | (1ull << 62);
}
inline void wgmma_fence() { emu::wgmma_fence(); }
inline void wgmma_commit() { emu::wgmma_commit(); }
template <int N>
inline void wgmma_wait() {
  emu::wgmma_wait(N);
}
inline void fence_proxy_async_shared() { emu::fence_proxy_async(); }
template <typename T>
inline void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b) {
  emu::wgmma_issue<T>(d, a, desc_b);
}

template <int LUT>
inline uint32_t lop3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d = 0;
  for (int i = 0; i < 8; ++i)
    if ((LUT >> i) & 1) d |= ((i & 4) ? a : ~a) & ((i & 2) ? b : ~b) & ((i & 1) ? c : ~c);
  return d;
}

inline uint4 ld_stream_v4(const void* p, uint64_t) {
  emu::check_global(p, 16, 16, "ld.global.nc.v4");
  uint4 r;
  std::memcpy(&r, p, 16);
  return r;
}

inline uint32_t bcast_lo(uint32_t a) { return (a & 0xFFFFu) | (a << 16); }
inline uint32_t bcast_hi(uint32_t a) { return (a >> 16) | (a & 0xFFFF0000u); }

namespace emu_detail {
inline double h2d(uint16_t b) {
  __half h;
  std::memcpy(&h, &b, 2);
  return static_cast<double>(__half2float(h));
}
inline uint16_t d2h(double v) {
  const __half h = __double2half(v);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
inline double bf2d(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t d2bf(double v) {
  const __nv_bfloat16 h = __double2bfloat16(v);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
template <typename F>
inline uint32_t lanes(uint32_t a, uint32_t b, uint32_t c, bool bf, F f) {
  uint32_t out = 0;
  for (int h = 0; h < 2; ++h) {
    const auto get = [&](uint32_t x) { return static_cast<uint16_t>(x >> (16 * h)); };
    const double r = bf ? f(bf2d(get(a)), bf2d(get(b)), bf2d(get(c))) : f(h2d(get(a)), h2d(get(b)), h2d(get(c)));
    out |= static_cast<uint32_t>(bf ? d2bf(r) : d2h(r)) << (16 * h);
  }
  return out;
}
}  // namespace emu_detail

inline uint32_t hsub2_f16(uint32_t a, uint32_t b) {
  return emu_detail::lanes(a, b, 0, false, [](double x, double y, double) { return x - y; });
}
inline uint32_t hadd2_f16(uint32_t a, uint32_t b) {
  return emu_detail::lanes(a, b, 0, false, [](double x, double y, double) { return x + y; });
}
inline uint32_t hmul2_f16(uint32_t a, uint32_t b) {
  return emu_detail::lanes(a, b, 0, false, [](double x, double y, double) { return x * y; });
}
inline uint32_t hfma2_f16(uint32_t a, uint32_t b, uint32_t c) {
  return emu_detail::lanes(a, b, c, false, [](double x, double y, double z) { return x * y + z; });
}
inline uint32_t hfma2_bf16(uint32_t a, uint32_t b, uint32_t c) {
  return emu_detail::lanes(a, b, c, true, [](double x, double y, double z) { return x * y + z; });
}

}  // namespace awq
