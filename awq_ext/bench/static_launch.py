"""The launch geometry of every W4A16 path, mirrored from the C++ launchers so the static model predicts the
grids the kernels really get. THE place to update when ``csrc/`` launchers change: each function names the
C++ function it mirrors, and the constants are read from the headers (never copied), so a retuned
constant flows through on its own; a changed formula must be changed here too. The two small constexpr
functions of tile_configs.cuh the launchers call (gemv_rows, gemv_min_ctas) are mirrored here and their C++
bodies compared with the text they were mirrored from, so an edit there fails loudly instead of drifting.

Mirrors (csrc/ as of this commit):
  gemm     plan_gemm (gemm.cu) + launch_gemm_m / launch_gemm_tile / gemm_tile_info (gemm.cuh), StageLayout
  gemv     plan_gemv + dispatch_m + launch_gemv (gemv.cu), gemv_rows / gemv_min_ctas (tile_configs.cuh)
  split-K  detail::clamp_splits / resident_ctas / split_stats / plan_splits (launch_common.cu): the ONE
           definition of the plan, its wave efficiency and its bytes in flight, which the static model reports
           (tests/kernels/test_static_model.py runs the C++ on a sweep and compares)
  dequant  launch (dequant.cu)
  dispatch awq_ext/kernels/ops.py: w4a16_linear passes split_k=0 (auto); the binding passes the device's SM
           count and shared memory per SM (binding.cpp device_limits) to plan_*.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from awq_ext.bench.sass import SassError


@dataclass(frozen=True)
class GemmTileCfg:
    name: str
    bm: int
    bn: int
    warps_m: int
    warps_n: int
    stages: int
    min_ctas: int
    wgmma: bool = False  # the sm_90a variant (GemmTile's WGMMA flag)
    bk: int = 64

    @property
    def threads(self) -> int:
        return self.warps_m * self.warps_n * 32


@dataclass(frozen=True)
class CsrcConstants:
    """Tuning constants of csrc/tile_configs.cuh and csrc/awq_kernels.h."""

    gemm_tiles: dict[str, GemmTileCfg]   # "TileM16" -> tile
    gemv_warps: int
    gemv_strip: int
    gemv_chunk: int                      # k16 rows per GEMV chunk (the GEMV's split-K step)
    gemv_max_m: int
    dequant_threads: int
    gemm_min_ktiles_per_split: int
    max_splits: int
    inflight_target_per_sm: int          # kInflightTargetPerSm: the bytes in flight per SM a plan aims for
    mma_flops_per_hbm_byte: int          # kMmaFlopsPerHbmByte: how the planner weighs mma work against traffic
    wgmma_over_mma_sync: int             # kWgmmaOverMmaSync: the wgmma tile's FLOPs weigh 1 / this
    reserved_smem_per_cta: int
    static_smem_allowance: int
    fallback_sms: int
    fallback_smem_per_sm: int

    @property
    def gemv_inflight_bytes(self) -> int:
        """kGemvInflightBytes (tile_configs.cuh)."""
        return self.gemv_warps * self.gemv_chunk * 512


_INT = r"constexpr\s+int\s+{}\s*=\s*(\w+)\s*(?:\*\s*(\d+))?\s*;"
_TILE = re.compile(r"using\s+(Tile\w+)\s*=\s*GemmTile<\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*"
                   r"(?:,\s*(true|false)\s*)?>")
# The constexpr helpers of tile_configs.cuh that gemv_rows / gemv_min_ctas below mirror, as mirrored.
_MIRRORED = {
    "gemv_rows": "return m <= 1 ? 1 : (m <= 2 ? 2 : (m <= 4 ? 4 : 8));",
    "gemv_min_ctas": "return gidx || maxm > 4 ? 2 : (maxm <= 1 ? 4 : 3);",
    "gemm_inflight_bytes": "return (Tile::STAGES - 1) * Tile::BK * Tile::BN / 2;",
}
_MIRRORED_CONSTANTS = {"kGemvInflightBytes": "kGemvWarps * kGemvChunk * 512"}


def _check_mirrored(text: str) -> None:
    for name, body in _MIRRORED.items():
        m = re.search(r"constexpr\s+int\s+" + name + r"\s*\([^)]*\)\s*\{(.*?)\}", text, re.S)
        if m is None or " ".join(m.group(1).split()) != body:
            raise SassError(f"{name} in csrc/tile_configs.cuh is missing or changed (mirrored from {body!r}): "
                            "update awq_ext/bench/static_launch.py")
    for name, expr in _MIRRORED_CONSTANTS.items():
        m = re.search(r"constexpr\s+int\s+" + name + r"\s*=\s*([^;]*);", text)
        if m is None or " ".join(m.group(1).split()) != expr:
            raise SassError(f"{name} in csrc/tile_configs.cuh is missing or changed (mirrored from {expr!r}): "
                            "update awq_ext/bench/static_launch.py")


def read_constants(csrc: Path) -> CsrcConstants:
    """Parse the constants the launchers use; SassError naming any that is missing (the model is then stale)."""
    text = "\n".join((csrc / f).read_text() for f in ("tile_configs.cuh", "awq_kernels.h", "launch_common.h")
                     if (csrc / f).exists())
    vals: dict[str, int] = {}

    def get(name: str) -> int:
        m = re.search(_INT.format(name), text)
        if m is None:
            raise SassError(f"constant {name} not found in csrc/tile_configs.cuh, awq_kernels.h or launch_common.h: the launchers "
                            "changed; update awq_ext/bench/static_launch.py")
        base = vals[m.group(1)] if m.group(1) in vals else int(m.group(1), 0)
        vals[name] = base * int(m.group(2) or 1)
        return vals[name]

    tiles = {m.group(1): GemmTileCfg(m.group(1), *map(int, m.groups()[1:7]), wgmma=m.group(8) == "true")
             for m in _TILE.finditer(text)}
    for need in ("TileM16", "TileM32", "TileM64", "TileM128", "TileM64W"):
        if need not in tiles:
            raise SassError(f"{need} not found in csrc/tile_configs.cuh; update awq_ext/bench/static_launch.py")
    _check_mirrored(text)
    return CsrcConstants(tiles, get("kGemvWarps"), get("kGemvStrip"), get("kGemvChunk"), get("kGemvMaxM"),
                         get("kDequantThreads"), get("kGemmMinKTilesPerSplit"), get("kMaxSplits"),
                         get("kInflightTargetPerSm"), get("kMmaFlopsPerHbmByte"), get("kWgmmaOverMmaSync"),
                         get("kReservedSmemPerCta"),
                         get("kStaticSmemAllowance"), get("kFallbackSms"), get("kFallbackSmemPerSm"))


@dataclass(frozen=True)
class SplitPlan:
    """detail::SplitPlan (launch_common.h): how a launch of tiles x splits CTAs lands on the SMs."""

    splits: int
    ctas: int
    ctas_per_sm: int              # the residency the plan counts on
    busiest_sm_steps: int         # K steps of the busiest SM: ceil(ctas / sms) CTAs of the largest slice
    mean_sm_steps: float          # tiles x steps / sms
    wave_efficiency: float        # mean / busiest
    bytes_in_flight_per_sm: float  # min(ctas, sms x ctas_per_sm) / sms x weight bytes in flight per CTA
    latency_cover: float          # min(1, bytes in flight per SM / kInflightTargetPerSm)
    slots: int                    # sms x ctas_per_sm (Python only)

    @property
    def efficiency(self) -> float:
        return self.wave_efficiency * self.latency_cover

    @property
    def waves(self) -> float:
        return self.ctas / self.slots if self.slots else 0.0


@dataclass(frozen=True)
class Launch:
    """One kernel launch: which instantiation runs, with what grid, and the plan it came from."""

    kernel: str              # "gemm" | "gemv" | "dequant"
    config: str              # the instantiation's key: "TileM16", "MAXM=4", "dequant"
    grid: tuple[int, int, int]
    threads: int
    plan: SplitPlan
    steps: int               # K steps the splits share (GEMM: BK tiles; GEMV: chunks; dequant: 1)

    @property
    def splits(self) -> int:
        return self.plan.splits

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def padded(n: int, k: int) -> tuple[int, int]:
    """n_pad, k_pad of the kernel layout (launch_common.cu check_args)."""
    return round_up(n, 16), round_up(k, 64)


def clamp_splits(request: int, steps: int, min_steps_per_split: int) -> int:
    """detail::clamp_splits (launch_common.cu)."""
    s = max(request, 1)
    cap = steps // (min_steps_per_split if min_steps_per_split > 0 else 1)
    if s > cap:
        s = max(cap, 1)
    per = -(-steps // s)
    return -(-steps // per)


def resident_ctas(c: CsrcConstants, min_ctas: int, smem_per_cta: int, smem_per_sm: int) -> int:
    """detail::resident_ctas (launch_common.cu): the launch-bounds minimum, unless shared memory holds fewer."""
    return max(1, min(min_ctas, smem_per_sm // (smem_per_cta + c.reserved_smem_per_cta)))


def split_stats(c: CsrcConstants, tiles: int, splits: int, steps: int, sms: int, ctas_per_sm: int,
                inflight_per_cta: int) -> SplitPlan:
    """detail::split_stats (launch_common.cu), same operations in the same order (same doubles)."""
    if tiles <= 0 or splits <= 0 or steps <= 0 or sms <= 0 or ctas_per_sm <= 0:
        return SplitPlan(splits, 0, ctas_per_sm, 0, 0.0, 0.0, 0.0, 0.0, sms * max(ctas_per_sm, 0))
    ctas = tiles * splits
    per = -(-steps // splits)
    busiest = -(-ctas // sms) * per
    mean = float(tiles) * steps / sms
    slots = sms * ctas_per_sm
    inflight = float(min(ctas, slots)) / sms * inflight_per_cta
    return SplitPlan(splits, ctas, ctas_per_sm, busiest, mean, mean / float(busiest), inflight,
                     min(inflight / c.inflight_target_per_sm, 1.0), slots)


def plan_splits(c: CsrcConstants, tiles: int, steps: int, min_steps_per_split: int, sms: int, ctas_per_sm: int,
                inflight_per_cta: int, weight_bytes: float, partial_bytes_per_split: float, mma_flops: float,
                split_request: int = 0) -> SplitPlan:
    """detail::plan_splits (launch_common.cu): least max((weight + partial traffic) / efficiency, mma FLOPs /
    kMmaFlopsPerHbmByte / wave efficiency); no split count beyond 1 that adds a second wave unless the mma term
    exceeds the weight bytes; ties (0.1 %) to fewer splits."""
    if split_request > 0:
        s = clamp_splits(min(split_request, c.max_splits), steps, min_steps_per_split)
        return split_stats(c, tiles, s, steps, sms, ctas_per_sm, inflight_per_cta)
    slots = sms * ctas_per_sm
    cap = clamp_splits(c.max_splits, steps, min_steps_per_split)
    mma_bytes = mma_flops / c.mma_flops_per_hbm_byte
    mma_bound = mma_bytes > weight_bytes

    def cost_of(p: SplitPlan) -> float:
        memory = (weight_bytes + 2.0 * p.splits * partial_bytes_per_split) / p.efficiency
        return max(memory, mma_bytes / p.wave_efficiency)

    best = split_stats(c, tiles, 1, steps, sms, ctas_per_sm, inflight_per_cta)
    best_cost = cost_of(best)
    for s in range(2, cap + 1):
        if clamp_splits(s, steps, min_steps_per_split) != s:
            continue
        if not mma_bound and tiles * s > slots:
            break
        p = split_stats(c, tiles, s, steps, sms, ctas_per_sm, inflight_per_cta)
        cost = cost_of(p)
        if cost < best_cost * 0.999:
            best, best_cost = p, cost
    return best


def gemm_dynamic_smem(tile: GemmTileCfg, gidx: bool) -> int:
    """StageLayout<Tile, GIDX>::kTotalBytes (gemm.cuh)."""
    a = tile.bm * tile.bk * 2
    b = tile.bk * tile.bn // 2
    s = 0 if gidx else 2 * 2 * tile.bn * 2
    i = tile.bk * 4 if gidx else 0
    return (a + b + s + i) * tile.stages + (1024 if tile.wgmma else 0)  # kAlignPad


def gemm_inflight_bytes(tile: GemmTileCfg) -> int:
    """gemm_inflight_bytes<Tile> (tile_configs.cuh)."""
    return (tile.stages - 1) * tile.bk * tile.bn // 2


def gemm_tile(c: CsrcConstants, m: int) -> GemmTileCfg:
    """launch_gemm_m / gemm_tile_info (gemm.cuh): the tile serving m."""
    return c.gemm_tiles["TileM16" if m <= 16 else "TileM32" if m <= 32 else "TileM64" if m <= 64 else "TileM128"]


def _device(c: CsrcConstants, sms: int, smem_per_sm: int) -> tuple[int, int]:
    """plan_*: the fallbacks when the device cannot be read."""
    return (sms if sms > 0 else c.fallback_sms), (smem_per_sm if smem_per_sm > 0 else c.fallback_smem_per_sm)


def gemm_steps_per_group(group_size: int, gptq_r: bool) -> int:
    """gemm_steps_per_group (gemm.cuh): BK = 64 steps per AWQ group; the kernel's split-K slices are whole groups."""
    return group_size // 64 if not gptq_r and group_size > 64 else 1


