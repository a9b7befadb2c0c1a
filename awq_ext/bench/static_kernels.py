"""What each W4A16 kernel family does per hot-loop iteration, as data the static model reads: recognised
from the kernel's demangled name and template arguments, with the tile constants from csrc/.

One ``KernelConfig`` per instantiated kernel says how many weight bytes one iteration of its hot loop
consumes, how many warps execute that iteration together, how many weight bytes a block keeps in flight,
its dynamic shared memory, and what the SASS of that loop must contain (so a loop finder that picked the
wrong loop, or a kernel whose structure changed, fails loudly instead of giving a wrong count). A kernel
this module does not know is an error: teach it here (one family = one ``_recognise_*`` function).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from awq_ext.bench.sass import LoopStats, SassError
from awq_ext.bench.static_launch import CsrcConstants, Launch, gemm_dynamic_smem, gemm_inflight_bytes, padded

HMMA_FLOPS = 16 * 8 * 16 * 2  # one HMMA.16816 (mma.m16n8k16)
# one warp's share of an HGMMA.64x64x16 (wgmma.m64n64k16: the 4 warps of the warpgroup each issue it)
HGMMA_FLOPS_PER_WARP = 64 * 64 * 16 * 2 // 4
# Dequantizing a 32-bit word of eight codes takes at least one integer/bit op per fp16x2/bf16x2 pair (4 per
# word, e.g. the magic-number LOP3s): one warp-instruction per 32 packed bytes. A hot loop below that is not
# the loop that dequantizes the weights (say, a load-only inner loop of a chunked kernel).
MIN_DEQUANT_OPS_PER_BYTE = 1 / 32
_DTYPES = {"__half": "fp16", "__nv_bfloat16": "bf16"}


@dataclass(frozen=True)
class KernelConfig:
    mangled: str
    demangled: str
    family: str                 # "gemm" | "gemv" | "dequant"
    dtype: str                  # "fp16" | "bf16"
    variant: str                # "awq" (reorder-free) | "gptq_r" (g_idx gather)
    group_size: int | None      # AWQ G; None for GPTQ-R / group-agnostic kernels
    config: str                 # the launch key it serves: "TileM16", "MAXM=4", "dequant"
    threads: int
    dynamic_smem: int
    weight_bytes_per_iteration: int  # packed weight bytes one hot-loop iteration consumes ...
    warps_per_iteration: int         # ... executed by this many warps together
    weight_bytes_in_flight_per_block: int
    expected_hmma_per_iteration: int  # per warp; 0 for kernels without MMA
    min_stream_loads_per_iteration: int  # per warp: device-memory loads the loop must hold at least
    mma_flops_per_instruction: int = HMMA_FLOPS  # per warp and MMA instruction of the loop
    mma_dense: bool = False                      # wgmma: the GPU's dense tensor rate, not mma.sync's share of it

    @property
    def label(self) -> str:
        g = f" G{self.group_size}" if self.group_size else ""
        return f"{self.family} {self.dtype} {self.variant}{g} {self.config}"

    def check_loop(self, loop: LoopStats) -> None:
        """SassError when the hot loop found does not look like this kernel's main loop."""
        if self.expected_hmma_per_iteration and loop.hmma != self.expected_hmma_per_iteration:
            raise SassError(f"{self.label}: the hot loop at /*{loop.header_offset:04x}*/ has {loop.hmma} HMMA per "
                            f"iteration, the tile implies {self.expected_hmma_per_iteration}: the loop finder chose "
                            "another loop or the kernel changed; update awq_ext/bench/static_kernels.py")
        dequant = loop.by_class.get("int_dequant", 0) * self.warps_per_iteration / self.weight_bytes_per_iteration
        if dequant < MIN_DEQUANT_OPS_PER_BYTE:
            raise SassError(f"{self.label}: the hot loop at /*{loop.header_offset:04x}*/ has {dequant:.4f} integer/dequant "
                            f"warp-instructions per weight byte, below the {MIN_DEQUANT_OPS_PER_BYTE:.4f} that "
                            f"dequantizing {self.weight_bytes_per_iteration} bytes per iteration needs: it is not the "
                            "loop that dequantizes (or the bytes per iteration changed); update "
                            "awq_ext/bench/static_kernels.py")
        if loop.global_stream_loads < self.min_stream_loads_per_iteration:
            raise SassError(f"{self.label}: the hot loop at /*{loop.header_offset:04x}*/ has {loop.global_stream_loads} "
                            f"device-memory loads, fewer than the {self.min_stream_loads_per_iteration} the kernel "
                            "issues per iteration; update awq_ext/bench/static_kernels.py")


_GEMM = re.compile(r"w4a16_gemm_kernel<(\w+), awq::GemmTile<(\d+), (\d+), (\d+), (\d+), (\d+), (\d+), (true|false)>, "
                   r"(\d+), (true|false)>")
_GEMV = re.compile(r"w4a16_gemv_kernel<(\w+), (\d+), (\d+), (true|false)>")
_DEQ = re.compile(r"w4_dequant_kernel<(\w+), (true|false)>")


def _dtype(name: str, demangled: str) -> str:
    if name not in _DTYPES:
        raise SassError(f"unknown element type {name!r} in {demangled}")
    return _DTYPES[name]


