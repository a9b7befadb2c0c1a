"""Pure arithmetic of the static performance model (no SASS, no tools): GPU parameters with their sources,
occupancy, the issue-rate ceiling, Little's law, waves, and the predicted time of a launch.

Everything here is a PREDICTION from datasheet figures and stated assumptions, never a measurement.

Model of one launch (``predict_launch``), on the plan of awq_ext/bench/static_launch.py (the launchers' own
planning function, mirrored): the launch takes the largest of
  * its DRAM loads / min(HBM bandwidth, bytes in flight of its resident blocks / DRAM latency) (Little's law),
    or all its DRAM bytes (loads + stores) / HBM bandwidth, whichever is longer,
  * its hot-loop warp-instructions spread over the SMs / (4 per clock x clock),
  * its mma FLOPs spread over the SMs / the SM's mma.sync rate,
each divided by the plan's wave efficiency (mean SM work / busiest SM work: the busiest SM sets the time),
and adds a fixed launch overhead. Only the hot loop's instructions are counted (prologue, epilogue and
split-K reduction are left out), so the issue term is a lower bound.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from awq_ext.errors import AWQInputError


@dataclass(frozen=True)
class GpuSpec:
    name: str
    arch: str                       # "sm_90"
    sms: int
    clock_ghz: float                # SM clock the model assumes (max boost)
    hbm_tbps: float                 # nominal DRAM bandwidth (1e12 B/s)
    hbm_measured_tbps: float | None  # device-to-device copy measured on such a card, where known
    dense_fp16_tflops: float        # dense fp16/bf16 tensor rate (wgmma on Hopper), for the FP16 baseline
    mma_sync_fraction: float        # share of that rate mma.sync (HMMA.16816) reaches
    dram_latency_ns: float          # loaded DRAM latency assumed for Little's law
    launch_overhead_us: float       # per kernel launch, back to back in a CUDA graph (assumed)
    issue_per_clk_per_sm: int = 4   # 4 sub-partitions x 1 warp-instruction per clock
    regs_per_sm: int = 65536
    reg_alloc_unit: int = 256       # registers per warp are allocated in units of 256
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    smem_per_sm: int = 233472       # bytes usable by blocks (228 KB on sm_90; 164 KB on sm_80)
    smem_reserved_per_block: int = 1024
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def issue_rate(self) -> float:
        """Warp-instructions per second, whole GPU."""
        return self.issue_per_clk_per_sm * self.sms * self.clock_ghz * 1e9

    @property
    def mma_flops_per_sm(self) -> float:
        """mma.sync FLOP/s one SM sustains (dense rate x fraction / SMs)."""
        return self.dense_fp16_tflops * 1e12 * self.mma_sync_fraction / self.sms

    def tensor_flops_per_sm(self, dense: bool) -> float:
        """FLOP/s one SM sustains: wgmma (``dense``) at the dense rate, mma.sync at its share."""
        return self.dense_fp16_tflops * 1e12 / self.sms if dense else self.mma_flops_per_sm

    def to_dict(self) -> dict:
        return asdict(self)


_KINDS = "/work/.library/device/KINDS.md (readings on this workplace's H200, 2026-10-28/11-04)"
_LATENCY = ("assumption: unloaded DRAM pointer-chase latency on Hopper/Ampere is reported at roughly 500-650 ns "
            "in public microbenchmarks; a stream at full bandwidth queues, so the model takes 800 ns loaded; "
            "not measured here")
_MMA = ("assumption: Hopper reaches its dense tensor rate only through wgmma; public microbenchmarks (e.g. Luo et al., "
        "'Dissecting the NVIDIA Hopper Architecture', arXiv 2501.12084) find mma.sync at about half of it")
_LAUNCH = ("assumption: back-to-back launch gap plus ramp-up/drain of a small kernel in a CUDA graph; "
           "benchmarks/gpu_suite.sh times the real kernels in graphs")
_ISSUE = "NVIDIA Hopper/Ampere tuning guides: 4 SM sub-partitions, each issues 1 warp-instruction per clock"

GPUS: dict[str, GpuSpec] = {
    "H200": GpuSpec(
        "H200", "sm_90", sms=132, clock_ghz=1.98, hbm_tbps=4.8, hbm_measured_tbps=4.3, dense_fp16_tflops=989.0,
        mma_sync_fraction=0.5, dram_latency_ns=800.0, launch_overhead_us=2.0,
        sources={"sms": f"132: torch reported 132 multiprocessors on the H200, {_KINDS}",
                 "clock_ghz": f"1.98: nvidia-smi read SM 1980 MHz under load, {_KINDS}",
                 "hbm_tbps": "4.8: NVIDIA H200 datasheet (/work/.library/device/H200.md)",
                 "hbm_measured_tbps": f"4.3: device-to-device copy through PyTorch, {_KINDS}",
                 "dense_fp16_tflops": "989: the H100's dense bf16/fp16 rate, which the H200 SXM shares "
                                      "(/work/.library/device/H200.md; datasheet); 788 TFLOP/s bf16 measured, " + _KINDS,
                 "mma_sync_fraction": _MMA, "dram_latency_ns": _LATENCY, "launch_overhead_us": _LAUNCH,
                 "issue_per_clk_per_sm": _ISSUE,
                 "smem_per_sm": "228 KB per SM for blocks on sm_90 (CUDA C++ Programming Guide, compute capability 9.0)"}),
    "H100-SXM": GpuSpec(
        "H100-SXM", "sm_90", sms=132, clock_ghz=1.98, hbm_tbps=3.35, hbm_measured_tbps=None, dense_fp16_tflops=989.0,
        mma_sync_fraction=0.5, dram_latency_ns=800.0, launch_overhead_us=2.0,
        sources={"sms": "132 SMs on H100 SXM5 (NVIDIA H100 whitepaper)",
                 "clock_ghz": "1.98 GHz max boost (nvidia-smi max SM clock of H100 SXM5)",
                 "hbm_tbps": "3.35: NVIDIA H100 SXM datasheet (80 GB HBM3; /work/.library/device/H200.md)",
                 "dense_fp16_tflops": "989: NVIDIA H100 SXM datasheet (dense, without sparsity)",
                 "mma_sync_fraction": _MMA, "dram_latency_ns": _LATENCY, "launch_overhead_us": _LAUNCH,
                 "issue_per_clk_per_sm": _ISSUE}),
    "A100-SXM4-80GB": GpuSpec(
        "A100-SXM4-80GB", "sm_80", sms=108, clock_ghz=1.41, hbm_tbps=2.039, hbm_measured_tbps=None,
        dense_fp16_tflops=312.0, mma_sync_fraction=1.0, dram_latency_ns=800.0, launch_overhead_us=2.0,
        smem_per_sm=167936,
        sources={"sms": "108 SMs (NVIDIA A100 whitepaper)", "clock_ghz": "1.41 GHz boost (A100 datasheet)",
                 "hbm_tbps": "2.039: NVIDIA A100 80GB SXM datasheet",
                 "dense_fp16_tflops": "312: A100 datasheet (dense fp16 tensor)",
                 "mma_sync_fraction": "1.0: mma.sync is Ampere's native tensor-core instruction",
                 "dram_latency_ns": _LATENCY, "launch_overhead_us": _LAUNCH, "issue_per_clk_per_sm": _ISSUE,
                 "smem_per_sm": "164 KB per SM for blocks on sm_80 (CUDA C++ Programming Guide, 8.0)"}),
}
# The GPU whose parameters the rows of each architecture use (the target for sm_90 is the H200).
ROW_GPU = {"sm_90": "H200", "sm_80": "A100-SXM4-80GB"}


# ---- occupancy --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    limiter: str  # "registers" | "shared memory" | "warps" | "blocks"


def occupancy(gpu: GpuSpec, registers: int, threads: int, smem_bytes: int) -> Occupancy:
    """Resident blocks per SM from registers/thread, threads/block and shared memory/block (without the
    per-block reservation, which is added here), as the CUDA occupancy calculator counts them."""
    if registers <= 0 or threads <= 0 or smem_bytes < 0:
        raise AWQInputError(f"occupancy needs registers > 0, threads > 0, smem >= 0; got {registers}, {threads}, {smem_bytes}")
    warps = -(-threads // 32)
    regs_per_warp = -(-registers * 32 // gpu.reg_alloc_unit) * gpu.reg_alloc_unit
    limits = {
        "registers": (gpu.regs_per_sm // regs_per_warp) // warps,
        "shared memory": gpu.smem_per_sm // (smem_bytes + gpu.smem_reserved_per_block),
        "warps": gpu.max_warps_per_sm // warps,
        "blocks": gpu.max_blocks_per_sm,
    }
    limiter = min(limits, key=lambda k: limits[k])
    return Occupancy(limits[limiter], limiter)


# ---- ceilings -------------------------------------------------------------------------------------------

def issue_ceiling_bytes_per_s(gpu: GpuSpec, instructions_per_byte: float) -> float:
    """Weight bytes/s at which the whole GPU issues the hot loop's instructions at 4 per clock per SM."""
    if instructions_per_byte <= 0:
        raise AWQInputError(f"instructions per byte must be > 0, got {instructions_per_byte}")
    return gpu.issue_rate / instructions_per_byte


