// W4A16 tensor-core GEMM, shared by the reorder-free AWQ kernel (gemm.cu) and the GPTQ-R variant
// (gemm_gptq_r.cu): C[m, n] = A[m, k] @ W[n, k]^T, W in the kernel layout "w4tc-v1".
//
// Per CTA: a BM x BN tile of C over a K range (split-K slice). Each BK = 64 step moves through a
// STAGES-deep cp.async ring in shared memory: A (BM x 64, XOR-swizzled so ldmatrix is conflict-free), the
// packed weights (4 k16 rows x BN / 16 blocks of 128 bytes, copied verbatim with the L2 evict-first policy:
// they are read once) and either the step's scale/zero rows (AWQ: the group of a k16 step is k / G) or its
// 64 g_idx entries (GPTQ-R: scales and zeros are then gathered from global memory per k row, the irregular
// access the AWQ paper measures).
//
// B fragments are 16 bytes per lane: one ldmatrix.x4 on the weight blocks of one n16 column block in the four
// k16 rows of the stage gives every lane its own packed word of each (matrix i = k16 row i, its row r = the
// 16-byte chunk r of that block = the words of lanes 4r .. 4r+3, and ldmatrix hands lane 4g+t the 4 bytes
// at 4t of row g: exactly its word). Warps ldmatrix their A fragments, dequantize the weight words in
// registers into mma B fragments (dequant.cuh) and issue mma.m16n8k16 with fp32 accumulators.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "awq_kernels.h"
#include "dequant.cuh"
#include "launch_common.h"
#include "ptx.cuh"
#include "splitk.cuh"
#include "tile_configs.cuh"

namespace awq {

template <typename T>
struct Pack2;
template <>
struct Pack2<__half> {
  __device__ __forceinline__ static uint32_t from_floats(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ static __half one(float a) { return __float2half_rn(a); }
};
template <>
struct Pack2<__nv_bfloat16> {
  __device__ __forceinline__ static uint32_t from_floats(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ static __nv_bfloat16 one(float a) { return __float2bfloat16_rn(a); }
};

// Shared-memory footprint of one pipeline stage.
template <typename Tile, bool GIDX>
struct StageLayout {
  static constexpr int kSlots = 2;  // scale/zero rows per stage: BK / G for G = 32, else 1 (room for 2)
  static constexpr int kABytes = Tile::BM * Tile::BK * 2;
  static constexpr int kBBytes = Tile::BK * Tile::BN / 2;
  static constexpr int kSBytes = GIDX ? 0 : 2 * kSlots * Tile::BN * 2;  // scales + zeros
  static constexpr int kIBytes = GIDX ? Tile::BK * 4 : 0;               // g_idx
  static constexpr int kStageBytes = kABytes + kBBytes + kSBytes + kIBytes;
  // WGMMA: the ring starts on a 1024-byte boundary (the descriptor's swizzle atoms), found at run time in a
  // buffer 1 KB larger (dynamic shared memory is only 16-byte aligned after the kernel's static shared flag).
  static constexpr int kAlignPad = Tile::WGMMA ? 1024 : 0;
  static constexpr int kTotalBytes = kStageBytes * Tile::STAGES + kAlignPad;
  static_assert(!Tile::WGMMA || (kABytes % 1024 == 0 && kStageBytes % 1024 == 0), "1024-aligned A tiles per stage");
  static_assert(kABytes % 16 == 0 && kBBytes % 16 == 0 && kSBytes % 16 == 0, "16-byte cp.async chunks");
};

// How the GEMM cuts K among split-K slices (split planning must count the same shares): every slice but the last
// gets `share` BK steps, rounded up to whole groups when an AWQ group spans several BK steps (G = 128: 2), so each
// slice starts on a group boundary (the hot loop builds a group's scale/zero params once, at compile-time steps).
__host__ __device__ constexpr int gemm_steps_per_group(int group_size, bool gidx) {
  return !gidx && group_size > 64 ? group_size / 64 : 1;  // 64 = GemmTile::BK
}
__host__ __device__ constexpr int gemm_split_share(int ktiles, int splits, int steps_per_group) {
  return ((ktiles + splits - 1) / splits + steps_per_group - 1) / steps_per_group * steps_per_group;
}

// G: group size (32/64/128) for the AWQ path, 0 for GPTQ-R (GIDX = true).
template <typename T, typename Tile, int G, bool GIDX>
__global__ void __launch_bounds__(Tile::THREADS, Tile::MIN_CTAS) w4a16_gemm_kernel(const W4Args p) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, STAGES = Tile::STAGES;
  constexpr int THREADS = Tile::THREADS, MT = Tile::MT, NT16 = Tile::NT16;
  constexpr int NB = BN / 16;  // weight blocks per k16 row of the CTA tile
  using L = StageLayout<Tile, GIDX>;
  static_assert(GIDX || (G == 32 || G == 64 || G == 128), "group size");
  static_assert(BK == 64, "gemm_steps_per_group assumes BK = 64");
  constexpr bool WG = Tile::WGMMA;
  static_assert(!WG || (!GIDX && BM == 64 && Tile::WARPS_M == 1 && Tile::WARPS_N == 4 && BN % 64 == 0),
                "the wgmma variant: AWQ, one warpgroup, 64 activation rows, whole m64 weight tiles");

