// Every tile configuration the W4A16 kernels are instantiated with, in one place, with the reason.
// Changing one here changes it everywhere (gemm.cuh / gemv.cu read only these).
#pragma once

#include "awq_kernels.h"

namespace awq {

// Tensor-core GEMM tile: CTA computes BM x BN of C, stepping K by BK = 64 (four mma k16 steps; a G = 32
// group spans two of them, G = 64/128 one or more whole stages). Warps tile the CTA WARPS_M x WARPS_N.
// MIN_CTAS is the __launch_bounds__ occupancy hint: it caps registers at 64K / (MIN_CTAS * THREADS).
// WGMMA: the sm_90a variant (gemm.cuh): the CTA is one warpgroup issuing wgmma with the dequantized weights as the
// register A operand (64 output features per wgmma: warp w holds rows 16w..16w+15, i.e. n16 block 4j + w of wgmma
// j) and the BM = 64 activation rows as B from the swizzled shared tile; NT16 = BN / 64 wgmma tiles per step.
template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_, int MIN_CTAS_, bool WGMMA_ = false>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = 64;
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_, MIN_CTAS = MIN_CTAS_;
  static constexpr bool WGMMA = WGMMA_;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp tile
  static constexpr int MT = WM / 16;                          // m16 tiles per warp
  static constexpr int NT16 = WN / 16;                        // n16 weight blocks per warp (2 mma n8 tiles each)
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile must be whole mma tiles");
};

// m <= 16 (decode with a few sequences, speculative decoding): one m16 tile; 4 warps split N (64 columns
//   each) so every weight is dequantized exactly once per CTA, and a warp dequantizes 16 words per stage, which
//   amortizes the per-stage fixed cost (A fragments, barrier, copy issue) over twice the weights of a 32-column
//   warp tile; 6 stages x 10.5 KB keep 5 x 8 KB = 40 KB of weights in flight per CTA, so ONE CTA per SM meets
//   Little's law: split-K can then cut K into as few slices as balance needs (4096 x 11008 at G = 128: 86 whole
//   groups x 16 N-tiles, 8 slices of 11 groups on 128 SMs, 0.95 of the mean SM's work; at 4 stages it took 15
//   slices, 2 per SM, 12 groups on the busiest: 0.87). 3 CTAs per SM by shared memory on sm_90 (MIN_CTAS 3:
//   <= 168 registers), 2 on sm_80.
using TileM16 = GemmTile<16, 256, 1, 4, 6, 3>;
// 16 < m <= 32 (batched decode): the M16 tile's 1x4 warps with two m16 tiles each (MT = 2, 64 accumulators per
//   thread), so every weight is still dequantized once per CTA and the dequant work per byte is M16's; the second
//   m16 tile only adds its mma and A fragments. (M64's 2x2 warps dequantize each weight twice: at m = 32 it is
//   issue- and mma-bound at ~3 TB/s, this tile ~6.) 6 stages x 14 KB keep 40 KB of weights in flight per CTA like
//   M16; 2 CTAs per SM by shared memory on sm_90 (MIN_CTAS 2: <= 255 registers), 1 on sm_80.
using TileM32 = GemmTile<32, 256, 1, 4, 6, 2>;
// 32 < m <= 64: 2x2 warps of 32x64 (MT = 2, NT16 = 4: 64 fp32 accumulators/thread); 5 stages x 13 KB = 65 KB,
//   so 4 stages x 4 KB = 16 KB of weights in flight per CTA: the 2 CTAs per SM the planner counts on (MIN_CTAS 2,
//   up to 255 registers: it needs ~165, GPTQ-R ~254) hold 32 KB per SM, above Little's law at 4.8 TB/s
//   (29091 B at 4.8 TB/s x 800 ns / 132 SMs), on sm_80's 164 KB of shared memory too. (3 would fit on sm_90 by registers, but a
//   third CTA needs no more bytes in flight, and planning 3 would cap GPTQ-R at 168 registers: it would spill.)
using TileM64 = GemmTile<64, 128, 2, 2, 5, 2>;
// The Hopper path (sm_90a, w4a16_gemm_wgmma; M 33-64 on the mma.sync tiles above is bound by mma.sync at half the
//   tensor rate): 64 activation rows x 128 output features per CTA, one warpgroup, 2 wgmma.m64n64k16 per k16 step
//   (64 fp32 accumulators per thread), each weight dequantized once; 5 stages x 13 KB (1024-aligned for the
//   swizzled B descriptor) keep 4 x 4 KB of weights in flight per CTA, 2 CTAs per SM planned (MIN_CTAS 2).
using TileM64W = GemmTile<64, 128, 1, 4, 5, 2, true>;
// m > 64 (prefill up to the cuBLAS crossover): 2x4 warps of 64x32 (64 accumulators/thread, no spills);
//   4 stages x 21 KB = 84 KB (above the 48 KB default: the launcher raises the dynamic smem limit; 5 stages would
//   exceed the 99 KB per-block opt-in of sm_86/sm_89), so 3 x 4 KB = 12 KB of weights are in flight: at 3 stages
//   (8 KB) the static model had the tile starved of bandwidth at M = 128 (1.3 TB/s by Little's law).
//   MIN_CTAS 1: at 2 CTAs/SM ptxas caps it at 128 registers and spills on sm_90 (test_sass.py caught it).
using TileM128 = GemmTile<128, 128, 2, 4, 4, 1>;