def gemm_launch(c: CsrcConstants, m: int, n: int, k: int, group_size: int, sms: int, smem_per_sm: int,
                gptq_r: bool = False, split_request: int = 0, wgmma: bool = False) -> Launch:
    """plan_gemm (gemm.cu), then launch_gemm_tile's grid; ``wgmma``: the sm_90a variant's (TileM64W)."""
    n_pad, k_pad = padded(n, k)
    tile = c.gemm_tiles["TileM64W"] if wgmma else gemm_tile(c, m)
    tiles = -(-n_pad // tile.bn) * -(-m // tile.bm)
    ktiles = k_pad // tile.bk
    per_group = gemm_steps_per_group(group_size, gptq_r)
    sms, smem_per_sm = _device(c, sms, smem_per_sm)
    per_sm = resident_ctas(c, tile.min_ctas, gemm_dynamic_smem(tile, gptq_r) + c.static_smem_allowance, smem_per_sm)
    plan = plan_splits(c, tiles, -(-ktiles // per_group), -(-c.gemm_min_ktiles_per_split // per_group), sms, per_sm,
                       gemm_inflight_bytes(tile), n_pad * k_pad / 2, float(m) * n_pad * 4,
                       2.0 * (-(-m // tile.bm) * tile.bm) * n_pad * k_pad / (c.wgmma_over_mma_sync if wgmma else 1),
                       split_request)
    return Launch("gemm", tile.name, (-(-n_pad // tile.bn), -(-m // tile.bm), plan.splits), tile.threads, plan, ktiles)


def gemv_rows(m: int) -> int:
    """gemv_rows (tile_configs.cuh): the MAXM instantiation serving m rows."""
    return 1 if m <= 1 else (2 if m <= 2 else (4 if m <= 4 else 8))


def gemv_min_ctas(maxm: int, gidx: bool) -> int:
    """gemv_min_ctas (tile_configs.cuh): the CTAs per SM the GEMV is built for."""
    return 2 if gidx or maxm > 4 else (4 if maxm <= 1 else 3)


def gemv_launch(c: CsrcConstants, m: int, n: int, k: int, sms: int, smem_per_sm: int, gptq_r: bool = False,
                split_request: int = 0) -> Launch:
    """plan_gemv (gemv.cu), dispatch_m's MAXM, launch_gemv's grid."""
    if m > c.gemv_max_m:
        raise ValueError(f"the GEMV takes m <= {c.gemv_max_m}, got m={m}")
    n_pad, k_pad = padded(n, k)
    strips = -(-n_pad // c.gemv_strip)
    chunks = k_pad // (16 * c.gemv_chunk)
    maxm = gemv_rows(m)
    smem = c.gemv_warps * maxm * c.gemv_strip * 4 + c.static_smem_allowance
    sms, smem_per_sm = _device(c, sms, smem_per_sm)
    per_sm = resident_ctas(c, gemv_min_ctas(maxm, gptq_r), smem, smem_per_sm)
    plan = plan_splits(c, strips, chunks, c.gemv_warps, sms, per_sm, c.gemv_inflight_bytes, n_pad * k_pad / 2,
                       float(m) * n_pad * 4, 0.0, split_request)  # no tensor-core work
    return Launch("gemv", f"MAXM={maxm}", (strips, plan.splits, 1), c.gemv_warps * 32, plan, chunks)


def dequant_launch(c: CsrcConstants, n: int, k: int, sms: int, ctas_per_sm: int) -> Launch:
    """launch (dequant.cu): one thread per packed word, grid capped at 65535 * 8. Nothing plans it in C++: its
    stats take the residency the caller computed (the static model: from the compiled kernel's resources)."""
    n_pad, k_pad = padded(n, k)
    total = (k_pad // 16) * (n_pad // 16) * 32
    grid = min(-(-total // c.dequant_threads), 65535 * 8)
    plan = split_stats(c, grid, 1, 1, sms, ctas_per_sm, c.dequant_threads * 4)
    return Launch("dequant", "dequant", (grid, 1, 1), c.dequant_threads, plan, 1)


__all__ = ["CsrcConstants", "GemmTileCfg", "Launch", "SplitPlan", "clamp_splits", "dequant_launch", "gemm_dynamic_smem",
           "gemm_inflight_bytes", "gemm_launch", "gemm_steps_per_group", "gemm_tile", "gemv_launch", "gemv_min_ctas", "gemv_rows", "padded",
           "plan_splits", "read_constants", "resident_ctas", "round_up", "split_stats"]