  extern __shared__ __align__(16) unsigned char smem[];
  const T* __restrict__ A = static_cast<const T*>(p.a);
  const T* __restrict__ scales = static_cast<const T*>(p.scales);
  const T* __restrict__ zeros = static_cast<const T*>(p.zeros);
  const uint32_t* __restrict__ qw = p.qweight;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / Tile::WARPS_N, warp_n = warp % Tile::WARPS_N;
  const int g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int nblocks = p.n_pad / 16;

  const int ktiles = p.k_pad / BK;
  // AWQ with G > BK: a group spans STEPS_PER_GROUP BK steps; splits start on group boundaries, so in the unrolled
  // ring turn below the steps that begin a group are compile-time constants and the scale/zero params of a group
  // are built once (when STAGES is a multiple of it), not once per step.
  constexpr int STEPS_PER_GROUP = gemm_steps_per_group(G, GIDX);
  constexpr bool KEEP_PARAMS = Tile::STAGES % STEPS_PER_GROUP == 0;
  const int per_split = gemm_split_share(ktiles, p.splits, STEPS_PER_GROUP);
  const int kt_begin = blockIdx.z * per_split;
  const int kt_end = min(ktiles, kt_begin + per_split);
  const int nk = kt_end - kt_begin;  // may be <= 0 for a trailing split: then it contributes zeros

  // Shared memory is addressed with 32-bit shared addresses: every address in the hot loop is a per-thread register
  // fixed before the loop plus an immediate (the ring slot is a compile-time constant, see the main loop below).
  const uint32_t sbase = WG ? (smem_u32(smem) + 1023u) & ~1023u : smem_u32(smem);

