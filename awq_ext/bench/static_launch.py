"""The launch geometry of every W4A16 path, mirrored from the C++ launchers so the static model predicts the
grids the kernels really get. THE place to update when ``csrc/`` launchers change: each function names the
C++ function it mirrors, and the constants are read from the headers (never copied), so a retuned
constant flows through on its own; a changed formula must be changed here too.

Mirrors (csrc/ as of this commit):
  gemm     plan_gemm (gemm.cu) + launch_gemm_m / launch_gemm_tile (gemm.cuh)
  gemv     plan_gemv + dispatch_m + launch_gemv (gemv.cu)
  dequant  launch (dequant.cu)
  dispatch awq_ext/kernels/ops.py: w4a16_linear passes split_k=0 (auto); the binding passes the device's SM
           count (binding.cpp sm_count) to plan_*.
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
    bk: int = 64

    @property
    def threads(self) -> int:
        return self.warps_m * self.warps_n * 32


@dataclass(frozen=True)
class CsrcConstants:
    """Tuning constants of csrc/tile_configs.cuh, csrc/awq_kernels.h and csrc/gemm.cuh."""

    gemm_tiles: dict[str, GemmTileCfg]   # "TileM16" -> tile
    gemm_plan_bn: int                    # kGemmBN (gemm.cuh): the BN plan_gemm counts output tiles with
    gemv_warps: int
    gemv_strip: int
    gemv_unroll: int
    gemv_max_m: int
    dequant_threads: int
    split_target_ctas_per_sm: int
    gemm_min_ktiles_per_split: int
    max_splits: int


_INT = r"constexpr\s+int\s+{}\s*=\s*(\w+)\s*(?:\*\s*(\d+))?\s*;"
_TILE = re.compile(r"using\s+(Tile\w+)\s*=\s*GemmTile<\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*>")


def read_constants(csrc: Path) -> CsrcConstants:
    """Parse the constants the launchers use; SassError naming any that is missing (the model is then stale)."""
    text = "\n".join((csrc / f).read_text() for f in ("tile_configs.cuh", "awq_kernels.h", "gemm.cuh")
                     if (csrc / f).exists())
    vals: dict[str, int] = {}

    def get(name: str) -> int:
        m = re.search(_INT.format(name), text)
        if m is None:
            raise SassError(f"constant {name} not found in csrc/tile_configs.cuh, awq_kernels.h or gemm.cuh: the launchers "
                            "changed; update awq_ext/bench/static_launch.py")
        base = vals[m.group(1)] if m.group(1) in vals else int(m.group(1), 0)
        vals[name] = base * int(m.group(2) or 1)
        return vals[name]

    tiles = {m.group(1): GemmTileCfg(m.group(1), *map(int, m.groups()[1:])) for m in _TILE.finditer(text)}
    for need in ("TileM16", "TileM64", "TileM128"):
        if need not in tiles:
            raise SassError(f"{need} not found in csrc/tile_configs.cuh; update awq_ext/bench/static_launch.py")
    warps = get("kGemvWarps")
    return CsrcConstants(tiles, get("kGemmBN"), warps, get("kGemvStrip"), get("kGemvUnroll"), get("kGemvMaxM"),
                         get("kDequantThreads"), get("kSplitTargetCtasPerSm"), get("kGemmMinKTilesPerSplit"),
                         get("kMaxSplits"))


@dataclass(frozen=True)
class Launch:
    """One kernel launch: which instantiation runs and with what grid."""

    kernel: str              # "gemm" | "gemv" | "dequant"
    config: str              # the instantiation's key: "TileM16", "MAXM=4", "dequant"
    grid: tuple[int, int, int]
    threads: int
    splits: int

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


def gemm_tile(c: CsrcConstants, m: int) -> GemmTileCfg:
    """launch_gemm_m / gemm_tile_bm (gemm.cuh)."""
    return c.gemm_tiles["TileM16" if m <= 16 else ("TileM64" if m <= 64 else "TileM128")]


def gemm_launch(c: CsrcConstants, m: int, n: int, k: int, sms: int) -> Launch:
    """plan_gemm (gemm.cu) with split_request 0, then launch_gemm_tile's grid."""
    n_pad, k_pad = padded(n, k)
    tile = gemm_tile(c, m)
    tiles = -(-n_pad // c.gemm_plan_bn) * -(-m // tile.bm)
    target = (sms if sms > 0 else 108) * c.split_target_ctas_per_sm
    want = min(-(-target // tiles), c.max_splits)
    splits = clamp_splits(want, k_pad // 64, c.gemm_min_ktiles_per_split)
    return Launch("gemm", tile.name, (-(-n_pad // tile.bn), -(-m // tile.bm), splits), tile.threads, splits)


def gemv_launch(c: CsrcConstants, m: int, n: int, k: int, sms: int) -> Launch:
    """plan_gemv (gemv.cu) with split_request 0, dispatch_m's MAXM, launch_gemv's grid."""
    if m > c.gemv_max_m:
        raise ValueError(f"the GEMV takes m <= {c.gemv_max_m}, got m={m}")
    n_pad, k_pad = padded(n, k)
    strips = -(-n_pad // c.gemv_strip)
    target = (sms if sms > 0 else 108) * c.split_target_ctas_per_sm * 2
    want = min(-(-target // strips), c.max_splits)
    splits = clamp_splits(want, k_pad // 16, c.gemv_warps * c.gemv_unroll)
    maxm = 1 if m <= 1 else 2 if m <= 2 else 4 if m <= 4 else 8
    return Launch("gemv", f"MAXM={maxm}", (strips, splits, 1), c.gemv_warps * 32, splits)


def dequant_launch(c: CsrcConstants, n: int, k: int) -> Launch:
    """launch (dequant.cu): one thread per packed word, grid capped at 65535 * 8."""
    n_pad, k_pad = padded(n, k)
    total = (k_pad // 16) * (n_pad // 16) * 32
    grid = min(-(-total // c.dequant_threads), 65535 * 8)
    return Launch("dequant", "dequant", (grid, 1, 1), c.dequant_threads, 1)


__all__ = ["CsrcConstants", "GemmTileCfg", "Launch", "clamp_splits", "dequant_launch", "gemm_launch", "gemm_tile",
           "gemv_launch", "padded", "read_constants", "round_up"]
