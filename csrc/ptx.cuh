// PTX wrappers used by the W4A16 kernels, all in one place. Each says why it is inline PTX
// rather than a CUDA C++ construct. Needs sm_80+ (cp.async, bf16 mma).
#pragma once

#include <cstdint>
#include <type_traits>
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

// ---- Hopper warpgroup MMA (sm_90a only: compiled for arch=compute_90a, else the bodies are empty and the host never
// launches the kernel that calls them, see wgmma_available) ---------------------------------------------------------
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AWQ_WGMMA 1
#else
#define AWQ_WGMMA 0
#endif

// Why: wgmma reads its B operand from shared memory through a 64-bit matrix descriptor (no C++ form). This one
// describes a K-major tile of 128-byte rows with the 128-byte swizzle (16-byte chunk c of row r at c ^ (r % 8),
// the layout the GEMM's cp.async copies give A), 8-row atoms 1024 bytes apart (stride byte offset), leading byte
// offset unused for this layout (1), base offset 0 (atoms 1024-byte aligned). Fields hold addresses >> 4.
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t smem_addr) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

// Why: wgmma.fence orders this thread's register writes (the dequantized A fragments, the accumulators) before
// the asynchronous MMAs that read them; commit/wait group them like cp.async groups (N an immediate).
__device__ __forceinline__ void wgmma_fence() {
#if AWQ_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if AWQ_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if AWQ_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Why: an empty asm that reads and writes every accumulator keeps the compiler from moving an access to them across
// a wgmma fence or wait: between issue and wait_group they belong to the asynchronous MMA.
__device__ __forceinline__ void wgmma_fence_operand(float (&d)[32]) {
#pragma unroll
  for (int i = 0; i < 32; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Why: cp.async writes shared memory through the generic proxy, wgmma reads it through the async proxy; the writer
// makes its completed copies visible to the async proxy with this fence (then a barrier orders all writers).
__device__ __forceinline__ void fence_proxy_async_shared() {
#if AWQ_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Why: the warpgroup MMA with A from registers (the weights, dequantized in place: they never touch shared memory)
// and B from shared memory (the activations): D[64 x 64] += A[64 x 16] B[16 x 64], fp32 accumulators. Asynchronous:
// d and a must not be touched until a wgmma_wait retires its group. "+f": every accumulator is read and written.
template <typename T>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b) {
#if AWQ_WGMMA
#define AWQ_WGMMA_ASM(TY)                                                                                           \
  asm volatile("{\n"                                                                                                \
               ".reg .pred p;\n"                                                                                    \
               "setp.ne.b32 p, %37, 0;\n"                                                                           \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                                          \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                            \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "                  \
               "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n"                                                           \
               "}\n"                                                                                                \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),   \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),          \
                 "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),        \
                 "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),        \
                 "+f"(d[29]), "+f"(d[30]), "+f"(d[31])                                                             \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))  /* scale-d: D += A B */
  if constexpr (sizeof(T) == 2 && std::is_same<T, __half>::value) {
    AWQ_WGMMA_ASM("f16");
  } else {
    AWQ_WGMMA_ASM("bf16");
  }
#undef AWQ_WGMMA_ASM
#endif
}

}  // namespace awq