  // Copy assignments are fixed per thread for the whole K loop: the source pointers are computed once here and
  // advanced by one BK step per load_stage call (the calls come in K order), so the loop body only adds strides.
  constexpr int IT_A = BM * 8 / THREADS;      // A: BM rows x 8 chunks of 8 elements
  constexpr int IT_B = 4 * NB * 8 / THREADS;  // B: 4 k16 rows x NB blocks x 8 chunks
  static_assert(IT_A * THREADS == BM * 8 && IT_B * THREADS == 4 * NB * 8, "whole copy rounds per thread");
  const uint64_t stream_policy = evict_first_policy();
  // A chunk c = tid + it * THREADS is row c / 8, chunk c % 8; THREADS / 8 is a multiple of 8 rows, so the
  // swizzle (row & 7) and the chunk are the same for every it: the shared offset is a_dst + it * (rows) * BK.
  static_assert((THREADS / 8) % 8 == 0, "A copy rounds must keep the swizzle phase");
  const int a_ch = tid & 7, a_row = tid >> 3;
  const uint32_t a_dst = pinned(sbase + (a_row * BK + ((a_ch ^ (a_row & 7)) * 8)) * 2);
  uint32_t a_k = kt_begin * BK + a_ch * 8;  // the chunk's k; its source is a_rowp[it] + a_k (one wide IMAD)
  const T* a_rowp[IT_A];
  bool a_row_ok[IT_A];
#pragma unroll
  for (int it = 0; it < IT_A; ++it) {
    const int gm = m0 + a_row + it * (THREADS / 8);
    a_row_ok[it] = gm < p.m;
    a_rowp[it] = A + static_cast<size_t>(a_row_ok[it] ? gm : 0) * p.k;
    if constexpr (!GIDX) a_rowp[it] = pinned_ptr(a_rowp[it]);  // GPTQ-R needs the 2 registers (it spills)
  }
  // B chunk c = (k16 row kk, block nb, part) in that order, so its shared offset is 16 c bytes (a verbatim copy).
  const uint32_t* b_src[IT_B];
  bool b_ok[IT_B];
#pragma unroll
  for (int it = 0; it < IT_B; ++it) {
    const int c = tid + it * THREADS;
    const int kk = c / (NB * 8), rem = c % (NB * 8), nb = rem >> 3, part = rem & 7;
    const int gnb = blockIdx.x * NB + nb;
    b_ok[it] = gnb < nblocks;
    b_src[it] = qw + (static_cast<size_t>(kt_begin * 4 + kk) * nblocks + (b_ok[it] ? gnb : 0)) * 32 + part * 4;
  }
  const size_t b_step = static_cast<size_t>(4) * nblocks * 32;  // words per BK step
  constexpr int SLOTS_USED = GIDX ? 1 : (G < BK ? BK / G : 1);
  constexpr int S_CH = BN / 8;
  constexpr int S_COPIES = GIDX ? 0 : 2 * SLOTS_USED * S_CH;  // (scale, zero) x slots x 16-byte chunks
  static_assert(S_COPIES <= THREADS && BK / 4 <= THREADS, "one scale/g_idx copy per thread at most");
  const int s_which = tid / (SLOTS_USED * S_CH), s_slot = (tid % (SLOTS_USED * S_CH)) / S_CH;
  const int s_col = n0 + (tid % S_CH) * 8;
  const bool s_ok = tid < S_COPIES && s_col < p.n_pad;
  const T* s_base = (s_which ? zeros : scales) + (s_ok ? s_col : 0) + static_cast<size_t>(s_slot) * p.n_pad;
  if constexpr (!GIDX) s_base = pinned_ptr(s_base);
  const uint32_t s_stride = pinned(static_cast<uint32_t>(p.n_pad) * sizeof(T));  // bytes per scale row
  const uint32_t s_dst =
      pinned(sbase + L::kABytes + L::kBBytes + ((s_which * L::kSlots + s_slot) * BN + (tid % S_CH) * 8) * 2);
  const uint32_t b_dst = pinned(sbase + L::kABytes + 16 * tid);
  // the first scale row of BK step kt is (kt BK) / G: a shift of an unsigned (G and BK are powers of two)
  const auto s_row = [&](int kt) {
    return G >= BK ? static_cast<uint32_t>(kt) / (G / BK) : static_cast<uint32_t>(kt) * (BK / (G ? G : BK));
  };

  // st: offset of the ring slot to fill; kt: the BK step it receives.
  // scales: whether the step needs its scale/zero rows (compile-time; only group-start steps read them when a
  // group's params are kept across steps, so the other steps of a group skip the copy).
  auto load_stage = [&](uint32_t st, int kt, bool scales) {
#pragma unroll
    for (int it = 0; it < IT_A; ++it)  // rows past m and k past K read nothing (src-size 0) and land as zeros
      cp_async16(a_dst + st + it * (THREADS / 8) * BK * 2, offset_wide(a_rowp[it], a_k, sizeof(T)),
                 a_row_ok[it] && a_k < static_cast<uint32_t>(p.k));
    a_k += BK;
#pragma unroll
    for (int it = 0; it < IT_B; ++it) {
      cp_async16_stream(b_dst + st + 16 * it * THREADS, b_src[it], b_ok[it], stream_policy);
      b_src[it] += b_step;
    }
    if constexpr (!GIDX) {  // [2 (scale, zero)][kSlots][BN]
      if (scales && tid < S_COPIES)
        cp_async16(s_dst + st, offset_wide(s_base, s_row(kt), s_stride), s_ok);
    } else {
      if (tid < BK / 4) cp_async16(sbase + st + L::kABytes + L::kBBytes + tid * 16, p.g_idx + kt * BK + tid * 4, true);
    }
  };

