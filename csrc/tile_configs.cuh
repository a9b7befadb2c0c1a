// Every tile configuration the W4A16 kernels are instantiated with, in one place, with the reason.
// Changing one here changes it everywhere (gemm.cuh / gemv.cu read only these).
#pragma once

#include "awq_kernels.h"

namespace awq {

// Tensor-core GEMM tile: CTA computes BM x BN of C, stepping K by BK = 64 (four mma k16 steps; a G = 32
// group spans two of them, G = 64/128 one or more whole stages). Warps tile the CTA WARPS_M x WARPS_N.
// MIN_CTAS is the __launch_bounds__ occupancy hint: it caps registers at 64K / (MIN_CTAS * THREADS).
template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_, int MIN_CTAS_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = 64;
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_, MIN_CTAS = MIN_CTAS_;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp tile
  static constexpr int MT = WM / 16;                          // m16 tiles per warp
  static constexpr int NT16 = WN / 16;                        // n16 weight blocks per warp (2 mma n8 tiles each)
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile must be whole mma tiles");
};

// m <= 16 (decode with a few sequences, speculative decoding): one m16 tile; 4 warps split N (32 columns
//   each) so every weight is dequantized exactly once per CTA; 4 stages x 7 KB keep 28 KB in flight per CTA,
//   several CTAs per SM (MIN_CTAS 4: <= 128 registers); split-K fills the SMs when N / 128 is small.
using TileM16 = GemmTile<16, 128, 1, 4, 4, 4>;
// 16 < m <= 64: 2x2 warps of 32x64 (MT = 2, NT16 = 4: 64 fp32 accumulators/thread); 4 stages x 13 KB;
//   MIN_CTAS 2 leaves up to 255 registers (it needs ~150).
using TileM64 = GemmTile<64, 128, 2, 2, 4, 2>;
// m > 64 (prefill up to the cuBLAS crossover): 2x4 warps of 64x32 (64 accumulators/thread, no spills);
//   3 stages x 21 KB = 64 KB, above the 48 KB default, so the launcher raises the dynamic smem limit.
//   MIN_CTAS 1: at 2 CTAs/SM ptxas caps it at 128 registers and spills on sm_90 (test_sass.py caught it).
using TileM128 = GemmTile<128, 128, 2, 4, 3, 1>;

// GEMV (m <= 8): 8 warps per CTA all on one 64-column strip, interleaved over K; each lane streams one
// 16-byte word group per k16 step (a warp reads 512 contiguous bytes) and keeps kGemvUnroll of them in
// flight before using any; a CTA reduces its 8 warps in shared memory; split-K across CTAs fills the SMs.
constexpr int kGemvWarps = 8;
constexpr int kGemvThreads = kGemvWarps * 32;
constexpr int kGemvStrip = 64;
constexpr int kGemvUnroll = 4;

// Dequantize kernel: one thread per packed word, 256 threads per CTA.
constexpr int kDequantThreads = 256;

// Split-K (at most kMaxSplits, awq_kernels.h): aim for this many CTAs per SM, and never give a split fewer
// than this many BK (GEMM) steps or one full unrolled round of k16 steps per warp (GEMV).
constexpr int kSplitTargetCtasPerSm = 2;
constexpr int kGemmMinKTilesPerSplit = 4;

}  // namespace awq