// GEMV (m <= 8): 8 warps per CTA all on one 64-column strip; each lane streams one 16-byte word group per
// k16 row (a warp reads 512 contiguous bytes) and loads a chunk of kGemvChunk of them before using any; a CTA
// reduces its 8 warps in shared memory; split-K across CTAs fills the SMs without a wave tail.
// Bytes in flight per SM: 256 threads x 4 x 16 B = 16 KB per CTA, times gemv_min_ctas CTAs.
constexpr int kGemvWarps = 8;
constexpr int kGemvThreads = kGemvWarps * 32;
constexpr int kGemvStrip = 64;
constexpr int kGemvChunk = 4;  // k16 rows per chunk: 64 k rows, a whole group for G >= 64
// The m instantiation serving m rows (accumulators are unrolled per row: m = 1 pays for one row only).
__host__ __device__ constexpr int gemv_rows(int m) { return m <= 1 ? 1 : (m <= 2 ? 2 : (m <= 4 ? 4 : 8)); }
// CTAs per SM the GEMV is built for (__launch_bounds__ minimum): 4 (<= 64 registers, 64 KB of weights in
// flight per SM) for the AWQ path at m = 1; 3 (<= 80 registers, 48 KB) at m <= 4; 2 (<= 128 registers, 32 KB)
// at m = 8 and for GPTQ-R, whose gathered scales need the registers (tighter caps spill: m = 2 at G = 32 does
// on sm_80 at 64; test_sass.py checks every instantiation).
__host__ __device__ constexpr int gemv_min_ctas(int maxm, bool gidx) {
  return gidx || maxm > 4 ? 2 : (maxm <= 1 ? 4 : 3);
}

// Dequantize kernel: one thread per packed word, 256 threads per CTA.
constexpr int kDequantThreads = 256;

// Weight bytes a GEMM CTA keeps in flight: STAGES - 1 stages of BK x BN packed 4-bit weights.
template <typename Tile>
constexpr int gemm_inflight_bytes() { return (Tile::STAGES - 1) * Tile::BK * Tile::BN / 2; }
// ... and a GEMV CTA: every warp holds one chunk of kGemvChunk 512-byte k16 rows.
constexpr int kGemvInflightBytes = kGemvWarps * kGemvChunk * 512;

// Launch planning (launch_common.h plan_splits): the weight bytes in flight per SM a plan aims for. Little's law
// for the target, the H200, asks 4.8 TB/s x 800 ns / 132 SMs = 29091 bytes per SM, but the 800 ns of loaded
// DRAM latency is an assumption (awq_ext/bench/static_model.py) and latency grows near peak bandwidth, so plans
// aim 1.25x higher (36 KB): a plan below it is charged for the bandwidth it is taken to lose. (1.5x, 44 KB, made the
// planner prefer 2 CTAs per SM with unbalanced slices over 1 per SM with balanced ones.)
// GPUs with less bandwidth per SM (H100, A100) need less, so the target is conservative there.
constexpr int kInflightTargetPerSm = 36 * 1024;
// ... and how many mma FLOPs cost as much time as one HBM byte: the H200's mma.sync rate (half of its 989 TFLOP/s
// dense rate, an assumption of awq_ext/bench/static_model.py) over its 4.8 TB/s. The planner weighs a tile's mma
// work against its weight traffic with it (H100 / A100: ~148 / ~153, so the target's value is the cautious one).
constexpr int kMmaFlopsPerHbmByte = 103;
// wgmma reaches the dense rate, mma.sync (the constant above) half of it: the wgmma tile's FLOPs weigh half.
constexpr int kWgmmaOverMmaSync = 2;
// Shared memory the runtime reserves per resident block (cudaDevAttrReservedSharedMemoryPerBlock on sm_80/90),
// and an allowance for the kernels' static shared memory besides the stage ring (the split-K flag of
// splitk.cuh); the static model checks the planned residency against the compiled kernels' real usage.
constexpr int kReservedSmemPerCta = 1024;
constexpr int kStaticSmemAllowance = 16;
// The smallest per-block shared memory opt-in of the GPUs the kernels build for (sm_86 / sm_89: 99 KB; sm_80 and
// sm_90: 163 / 227 KB): every tile must fit it, or its launch fails on those GPUs.
constexpr int kMinOptinSmemPerBlock = 99 * 1024;

// Split-K (at most kMaxSplits, awq_kernels.h; the count is chosen by detail::plan_splits from the device):
// never give a GEMM slice fewer than this many BK steps (nor a GEMV slice fewer chunks than it has warps).
constexpr int kGemmMinKTilesPerSplit = 4;

}  // namespace awq