  // mma.sync: [m16 tile][n8 tile][4]. WGMMA: wacc[wgmma tile j][32], wgmma's D fragment (the other array unused)
  float acc[WG ? 1 : MT][2 * NT16][4];
  float wacc[WG ? NT16 : 1][32];
#pragma unroll
  for (int i = 0; i < (WG ? 1 : MT); ++i)
#pragma unroll
    for (int j = 0; j < 2 * NT16; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
#pragma unroll
  for (int j = 0; j < (WG ? NT16 : 1); ++j)
#pragma unroll
    for (int e = 0; e < 32; ++e) wacc[j][e] = 0.f;

  // Per-lane fragment addresses in ring slot 0 (pinned in registers), fixed for the loop. B: the ldmatrix row of n16 block j is
  // b_lane + 128 j. A: k16 step kk of m16 tile mi reads chunk (2 kk + lane / 16) ^ (row & 7) of its row; 2 kk only
  // flips chunk bits 1-2, so the offset is a_lane[mi] with the chunk XORed by 2 kk.
  // WGMMA: warp w's blocks are w, w + 4, ... (the rows it holds of each wgmma's A): block j at + 512 j bytes.
  const uint32_t b_lane = pinned(sbase + L::kABytes +
                                 (((lane >> 3) * NB + (WG ? warp : warp_n * NT16)) * 32 + (lane & 7) * 4) * 4);
  constexpr int B_BLOCK_STRIDE = WG ? 4 * 128 : 128;  // bytes between this warp's consecutive weight blocks
  uint32_t a_lane[MT][4];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi) {
    const int row = warp_m * Tile::WM + mi * 16 + (lane & 15);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      a_lane[mi][kk] = pinned(sbase + (row * BK + (((kk * 2 + (lane >> 4)) ^ (row & 7)) * 8)) * 2);
  }
  // AWQ scale/zero pair of n16 block j in slot s: s_lane + 2 (s BN + 16 j) (+ kSlots BN 2 for the zero).
  const uint32_t s_lane = pinned(sbase + L::kABytes + L::kBBytes + ((WG ? 16 * warp : warp_n * Tile::WN) + 2 * g) * 2);
  constexpr int S_BLOCK_STRIDE = WG ? 64 : 16;  // scale elements between this warp's consecutive weight blocks

