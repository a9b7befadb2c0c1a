"""The launch geometry of every W4A16 path, mirrored from the C++ launchers so the static model predicts the
grids the kernels really get. THE place to update when ``csrc/`` launchers change: each function names the
C++ function it mirrors, and the constants are read from the headers (never copied), so a retuned
constant flows through on its own; a changed formula must be changed here too. The two small constexpr
functions of tile_configs.cuh the launchers call (gemv_rows, gemv_min_ctas) are mirrored here and their C++
bodies compared with the text they were mirrored from, so an edit there fails loudly instead of drifting.

Mirrors (csrc/ as of this commit):
  gemm     plan_gemm (gemm.cu) + launch_gemm_m / launch_gemm_tile / gemm_tile_min_ctas (gemm.cuh)
  gemv     plan_gemv + dispatch_m + launch_gemv (gemv.cu), gemv_rows / gemv_min_ctas (tile_configs.cuh)
  split-K  detail::clamp_splits / wave_efficiency / auto_splits (launch_common.cu)
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
    """Tuning constants of csrc/tile_configs.cuh and csrc/awq_kernels.h."""

    gemm_tiles: dict[str, GemmTileCfg]   # "TileM16" -> tile
    gemv_warps: int
    gemv_strip: int
    gemv_chunk: int                      # k16 rows per GEMV chunk (the GEMV's split-K step)
    gemv_max_m: int
    dequant_threads: int
    gemm_min_ktiles_per_split: int
    max_splits: int


_INT = r"constexpr\s+int\s+{}\s*=\s*(\w+)\s*(?:\*\s*(\d+))?\s*;"
_TILE = re.compile(r"using\s+(Tile\w+)\s*=\s*GemmTile<\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*>")
# The constexpr helpers of tile_configs.cuh that gemv_rows / gemv_min_ctas below mirror, as mirrored.
_MIRRORED = {
    "gemv_rows": "return m <= 1 ? 1 : (m <= 2 ? 2 : (m <= 4 ? 4 : 8));",
    "gemv_min_ctas": "return gidx || maxm > 4 ? 2 : (maxm <= 1 ? 4 : 3);",
}


def _check_mirrored(text: str) -> None:
    for name, body in _MIRRORED.items():
        m = re.search(r"constexpr\s+int\s+" + name + r"\s*\([^)]*\)\s*\{(.*?)\}", text, re.S)
        if m is None or " ".join(m.group(1).split()) != body:
            raise SassError(f"{name} in csrc/tile_configs.cuh is missing or changed (mirrored from {body!r}): "
                            "update awq_ext/bench/static_launch.py")


def read_constants(csrc: Path) -> CsrcConstants:
    """Parse the constants the launchers use; SassError naming any that is missing (the model is then stale)."""
    text = "\n".join((csrc / f).read_text() for f in ("tile_configs.cuh", "awq_kernels.h") if (csrc / f).exists())
    vals: dict[str, int] = {}

    def get(name: str) -> int:
        m = re.search(_INT.format(name), text)
        if m is None:
            raise SassError(f"constant {name} not found in csrc/tile_configs.cuh or awq_kernels.h: the launchers "
                            "changed; update awq_ext/bench/static_launch.py")
        base = vals[m.group(1)] if m.group(1) in vals else int(m.group(1), 0)
        vals[name] = base * int(m.group(2) or 1)
        return vals[name]

    tiles = {m.group(1): GemmTileCfg(m.group(1), *map(int, m.groups()[1:])) for m in _TILE.finditer(text)}
    for need in ("TileM16", "TileM64", "TileM128"):
        if need not in tiles:
            raise SassError(f"{need} not found in csrc/tile_configs.cuh; update awq_ext/bench/static_launch.py")
    _check_mirrored(text)
    return CsrcConstants(tiles, get("kGemvWarps"), get("kGemvStrip"), get("kGemvChunk"), get("kGemvMaxM"),
                         get("kDequantThreads"), get("kGemmMinKTilesPerSplit"), get("kMaxSplits"))


@dataclass(frozen=True)
class Launch:
    """One kernel launch: which instantiation runs and with what grid."""

    kernel: str              # "gemm" | "gemv" | "dequant"
    config: str              # the instantiation's key: "TileM16", "MAXM=4", "dequant"
    grid: tuple[int, int, int]
    threads: int
    splits: int
    steps: int               # K steps the splits share (GEMM: BK tiles; GEMV: chunks; dequant: 1)

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def slice_balance(self) -> float:
        """steps / (splits x ceil(steps / splits)): 1.0 when every split-K slice holds the same K range."""
        return self.steps / (self.splits * -(-self.steps // self.splits))


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


def wave_efficiency(tiles: int, splits: int, steps: int, slots: int) -> float:
    """detail::wave_efficiency (launch_common.cu): wave fill times split-K slice balance."""
    if tiles <= 0 or splits <= 0 or steps <= 0 or slots <= 0:
        return 0.0
    ctas = tiles * splits
    fill = ctas / (-(-ctas // slots) * slots)
    return fill * steps / (splits * -(-steps // splits))


def auto_splits(tiles: int, steps: int, min_steps_per_split: int, slots: int, weight_bytes: float,
                partial_bytes_per_split: float, max_splits: int) -> int:
    """detail::auto_splits (launch_common.cu): the split count with the least (weight + partial traffic) /
    wave efficiency; ties (within 0.1 %) go to fewer splits."""
    cap = clamp_splits(max_splits, steps, min_steps_per_split)
    best, best_cost = 1, 0.0
    for s in range(1, cap + 1):
        if clamp_splits(s, steps, min_steps_per_split) != s:
            continue
        cost = (weight_bytes + (2.0 * s * partial_bytes_per_split if s > 1 else 0.0)) / wave_efficiency(
            tiles, s, steps, slots)
        if s == 1 or cost < best_cost * 0.999:
            best, best_cost = s, cost
    return best


def _slots(sms: int, ctas_per_sm: int) -> int:
    return (sms if sms > 0 else 108) * ctas_per_sm  # plan_*: 108 when the SM count cannot be read


def gemm_tile(c: CsrcConstants, m: int) -> GemmTileCfg:
    """launch_gemm_m / gemm_tile_bm / gemm_tile_bn / gemm_tile_min_ctas (gemm.cuh)."""
    return c.gemm_tiles["TileM16" if m <= 16 else ("TileM64" if m <= 64 else "TileM128")]


def gemm_launch(c: CsrcConstants, m: int, n: int, k: int, sms: int) -> Launch:
    """plan_gemm (gemm.cu) with split_request 0, then launch_gemm_tile's grid."""
    n_pad, k_pad = padded(n, k)
    tile = gemm_tile(c, m)
    tiles = -(-n_pad // tile.bn) * -(-m // tile.bm)
    ktiles = k_pad // tile.bk
    splits = auto_splits(tiles, ktiles, c.gemm_min_ktiles_per_split, _slots(sms, tile.min_ctas), n_pad * k_pad / 2,
                         float(m) * n_pad * 4, c.max_splits)
    return Launch("gemm", tile.name, (-(-n_pad // tile.bn), -(-m // tile.bm), splits), tile.threads, splits, ktiles)


def gemv_rows(m: int) -> int:
    """gemv_rows (tile_configs.cuh): the MAXM instantiation serving m rows."""
    return 1 if m <= 1 else (2 if m <= 2 else (4 if m <= 4 else 8))


def gemv_min_ctas(maxm: int, gidx: bool) -> int:
    """gemv_min_ctas (tile_configs.cuh): the CTAs per SM the GEMV is built for."""
    return 2 if gidx or maxm > 4 else (4 if maxm <= 1 else 3)


def gemv_launch(c: CsrcConstants, m: int, n: int, k: int, sms: int, gptq_r: bool = False) -> Launch:
    """plan_gemv (gemv.cu) with split_request 0, dispatch_m's MAXM, launch_gemv's grid."""
    if m > c.gemv_max_m:
        raise ValueError(f"the GEMV takes m <= {c.gemv_max_m}, got m={m}")
    n_pad, k_pad = padded(n, k)
    strips = -(-n_pad // c.gemv_strip)
    chunks = k_pad // (16 * c.gemv_chunk)
    maxm = gemv_rows(m)
    splits = auto_splits(strips, chunks, c.gemv_warps, _slots(sms, gemv_min_ctas(maxm, gptq_r)), n_pad * k_pad / 2,
                         float(m) * n_pad * 4, c.max_splits)
    return Launch("gemv", f"MAXM={maxm}", (strips, splits, 1), c.gemv_warps * 32, splits, chunks)


def dequant_launch(c: CsrcConstants, n: int, k: int) -> Launch:
    """launch (dequant.cu): one thread per packed word, grid capped at 65535 * 8."""
    n_pad, k_pad = padded(n, k)
    total = (k_pad // 16) * (n_pad // 16) * 32
    grid = min(-(-total // c.dequant_threads), 65535 * 8)
    return Launch("dequant", "dequant", (grid, 1, 1), c.dequant_threads, 1, 1)


__all__ = ["CsrcConstants", "GemmTileCfg", "Launch", "auto_splits", "clamp_splits", "dequant_launch", "gemm_launch",
           "gemm_tile", "gemv_launch", "gemv_min_ctas", "gemv_rows", "padded", "read_constants", "round_up",
           "wave_efficiency"]
