// PTX wrappers used by the W4A16 kernels, all in one place. Each says why it is inline PTX
// rather than a CUDA C++ construct. Needs sm_80+ (cp.async, bf16 mma).
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace awq {

// Why: a 32-bit shared-memory address is what cp.async / ldmatrix take; cvta keeps the 64-bit generic pointer out of the hot loop.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Why: cp.async copies global->shared without staging through registers, so several pipeline stages are in flight;
// src-size 0 zero-fills (and reads nothing), which predicates out-of-range rows without a branch or an uninitialised
// tile. The destination is a 32-bit shared address (smem_u32), so a hot loop can keep it as base + immediate.
__device__ __forceinline__ void cp_async16(uint32_t smem, const void* gmem, bool pred) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_bytes) : "memory");
}

// Why: an L2 policy "evict first" for data read exactly once (the packed weights): streaming a 50 MB weight
// through the 60 MB L2 must not evict the activations, scales and split-K partials that are reused.
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// Why: cp.async with the L2 cache-policy operand (no C++ form) so streamed weight tiles carry evict-first.
__device__ __forceinline__ void cp_async16_stream(uint32_t smem, const void* gmem, bool pred, uint64_t policy) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(smem), "l"(gmem),
               "r"(src_bytes), "l"(policy)
               : "memory");
}

// Why: commit groups are how the multi-stage pipeline counts stages in flight (no C++ equivalent without cuda::pipeline overhead).
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Why: wait until at most N committed groups are still in flight (N must be an immediate).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Why: ldmatrix hands each lane 4 bytes of each of four 8x8 b16 tiles in the mma fragment layout in one
// instruction: for A the m16n8k16 A fragment, for the packed weights each lane's own word of four k16 rows.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem));
}

// Why: an opaque copy (asm volatile cannot be re-executed elsewhere) pins a loop-invariant value in a register:
// without it ptxas rematerializes lane-dependent shared addresses from threadIdx inside the hot loop, several
// instructions per address per iteration, to save the few registers they would hold.
__device__ __forceinline__ uint32_t pinned(uint32_t v) {
  uint32_t r;
  asm volatile("mov.b32 %0, %1;\n" : "=r"(r) : "r"(v));
  return r;
}

// Why: the 64-bit twin of pinned() for a loop-invariant global pointer (a row base the copies offset per step).
template <typename P>
__device__ __forceinline__ const P* pinned_ptr(const P* v) {
  uint64_t r;
  asm volatile("mov.b64 %0, %1;\n" : "=l"(r) : "l"(reinterpret_cast<uint64_t>(v)));
  return reinterpret_cast<const P*>(r);
}

// Why: base + a * b (bytes) as one mad.wide.u32 (IMAD.WIDE.U32); the C++ form of a 32x32->64 product added to a
// pointer comes out as several instructions with zero high words.
__device__ __forceinline__ const void* offset_wide(const void* base, uint32_t a, uint32_t b) {
  uint64_t r;
  asm("mad.wide.u32 %0, %1, %2, %3;\n" : "=l"(r) : "r"(a), "r"(b), "l"(reinterpret_cast<uint64_t>(base)));
  return reinterpret_cast<const void*>(r);
}

// Why: a 32-bit shared load at a 32-bit shared address (base + immediate in the hot loop, like ldmatrix's).
__device__ __forceinline__ uint32_t ld_shared_u32(uint32_t smem) {
  uint32_t r;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(r) : "r"(smem));
  return r;
}

// Why: mma.sync m16n8k16 is the Ampere/Hopper tensor-core op reachable without wgmma; fp32 accumulation keeps long K exact enough.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_m16n8k16<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_m16n8k16<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                            uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Why: lop3 computes (a & b) | c in one instruction with an immediate truth table; the compiler does not always fuse it.
template <int LUT>
__device__ __forceinline__ uint32_t lop3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, %4;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"(LUT));
  return d;
}

// Why: 16-byte read-only weight load that skips L1 (read once) and carries the L2 evict-first policy.
__device__ __forceinline__ uint4 ld_stream_v4(const void* p, uint64_t policy) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p), "l"(policy));
  return r;
}

// Why: a half2 broadcast (lo, lo) / (hi, hi) written as PTX b16 moves, which ptxas folds into the .H0_H0 / .H1_H1
// operand selector of the f16x2/bf16x2 instruction that reads it (free), where a PRMT would cost one instruction.
__device__ __forceinline__ uint32_t bcast_lo(uint32_t a) {
  uint32_t d;
  asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %1;\n mov.b32 %0, {l, l};\n}\n" : "=r"(d) : "r"(a));
  return d;
}
__device__ __forceinline__ uint32_t bcast_hi(uint32_t a) {
  uint32_t d;
  asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %1;\n mov.b32 %0, {h, h};\n}\n" : "=r"(d) : "r"(a));
  return d;
}

// Why: explicit .rn on every fp16/bf16 op forbids the code generator from contracting a mul/add pair into an
// fma, so dequantization is bit-exact with (q - z) * s rounded once. bf16 uses fma.rn.bf16x2 only (sm_80 has no
// add/sub/mul.bf16x2; those need sm_90): a - b = fma(b, -1, a) and a * b = fma(a, b, -0) are still single roundings.
__device__ __forceinline__ uint32_t hsub2_f16(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
__device__ __forceinline__ uint32_t hadd2_f16(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("add.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
__device__ __forceinline__ uint32_t hmul2_f16(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}
__device__ __forceinline__ uint32_t hfma2_f16(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ uint32_t hfma2_bf16(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

}  // namespace awq