  const uint32_t magic = pinned(Dequant<T>::kMagic);
  // AWQ: k16 steps that share one scale row (a slot), so params are built once per slot.
  constexpr int KK_PER_SLOT = GIDX ? 4 : ((G < BK ? G : BK) / 16);
  GroupParams grp[NT16];  // AWQ: one per n16 block, built per group slot
  // st: offset of the ring slot, group_start: whether this BK step begins a group (both compile-time constants)
  auto compute_stage = [&](uint32_t st, bool group_start) {
    uint32_t bw[NT16][4];  // [n16 block][k16 row]: this lane's packed word, one ldmatrix.x4 per block
#pragma unroll
    for (int j = 0; j < NT16; ++j) ldmatrix_x4(bw[j], st + b_lane + B_BLOCK_STRIDE * j);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      if constexpr (!GIDX) {
        if (kk % KK_PER_SLOT == 0 && (group_start || !KEEP_PARAMS)) {  // compile-time after unrolling
          const int s = kk / KK_PER_SLOT;
#pragma unroll
          for (int j = 0; j < NT16; ++j) {
            const uint32_t s01 = ld_shared_u32(st + s_lane + 2 * (s * BN + S_BLOCK_STRIDE * j));
            const uint32_t z01 = ld_shared_u32(st + s_lane + 2 * ((L::kSlots + s) * BN + S_BLOCK_STRIDE * j));
            grp[j] = make_group<T>(s01, z01);
          }
        }
      }
      if constexpr (WG) {
        // Dequantize this k16 step's weight word of every wgmma tile into its A fragment, then issue the wgmmas
        // on the activation tile's k16 slice (32 bytes into each swizzled 128-byte row). The mma.sync B fragment
        // of a word, pairs (n = g, k 2t), (g, 2t+8), (g+8, 2t), (g+8, 2t+8), is wgmma's A fragment in the order
        // 0, 2, 1, 3 (rows g / g+8 = the block's two n8 halves).
        uint32_t af[NT16][4];
#pragma unroll
        for (int j = 0; j < NT16; ++j) {
          uint32_t b[4];
          Dequant<T>::run(bw[j][kk], expand(grp[j]), b, magic);
          af[j][0] = b[0];
          af[j][1] = b[2];
          af[j][2] = b[1];
          af[j][3] = b[3];
        }
#pragma unroll
        for (int j = 0; j < NT16; ++j) wgmma_fence_operand(wacc[j]);
        wgmma_fence();
        const uint64_t desc = wgmma_desc_sw128(sbase + st + kk * 32);  // st: the slot offset from sbase
#pragma unroll
        for (int j = 0; j < NT16; ++j) wgmma_m64n64k16_rs<T>(wacc[j], af[j], desc);
        wgmma_commit();
#pragma unroll
        for (int j = 0; j < NT16; ++j) wgmma_fence_operand(wacc[j]);
      } else {
        uint32_t a[MT][4];
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) ldmatrix_x4(a[mi], st + a_lane[mi][kk]);
#pragma unroll
        for (int j = 0; j < NT16; ++j) {
          PairParams prm;
          if constexpr (GIDX) {  // GPTQ-R: gather this word's four k rows' scale/zero pairs (built per word: registers)
            const int32_t* Is = reinterpret_cast<const int32_t*>(smem + st + L::kABytes + L::kBBytes);
            const int2 gab = *reinterpret_cast<const int2*>(Is + kk * 16 + 2 * t);
            const int2 gcd = *reinterpret_cast<const int2*>(Is + kk * 16 + 2 * t + 8);
            const int rows[4] = {gab.x, gab.y, gcd.x, gcd.y};
            // column pairs past n_pad (only in the last CTA column) read pair 0 instead: never stored
            const int col = n0 + warp_n * Tile::WN + j * 16 + 2 * g;
            const int pair = col < p.n_pad ? col / 2 : 0;
            const unsigned int* sp = reinterpret_cast<const unsigned int*>(scales) + pair;
            const unsigned int* zp = reinterpret_cast<const unsigned int*>(zeros) + pair;
            uint32_t sv[4], zv[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) {
              sv[r] = __ldg(sp + rows[r] * (p.n_pad / 2));
              zv[r] = __ldg(zp + rows[r] * (p.n_pad / 2));
            }
            prm = make_params_rows<T>(sv, zv);
          } else {
            prm = expand(grp[j]);
          }
          uint32_t b[4];
          Dequant<T>::run(bw[j][kk], prm, b, magic);
#pragma unroll
          for (int mi = 0; mi < MT; ++mi) {
            mma_m16n8k16<T>(acc[mi][2 * j], a[mi], b[0], b[1]);
            mma_m16n8k16<T>(acc[mi][2 * j + 1], a[mi], b[2], b[3]);
          }
        }
      }  // mma.sync
    }
  };