def _recognise_gemm(m: re.Match, mangled: str, demangled: str, c: CsrcConstants) -> KernelConfig:
    dims = (*(int(x) for x in m.groups()[1:7]), m.group(8) == "true")
    tile = next((t for t in c.gemm_tiles.values()
                 if (t.bm, t.bn, t.warps_m, t.warps_n, t.stages, t.min_ctas, t.wgmma) == dims), None)
    if tile is None:
        raise SassError(f"{demangled}: GemmTile{dims} is none of the tiles in csrc/tile_configs.cuh")
    gidx = m.group(10) == "true"
    mt, nt16 = tile.bm // tile.warps_m // 16, tile.bn // tile.warps_n // 16
    per_stage = tile.bk * tile.bn // 2
    # gemm.cuh unrolls the AWQ main loop over one turn of the STAGES-slot ring (one iteration computes STAGES BK
    # steps); the GPTQ-R loop computes one step per iteration
    turn = 1 if gidx else tile.stages
    # per warp and k16 step: mma.sync, 2 n8 tiles x MT per weight block; wgmma, one HGMMA per weight block (m64 tile)
    mma_per_k16 = nt16 if tile.wgmma else nt16 * 2 * mt
    return KernelConfig(mangled, demangled, "gemm", _dtype(m.group(1), demangled), "gptq_r" if gidx else "awq",
                        None if gidx else int(m.group(9)), tile.name, tile.threads, gemm_dynamic_smem(tile, gidx),
                        weight_bytes_per_iteration=turn * per_stage, warps_per_iteration=tile.threads // 32,
                        weight_bytes_in_flight_per_block=gemm_inflight_bytes(tile),
                        expected_hmma_per_iteration=turn * (tile.bk // 16) * mma_per_k16,
                        min_stream_loads_per_iteration=turn,
                        mma_flops_per_instruction=HGMMA_FLOPS_PER_WARP if tile.wgmma else HMMA_FLOPS,
                        mma_dense=tile.wgmma)


def _recognise_gemv(m: re.Match, mangled: str, demangled: str, c: CsrcConstants) -> KernelConfig:
    gidx = m.group(4) == "true"
    # one chunk: kGemvChunk k16 rows, a warp reads 512 contiguous bytes per k16 row (gemv.cu)
    per_warp = c.gemv_chunk * 512
    return KernelConfig(mangled, demangled, "gemv", _dtype(m.group(1), demangled), "gptq_r" if gidx else "awq",
                        None if gidx else int(m.group(3)), f"MAXM={m.group(2)}", c.gemv_warps * 32, 0,
                        weight_bytes_per_iteration=per_warp, warps_per_iteration=1,
                        weight_bytes_in_flight_per_block=c.gemv_inflight_bytes,
                        expected_hmma_per_iteration=0, min_stream_loads_per_iteration=c.gemv_chunk)


def _recognise_dequant(m: re.Match, mangled: str, demangled: str, c: CsrcConstants) -> KernelConfig:
    gidx = m.group(2) == "true"
    return KernelConfig(mangled, demangled, "dequant", _dtype(m.group(1), demangled), "gptq_r" if gidx else "awq",
                        None, "dequant", c.dequant_threads, 0, weight_bytes_per_iteration=32 * 4,
                        warps_per_iteration=1, weight_bytes_in_flight_per_block=c.dequant_threads * 4,
                        expected_hmma_per_iteration=0, min_stream_loads_per_iteration=1)


FAMILIES = ((_GEMM, _recognise_gemm), (_GEMV, _recognise_gemv), (_DEQ, _recognise_dequant))


# Kernels that stream no weights, by name: the static model has nothing to count in them.
HELPERS = re.compile(r"awq::wgmma_probe_kernel\(")


def recognise(mangled: str, demangled: str, c: CsrcConstants) -> KernelConfig | None:
    """The kernel's config; None for a helper kernel (HELPERS); SassError for an unknown one."""
    if HELPERS.search(demangled):
        return None
    for pattern, build in FAMILIES:
        m = pattern.search(demangled)
        if m:
            return build(m, mangled, demangled, c)
    raise SassError(f"kernel {demangled} is not described in awq_ext/bench/static_kernels.py: add its family "
                    "(bytes per hot-loop iteration, bytes in flight, launch key) so the static model can count it")


@dataclass(frozen=True)
class Work:
    """Totals of one launch of a recognised kernel."""

    read_bytes: float        # DRAM loads
    write_bytes: float       # DRAM stores
    weight_bytes: float      # packed weight bytes the hot loops consume (re-reads by several M tiles counted)
    loop_iterations: float   # iterations of the hot loop, each executed by warps_per_iteration warps


def launch_work(cfg: KernelConfig, launch: Launch, m: int, n: int, k: int, group_size: int) -> Work:
    """DRAM traffic and hot-loop iterations of ``launch``: weights, scales/zeros (g_idx gathers counted once),
    activations in, output out, and split-K fp32 partials written then read back."""
    n_pad, k_pad = padded(n, k)
    groups = -(-k_pad // group_size) if cfg.variant == "awq" else -(-k // group_size)
    params = 2 * groups * n_pad * 2 + (k_pad * 4 if cfg.variant == "gptq_r" else 0)
    if cfg.family == "dequant":
        weights = n_pad * k_pad / 2
        return Work(weights + params, 2.0 * n * k, weights, weights / cfg.weight_bytes_per_iteration)
    reread = launch.grid[1] if cfg.family == "gemm" else 1  # every M tile streams the whole weight
    weights = n_pad * k_pad / 2 * reread
    partials = 4.0 * launch.splits * m * n if launch.splits > 1 else 0.0
    return Work(weights + params + 2.0 * m * k + partials, 2.0 * m * n + partials, weights,
                weights / cfg.weight_bytes_per_iteration)


__all__ = ["FAMILIES", "HELPERS", "HGMMA_FLOPS_PER_WARP", "HMMA_FLOPS", "KernelConfig", "Work", "launch_work", "recognise"]