def mma_ceiling_bytes_per_s(gpu: GpuSpec, mma_flops_per_byte: float, dense: bool = False) -> float:
    """Weight bytes/s at which the SMs' tensor rate (mma.sync's, or wgmma's dense one) is the limit (inf without
    MMA)."""
    if mma_flops_per_byte <= 0:
        return math.inf
    return gpu.tensor_flops_per_sm(dense) * gpu.sms / mma_flops_per_byte


def littles_law_bytes_per_sm(gpu: GpuSpec, bandwidth_tbps: float | None = None) -> float:
    """Bytes each SM must keep in flight to sustain ``bandwidth`` (default nominal HBM): B x latency / SMs."""
    bw = (bandwidth_tbps if bandwidth_tbps is not None else gpu.hbm_tbps) * 1e12
    return bw * gpu.dram_latency_ns * 1e-9 / gpu.sms


# ---- time -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchWork:
    """What one launch does, in totals over the grid, and how its plan spreads it over the SMs."""

    resident_blocks_per_sm: float  # blocks resident at once, averaged over the SMs (min(blocks, slots) / SMs)
    wave_efficiency: float         # mean SM work / busiest SM work (static_launch.SplitPlan)
    dram_read_bytes: float         # bytes loaded from DRAM (these need bytes in flight: Little's law)
    dram_write_bytes: float        # bytes stored (fire and forget: bounded by bandwidth only)
    instructions: float            # warp-instructions (hot loop only)
    mma_flops: float               # FLOPs issued to the tensor cores (padding rows included)
    bytes_in_flight_per_block: float
    mma_dense: bool = False        # issued as wgmma (the dense rate), else mma.sync