  // Multi-stage pipeline: STAGES-1 tiles in flight ahead of the one being computed. Step i computes slot i % STAGES
  // and refills slot (i - 1) % STAGES. For AWQ the loop body is one whole turn of the ring (TURN = STAGES steps),
  // unrolled so both slots are compile-time constants: no slot arithmetic, every shared address an immediate
  // offset; the steps left after the whole turns (< TURN) run once, unrolled the same way. GPTQ-R keeps one step
  // per iteration (runtime slots): unrolled, its gather code spills.
  constexpr int TURN = GIDX ? 1 : STAGES;
  const auto step = [&](int i, int s) {  // s: i's position in its turn (compile-time when TURN = STAGES)
    const int slot = TURN == STAGES ? s : i % STAGES;
    cp_async_wait<STAGES - 2>();
    if constexpr (WG) {
      fence_proxy_async_shared();  // this thread's landed copies, visible to wgmma's async proxy after the barrier
      wgmma_wait<0>();             // tile i-1's wgmmas have read their slot, which is refilled below
#pragma unroll
      for (int j = 0; j < NT16; ++j) wgmma_fence_operand(wacc[j]);
    }
    __syncthreads();  // tile i landed for every thread; everyone finished computing tile i-1
    const int next = i + STAGES - 1;
    // next - kt_begin = i0 + s + STAGES - 1 with i0 a multiple of STAGES (a multiple of STEPS_PER_GROUP when
    // KEEP_PARAMS): whether it starts a group is known at compile time
    if (next < nk)
      load_stage(((slot + STAGES - 1) % STAGES) * L::kStageBytes, kt_begin + next,
                 !KEEP_PARAMS || (s + STAGES - 1) % STEPS_PER_GROUP == 0);
    cp_async_commit();
    compute_stage(slot * L::kStageBytes, s % STEPS_PER_GROUP == 0);
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nk) load_stage(s * L::kStageBytes, kt_begin + s, !KEEP_PARAMS || s % STEPS_PER_GROUP == 0);
    cp_async_commit();  // commit even when empty so group counting stays uniform
  }
  int i0 = 0;
  for (; i0 + TURN <= nk; i0 += TURN) {
#pragma unroll
    for (int s = 0; s < TURN; ++s) step(i0 + s, s);
  }
#pragma unroll
  for (int s = 0; s < TURN - 1; ++s)
    if (i0 + s < nk) step(i0 + s, s);
  cp_async_wait<0>();
  if constexpr (WG) {
    wgmma_wait<0>();  // the last tile's accumulators
#pragma unroll
    for (int j = 0; j < NT16; ++j) wgmma_fence_operand(wacc[j]);
  }

  const bool split = p.splits > 1;
  T* C = static_cast<T*>(p.c);
  if constexpr (WG) {
    // wgmma j's D element e: output feature (its row) 64 j + 16 warp + g (+8 for e % 4 >= 2), activation row (its
    // column) 8 (e / 4) + 2t + e % 2: C is [m, n], so the two features of a pair are m rows apart (scalar stores).
    const auto feature = [&](int j, int e) { return n0 + 64 * j + 16 * warp + g + 8 * ((e >> 1) & 1); };
    const auto token = [&](int e) { return m0 + 8 * (e >> 2) + 2 * t + (e & 1); };
#pragma unroll
    for (int j = 0; j < NT16; ++j)
#pragma unroll
      for (int e = 0; e < 32; ++e) {
        const int row = token(e), col = feature(j, e);
        if (row >= p.m || col >= p.n) continue;
        if (!split) C[static_cast<size_t>(row) * p.n + col] = Pack2<T>::one(wacc[j][e]);
        else p.partials[(static_cast<size_t>(blockIdx.z) * p.m + row) * p.n + col] = wacc[j][e];
      }
    if (!split) return;
    if (!splitk_arrive(p.counters + blockIdx.y * gridDim.x + blockIdx.x, p.splits)) return;
#pragma unroll
    for (int j = 0; j < NT16; ++j)
#pragma unroll
      for (int e = 0; e < 32; ++e) {
        const int row = token(e), col = feature(j, e);
        if (row >= p.m || col >= p.n) continue;
        float sum = 0.f;
        for (int s = 0; s < p.splits; ++s) sum += __ldcg(p.partials + (static_cast<size_t>(s) * p.m + row) * p.n + col);
        C[static_cast<size_t>(row) * p.n + col] = Pack2<T>::one(sum);
      }
  } else {
    // Epilogue. Fragment element (mi, nj, e): row g (+8 for e >= 2), columns 2t, 2t+1 of the n8 tile.
    const auto frag_row = [&](int mi, int h) { return m0 + warp_m * Tile::WM + mi * 16 + g + 8 * h; };
    const auto frag_col = [&](int nj) { return n0 + warp_n * Tile::WN + nj * 8 + 2 * t; };
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nj = 0; nj < 2 * NT16; ++nj)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = frag_row(mi, h), col = frag_col(nj);
          if (row >= p.m || col >= p.n) continue;
          const float v0 = acc[mi][nj][2 * h], v1 = acc[mi][nj][2 * h + 1];
          if (!split) {
            *reinterpret_cast<uint32_t*>(C + static_cast<size_t>(row) * p.n + col) = Pack2<T>::from_floats(v0, v1);
          } else {
            float2* dst = reinterpret_cast<float2*>(p.partials + (static_cast<size_t>(blockIdx.z) * p.m + row) * p.n + col);
            *dst = make_float2(v0, v1);
          }
        }
    if (!split) return;
    if (!splitk_arrive(p.counters + blockIdx.y * gridDim.x + blockIdx.x, p.splits)) return;
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nj = 0; nj < 2 * NT16; ++nj)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = frag_row(mi, h), col = frag_col(nj);
          if (row >= p.m || col >= p.n) continue;
          float2 sum = make_float2(0.f, 0.f);
          for (int s = 0; s < p.splits; ++s) {
            const float2 v = __ldcg(reinterpret_cast<const float2*>(
                p.partials + (static_cast<size_t>(s) * p.m + row) * p.n + col));
            sum.x += v.x;
            sum.y += v.y;
          }
          *reinterpret_cast<uint32_t*>(C + static_cast<size_t>(row) * p.n + col) = Pack2<T>::from_floats(sum.x, sum.y);
        }
  }  // mma.sync epilogue
}

// ---- host side -------------------------------------------------------------------------------------

template <typename T, typename Tile, int G, bool GIDX>
int launch_gemm_tile(const W4Args& a, cudaStream_t stream) {
  using L = StageLayout<Tile, GIDX>;
  static_assert(L::kTotalBytes + kStaticSmemAllowance <= kMinOptinSmemPerBlock, "tile too large for sm_86/sm_89");
  auto kernel = w4a16_gemm_kernel<T, Tile, G, GIDX>;
  if (L::kTotalBytes > 48 * 1024) {
    const int rc = detail::capture(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kTotalBytes));
    if (rc != kOk) return rc;
  }
  const dim3 grid((a.n_pad + Tile::BN - 1) / Tile::BN, (a.m + Tile::BM - 1) / Tile::BM, a.splits);
  kernel<<<grid, Tile::THREADS, L::kTotalBytes, stream>>>(a);
  return detail::capture(cudaGetLastError());
}

// Which tile serves which m (the reasons are in tile_configs.cuh).
template <typename T, int G, bool GIDX>
int launch_gemm_m(const W4Args& a, cudaStream_t stream) {
  if (a.m <= 16) return launch_gemm_tile<T, TileM16, G, GIDX>(a, stream);
  if (a.m <= 32) return launch_gemm_tile<T, TileM32, G, GIDX>(a, stream);
  if (a.m <= 64) return launch_gemm_tile<T, TileM64, G, GIDX>(a, stream);
  return launch_gemm_tile<T, TileM128, G, GIDX>(a, stream);
}

// What plan_gemm needs of the tile launch_gemm_m picks for m: its size, the residency it is built for (the
// __launch_bounds__ minimum), its shared memory per CTA and its weight bytes in flight.
struct GemmTileInfo {
  int bm, bn, min_ctas, smem_per_cta, inflight_bytes;
};
template <typename Tile, bool GIDX>
constexpr GemmTileInfo gemm_tile_info() {
  return {Tile::BM, Tile::BN, Tile::MIN_CTAS, StageLayout<Tile, GIDX>::kTotalBytes + kStaticSmemAllowance,
          gemm_inflight_bytes<Tile>()};
}
inline GemmTileInfo gemm_tile_info(int m, bool gidx) {
  if (m <= 16) return gidx ? gemm_tile_info<TileM16, true>() : gemm_tile_info<TileM16, false>();
  if (m <= 32) return gidx ? gemm_tile_info<TileM32, true>() : gemm_tile_info<TileM32, false>();
  if (m <= 64) return gidx ? gemm_tile_info<TileM64, true>() : gemm_tile_info<TileM64, false>();
  return gidx ? gemm_tile_info<TileM128, true>() : gemm_tile_info<TileM128, false>();
}

}  // namespace awq