@dataclass(frozen=True)
class LaunchTime:
    total_us: float
    memory_us: float
    issue_us: float
    mma_us: float
    overhead_us: float
    bound: str  # which term set the time: "memory" | "issue" | "mma"

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def predict_launch(gpu: GpuSpec, w: LaunchWork, bandwidth_tbps: float | None = None) -> LaunchTime:
    """Predicted time of one launch (see the module docstring)."""
    if w.resident_blocks_per_sm <= 0 or not 0 < w.wave_efficiency <= 1:
        raise AWQInputError(f"a launch needs resident blocks > 0 and 0 < wave efficiency <= 1; got "
                            f"{w.resident_blocks_per_sm}, {w.wave_efficiency}")
    bw = (bandwidth_tbps if bandwidth_tbps is not None else gpu.hbm_tbps) * 1e12
    read_bw = min(bw, w.resident_blocks_per_sm * gpu.sms * w.bytes_in_flight_per_block / (gpu.dram_latency_ns * 1e-9))
    terms = {
        "memory": max(w.dram_read_bytes / read_bw, (w.dram_read_bytes + w.dram_write_bytes) / bw),
        "issue": w.instructions / gpu.sms / (gpu.issue_per_clk_per_sm * gpu.clock_ghz * 1e9),
        "mma": w.mma_flops / gpu.sms / gpu.tensor_flops_per_sm(w.mma_dense),
    }
    terms = {k: v / w.wave_efficiency for k, v in terms.items()}
    bound = max(terms, key=lambda k: terms[k])
    return LaunchTime(terms[bound] * 1e6 + gpu.launch_overhead_us, terms["memory"] * 1e6, terms["issue"] * 1e6,
                      terms["mma"] * 1e6, gpu.launch_overhead_us, bound)


def fp16_baseline_us(gpu: GpuSpec, m: int, n: int, k: int, bandwidth_tbps: float | None = None,
                     launch: bool = True) -> float:
    """An ideal FP16 GEMV/GEMM: 16-bit weights, activations and outputs streamed once at the bandwidth, or the
    dense tensor rate if that is slower, plus one launch."""
    bw = (bandwidth_tbps if bandwidth_tbps is not None else gpu.hbm_tbps) * 1e12
    t = max((2.0 * n * k + 2.0 * m * k + 2.0 * m * n) / bw, 2.0 * m * n * k / (gpu.dense_fp16_tflops * 1e12))
    return t * 1e6 + (gpu.launch_overhead_us if launch else 0.0)


__all__ = ["GPUS", "ROW_GPU", "GpuSpec", "LaunchTime", "LaunchWork", "Occupancy", "fp16_baseline_us",
           "issue_ceiling_bytes_per_s", "littles_law_bytes_per_sm", "mma_ceiling_bytes_per_s", "occupancy",
           "predict_launch"]
