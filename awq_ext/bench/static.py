"""``python -m awq_ext.bench static``: the static performance model of the W4A16 kernels, from their SASS.

Compiles (or reads the cached cubins of) every kernel in csrc/ for sm_90 and sm_80, finds each kernel's hot
loop in the SASS, and reports per instantiated config: registers, spills, shared memory, blocks/SM, hot-loop
instructions per weight byte by class, and the ceilings they imply; then per (arch, shape, M, path): grid,
waves, bytes in flight vs Little's law, the predicted time and speedup vs an ideal FP16 GEMV/GEMM, the
dispatch table derived from those predictions, and which of issue 17's acceptance criteria hold.

Every number is PREDICTED (SASS counts + datasheet parameters + stated assumptions); none is measured.
"""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from awq_ext.bench import sass, static_launch
from awq_ext.bench.ceilings import bandwidth_limit_ratio
from awq_ext.bench.sass_build import Toolchain, compile_unit, demangle
from awq_ext.bench.static_kernels import KernelConfig, launch_work, recognise
from awq_ext.bench.static_model import (GPUS, ROW_GPU, GpuSpec, LaunchWork, fp16_baseline_us,
                                        issue_ceiling_bytes_per_s, littles_law_bytes_per_sm,
                                        mma_ceiling_bytes_per_s, occupancy, predict_launch)
from awq_ext.errors import AWQInputError
from awq_ext.kernels import CSRC_DIR, cache_root, source_hash
from awq_ext.kernels.ops import choose_path

ARCHS = ("sm_90", "sm_80")
SHAPES = ((4096, 11008), (11008, 4096))  # (N = out_features, K = in_features): LLaMA-7B down and up/gate
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # up to 512: past the GEMM / dequantize + cuBLAS crossover
ACCEPTANCE_MAX_M = 64  # issue 17 states its criteria for M 1-64; larger M only places the crossover
PATHS = ("gemv", "gemm", "gemm_wgmma", "dequant_cublas")
# gemm_wgmma (sm_90a, AWQ layouts) is predicted beside the others but not dispatched (derive_dispatch) until the GPU
# suite has verified and timed it (awq_ext/kernels/ops.py)
DISPATCHED = ("gemv", "gemm", "dequant_cublas")
PREDICTED = ("PREDICTED by the static SASS model (instruction counts + datasheet parameters + stated assumptions); "
             "no kernel has been timed on a GPU")


@dataclass(frozen=True)
class KernelReport:
    arch: str
    cfg: KernelConfig
    res: sass.Resources
    loop: sass.LoopStats

    @property
    def smem_per_block(self) -> int:
        return self.res.static_smem + self.cfg.dynamic_smem

    @property
    def instructions_per_byte(self) -> float:
        return self.loop.path_instructions * self.cfg.warps_per_iteration / self.cfg.weight_bytes_per_iteration

    @property
    def mma_flops_per_byte(self) -> float:
        return (self.loop.hmma * self.cfg.mma_flops_per_instruction * self.cfg.warps_per_iteration /
                self.cfg.weight_bytes_per_iteration)

    def class_per_byte(self) -> dict[str, float]:
        f = self.cfg.warps_per_iteration / self.cfg.weight_bytes_per_iteration
        return {c: round(v * f, 4) for c, v in self.loop.by_class.items()}

    def summary(self, gpus: list[GpuSpec]) -> dict:
        out = {"arch": self.arch, "kernel": self.cfg.label, "demangled": self.cfg.demangled,
               "registers": self.res.registers, "spill_bytes": self.res.spill_bytes, "stack_bytes": self.res.stack,
               "smem_per_block": self.smem_per_block, "threads": self.cfg.threads,
               "loop_header": f"0x{self.loop.header_offset:04x}",
               "loop_instructions_per_iteration": self.loop.path_instructions,
               "loop_body_instructions": self.loop.body_instructions,
               "loop_hmma_per_iteration": self.loop.hmma, "loop_device_loads_per_iteration": self.loop.global_stream_loads,
               "weight_bytes_per_iteration": self.cfg.weight_bytes_per_iteration,
               "warps_per_iteration": self.cfg.warps_per_iteration,
               "instructions_per_weight_byte": round(self.instructions_per_byte, 4),
               "instructions_per_weight_byte_by_class": self.class_per_byte(),
               "weight_bytes_in_flight_per_block": self.cfg.weight_bytes_in_flight_per_block,
               "top_opcodes": dict(list(self.loop.opcodes.items())[:12])}
        for g in gpus:
            occ = occupancy(g, self.res.registers, self.cfg.threads, self.smem_per_block)
            out[f"{g.name}_blocks_per_sm"] = occ.blocks_per_sm
            out[f"{g.name}_occupancy_limiter"] = occ.limiter
            issue = issue_ceiling_bytes_per_s(g, self.instructions_per_byte) / 1e12
            out[f"{g.name}_issue_ceiling_tbps"] = round(issue, 3)
            out[f"{g.name}_issue_ceiling_over_hbm"] = round(issue / g.hbm_tbps, 3)
            mma = mma_ceiling_bytes_per_s(g, self.mma_flops_per_byte, self.cfg.mma_dense)
            out[f"{g.name}_mma_ceiling_tbps"] = None if mma == float("inf") else round(mma / 1e12, 3)
        return out


def analyse_arch(tools: Toolchain, consts: static_launch.CsrcConstants, arch: str, cache_dir: Path,
                 workers: int, csrc: Path = CSRC_DIR) -> dict[str, KernelReport]:
    """Compile (or reuse) every top-level ``csrc/*.cu`` for ``arch`` (host-only ones hold no kernel) and model
    each kernel in them."""
    sources = sorted(csrc.glob("*.cu"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        units = list(pool.map(lambda src: compile_unit(tools, src, arch, cache_dir, (csrc,)), sources))
    parsed = []
    for u in units:
        funcs = sass.parse_functions(u.disassembly)
        res = sass.parse_resources(u.resource_usage, u.ptxas_log)
        missing = sorted(set(funcs) - set(res))
        if missing:
            raise sass.SassError(f"{u.source.name} ({arch}): no resource usage for {missing[:3]}")
        parsed += [(u, funcs[name], res[name]) for name in sorted(funcs)]
    names = demangle(tools, [f.name for _, f, _ in parsed])
    reports = {}
    for u, func, res in parsed:
        cfg = recognise(func.name, names[func.name], consts)
        if cfg is None:
            continue  # a helper kernel (the wgmma probe)
        if cfg.mma_dense and arch != "sm_90":
            continue  # the wgmma variant is sm_90a code; other architectures hold a stub that is never launched
        try:
            loop = sass.hot_loop(func, cfg.check_loop)
        except sass.SassError as exc:
            raise sass.SassError(f"{u.source.name} ({arch}) {cfg.label}: {exc}") from exc
        reports[func.name] = KernelReport(arch, cfg, res, loop)
    return reports


def find_kernel(reports: dict[str, KernelReport], family: str, dtype: str, variant: str, group: int | None,
                config: str) -> KernelReport:
    hits = [r for r in reports.values() if (r.cfg.family, r.cfg.dtype, r.cfg.variant, r.cfg.config) ==
            (family, dtype, variant, config) and (r.cfg.group_size is None or r.cfg.group_size == group)]
    if len(hits) != 1:
        raise sass.SassError(f"{len(hits)} kernels match {family}/{dtype}/{variant}/G{group}/{config} "
                             "(expected exactly one): the launchers and the instantiations disagree")
    return hits[0]


def _launch_row(gpu: GpuSpec, rep: KernelReport, launch: static_launch.Launch, m: int, n: int, k: int,
                group: int) -> dict:
    occ = occupancy(gpu, rep.res.registers, rep.cfg.threads, rep.smem_per_block)
    plan = launch.plan
    work = launch_work(rep.cfg, launch, m, n, k, group)
    instr = work.loop_iterations * rep.cfg.warps_per_iteration * rep.loop.path_instructions
    flops = work.loop_iterations * rep.cfg.warps_per_iteration * rep.loop.hmma * rep.cfg.mma_flops_per_instruction
    resident = min(plan.ctas, plan.slots) / gpu.sms
    t = predict_launch(gpu, LaunchWork(resident, plan.wave_efficiency, work.read_bytes, work.write_bytes, instr,
                                       flops, rep.cfg.weight_bytes_in_flight_per_block, rep.cfg.mma_dense))
    mma = mma_ceiling_bytes_per_s(gpu, rep.mma_flops_per_byte, rep.cfg.mma_dense)
    return {
        "kernel": rep.cfg.label, "grid": list(launch.grid), "blocks": launch.blocks, "threads": launch.threads,
        "splits": launch.splits, "registers": rep.res.registers, "spill_bytes": rep.res.spill_bytes,
        "smem_per_block": rep.smem_per_block, "blocks_per_sm": occ.blocks_per_sm, "occupancy_limiter": occ.limiter,
        "planned_blocks_per_sm": plan.ctas_per_sm, "planned_residency_fits": plan.ctas_per_sm <= occ.blocks_per_sm,
        "instructions_per_weight_byte": round(rep.instructions_per_byte, 4),
        "instructions_per_weight_byte_by_class": rep.class_per_byte(),
        "issue_ceiling_tbps": round(issue_ceiling_bytes_per_s(gpu, rep.instructions_per_byte) / 1e12, 3),
        "mma_ceiling_tbps": None if mma == float("inf") else round(mma / 1e12, 3),
        "bytes_in_flight_per_sm": round(plan.bytes_in_flight_per_sm),
        "resident_blocks_per_sm": round(resident, 3),
        "waves": round(plan.waves, 3), "busiest_sm_steps": plan.busiest_sm_steps,
        "mean_sm_steps": round(plan.mean_sm_steps, 3), "wave_efficiency": round(plan.wave_efficiency, 3),
        "dram_read_bytes": int(work.read_bytes), "dram_write_bytes": int(work.write_bytes), "time": t.to_dict(),
    }


def path_rows(reports: dict[str, KernelReport], consts: static_launch.CsrcConstants, gpu: GpuSpec, arch: str,
              dtype: str, variant: str, group: int) -> list[dict]:
    """One row per (shape, M, path) on ``gpu``: the launch the dispatch would make, and its prediction."""
    rows = []
    for n, k in SHAPES:
        for m in MS:
            fp16 = fp16_baseline_us(gpu, m, n, k)
            fp16_no_launch = fp16_baseline_us(gpu, m, n, k, launch=False)
            for path in PATHS:
                if (path == "gemv" and m > consts.gemv_max_m) or (path == "gemm_wgmma" and
                                                                  (arch != "sm_90" or variant != "awq")):
                    continue
                if path == "dequant_cublas":  # the dequantize kernel, then cuBLAS modelled as the ideal FP16 GEMM
                    rep = find_kernel(reports, "dequant", dtype, variant, None, "dequant")
                    occ = occupancy(gpu, rep.res.registers, rep.cfg.threads, rep.smem_per_block)
                    launch = static_launch.dequant_launch(consts, n, k, gpu.sms, occ.blocks_per_sm)
                    extra, extra_no_launch, suffix = fp16, fp16_no_launch, " + ideal fp16 GEMM"
                else:
                    gptq_r = variant == "gptq_r"
                    launch = (static_launch.gemv_launch(consts, m, n, k, gpu.sms, gpu.smem_per_sm, gptq_r)
                              if path == "gemv" else
                              static_launch.gemm_launch(consts, m, n, k, group or 0, gpu.sms, gpu.smem_per_sm, gptq_r,
                                                        wgmma=path == "gemm_wgmma"))
                    rep = find_kernel(reports, launch.kernel, dtype, variant, group, launch.config)
                    extra, extra_no_launch, suffix = 0.0, 0.0, ""
                row = {"arch": arch, "gpu": gpu.name, "hbm_tbps": gpu.hbm_tbps, "shape": f"{n}x{k}", "n": n, "k": k,
                       "m": m, "path": path, "dtype": dtype, "variant": variant, "group_size": group,
                       **_launch_row(gpu, rep, launch, m, n, k, group)}
                row["kernel"] += suffix
                row["predicted_us"] = round(row["time"]["total_us"] + extra, 3)
                row["predicted_us_no_launch"] = round(row["time"]["total_us"] - gpu.launch_overhead_us + extra_no_launch, 3)
                row["littles_law_bytes_per_sm"] = round(littles_law_bytes_per_sm(gpu))
                row["fp16_ideal_us"] = round(fp16, 3)
                row["predicted_speedup_vs_fp16"] = round(fp16 / row["predicted_us"], 3)
                row["predicted_speedup_vs_fp16_no_launch"] = round(fp16_no_launch / row["predicted_us_no_launch"], 3)
                row["bandwidth_limit_ratio"] = round(bandwidth_limit_ratio(4, group), 3)
                rows.append(row)
    return rows


DISPATCH_TIE = 0.02  # predicted totals this close are a tie: the model's assumptions are not that precise


def derive_dispatch(rows: list[dict]) -> list[tuple[int, str]]:
    """Per M, the path with the least predicted time summed over the shapes; consecutive Ms merged into
    ``(largest M, path)`` rows like ops.DISPATCH_TABLE (covering only the modelled Ms).

    Paths within :data:`DISPATCH_TIE` of the least total tie, and the tie goes to the one whose hot loop
    has the most issue headroom over HBM bandwidth on its worst shape: both are predicted memory-bound,
    but a loop whose instructions barely keep up with the bandwidth has nothing left to absorb latency the
    model does not see (at M = 1 the GEMV, 5.1 TB/s of issue, against the M16 GEMM, 7.5 TB/s)."""
    table: list[tuple[int, str]] = []
    for m in sorted({r["m"] for r in rows}):
        totals: dict[str, float] = {}
        headroom: dict[str, float] = {}
        for r in rows:
            if r["m"] == m and r["path"] in DISPATCHED:
                totals[r["path"]] = totals.get(r["path"], 0.0) + r["predicted_us"]
                ratio = r.get("issue_ceiling_tbps", 0.0) / r.get("hbm_tbps", 1.0)
                headroom[r["path"]] = min(headroom.get(r["path"], ratio), ratio)
        n_shapes = len({r["shape"] for r in rows if r["m"] == m})
        complete = [p for p in totals if sum(1 for r in rows if r["m"] == m and r["path"] == p) == n_shapes]
        least = min(totals[p] for p in complete)
        best = max((p for p in complete if totals[p] <= least * (1 + DISPATCH_TIE)),
                   key=lambda p: (headroom[p], -totals[p]))
        if table and table[-1][1] == best:
            table[-1] = (m, best)
        else:
            table.append((m, best))
    return table


def pick(table: list[tuple[int, str]], m: int) -> str:
    for max_m, path in table:
        if m <= max_m:
            return path
    return table[-1][1]


def acceptance(row: dict) -> dict:
    """Issue 17's criteria for a path the dispatch table picks (None where no criterion applies), against the
    row GPU's nominal HBM bandwidth (4.8 TB/s on the H200, the GPU the issue states them for)."""
    m, hbm = row["m"], row["hbm_tbps"]
    need = 1.5 * hbm if m <= 4 else 1.2 * hbm if m <= 16 else None
    checks = {
        "issue_ceiling": None if need is None else row["issue_ceiling_tbps"] >= need,
        "no_spills": row["spill_bytes"] == 0,
        "littles_law": row["bytes_in_flight_per_sm"] >= row["littles_law_bytes_per_sm"],
        "wave_efficiency": row["wave_efficiency"] >= 0.9,
        "planned_residency_fits": row["planned_residency_fits"],
    }
    return {"issue_ceiling_needed_tbps": need, **checks,
            "all": all(v for v in checks.values() if v is not None)}


def run_static(archs: tuple[str, ...] = ARCHS, dtype: str = "fp16", variant: str = "awq", group: int = 128,
               workers: int | None = None, csrc: Path = CSRC_DIR) -> dict:
    """The whole model for the kernels in ``csrc`` (default: this checkout's)."""
    if group not in (32, 64, 128):
        raise AWQInputError(f"--group-size must be 32, 64 or 128, got {group}")
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise AWQInputError(f"unknown arch {bad}; use {', '.join(ARCHS)}")
    tools = Toolchain.find()
    if not (csrc / "tile_configs.cuh").exists():
        raise AWQInputError(f"{csrc} holds no tile_configs.cuh: point --csrc at a kernel source folder")
    consts = static_launch.read_constants(csrc)
    cache_dir = cache_root() / "static"
    workers = workers or min(4, os.cpu_count() or 1)
    payload: dict = {"mode": "static", "note": PREDICTED, "csrc": "csrc/" if csrc == CSRC_DIR else str(csrc),
                     "kernel_source_hash": source_hash() if csrc == CSRC_DIR else None,
                     "git_commit": _git_commit(csrc), "nvcc": _first_line([tools.nvcc, "--version"], last=True),
                     "shape_convention": "NxK: N = out_features, K = in_features; y[M, N] = x[M, K] @ W[N, K]^T",
                     "gpus": {g.name: g.to_dict() for g in GPUS.values()},
                     "model": {"time": (
                         "max(DRAM bytes / min(HBM, resident blocks' bytes in flight / latency), hot-loop "
                         "warp-instructions / (SMs x 4/clk x clock), mma FLOPs / (SMs x mma.sync rate)) / wave "
                         "efficiency (the busiest SM sets the time; the launcher's plan, static_launch.py); + launch "
                         "overhead; dequant_cublas = dequant kernel + ideal FP16 GEMM"),
                         "fp16_baseline": "ideal: 16-bit weights + activations + outputs once at HBM bandwidth, or the "
                                          "dense tensor rate if slower, + one launch"},
                     "fields": {
                         "shape": "NxK", "path": "gemv | gemm | dequant_cublas (awq_ext.kernels.ops.PATHS)",
                         "chosen": "true when this row's path is the derived dispatch table's pick (dispatch_pick) "
                                   "for this M; current_table_pick is what ops.DISPATCH_TABLE picks today",
                         "issue_ceiling_tbps": "packed-weight TB/s at which the hot loop's warp-instructions fill "
                                               "4 issue slots/clock on every SM",
                         "bytes_in_flight_per_sm": "packed weight bytes the resident blocks keep in flight (peak), "
                                                   "averaged over the SMs (launch_common.cu split_stats)",
                         "littles_law_bytes_per_sm": "HBM bandwidth x DRAM latency / SMs",
                         "planned_blocks_per_sm": "the residency the launcher's plan counts on (launch_common.cu "
                                                  "resident_ctas); planned_residency_fits: the compiled kernel's "
                                                  "occupancy (blocks_per_sm) holds it",
                         "wave_efficiency": "mean SM work / busiest SM work in K steps: the busiest SM runs "
                                            "ceil(blocks / SMs) blocks of the longest split-K slice (uneven slices, "
                                            "unequal blocks per SM and wave tails all count); computed by the "
                                            "launcher's planning function (launch_common.cu split_stats, mirrored "
                                            "in awq_ext/bench/static_launch.py and tested against it)",
                         "predicted_speedup_vs_fp16": "ideal FP16 time / predicted time, both with launch overhead",
                         "acceptance": f"issue 17's criteria, on chosen rows with M <= {ACCEPTANCE_MAX_M} only"},
                     "configs": [], "rows": [], "dispatch": {}}
    for arch in archs:
        gpu = GPUS[ROW_GPU[arch]]
        reports = analyse_arch(tools, consts, arch, cache_dir, workers, csrc)
        arch_gpus = [g for g in GPUS.values() if g.arch == arch]
        payload["configs"] += [r.summary(arch_gpus) for r in sorted(reports.values(), key=lambda r: r.cfg.label)]
        rows = path_rows(reports, consts, gpu, arch, dtype, variant, group)
        table = derive_dispatch(rows)
        for r in rows:
            r["dispatch_pick"] = pick(table, r["m"])
            r["chosen"] = r["path"] == r["dispatch_pick"]
            r["current_table_pick"] = choose_path(r["m"])
            r["acceptance"] = acceptance(r) if r["chosen"] and r["m"] <= ACCEPTANCE_MAX_M else None
        payload["rows"] += rows
        payload["dispatch"][arch] = {"gpu": gpu.name, "derived_table": table,
                                     "covers": f"M in {list(MS)}; larger M is not modelled"}
    return payload


GPU_COLUMNS = (
    ("name", "GPU", ""), ("arch", "arch", ""), ("sms", "SMs", "d"), ("clock_ghz", "GHz", ".2f"),
    ("issue_g", "G warp-ins/s", ".0f"), ("hbm_tbps", "HBM TB/s", ".2f"), ("hbm_measured_tbps", "copy TB/s", ".2f"),
    ("dense_fp16_tflops", "dense TFLOP/s", ".0f"), ("mma_sync_fraction", "mma.sync share", ".2f"),
    ("dram_latency_ns", "latency ns", ".0f"), ("little_kb", "Little KB/SM", ".1f"),
    ("launch_overhead_us", "launch us", ".1f"),
)
CONFIG_COLUMNS = (
    ("arch", "arch", ""), ("kernel", "kernel", ""), ("registers", "regs", "d"), ("spill_bytes", "spill", "d"),
    ("smem_per_block", "smem B", "d"), ("blocks_per_sm", "blk/SM", "d"), ("limiter", "limit", ""),
    ("instructions_per_weight_byte", "ins/B", ".3f"), ("memory", "mem/B", ".3f"), ("hmma", "hmma/B", ".3f"),
    ("int_dequant", "int/B", ".3f"), ("float", "fp32/B", ".3f"), ("control", "ctrl/B", ".3f"),
    ("other", "other/B", ".3f"), ("issue_a", "issue TB/s", ".2f"), ("issue_b", "issue TB/s", ".2f"),
    ("mma", "mma TB/s", ".2f"),
)
ROW_COLUMNS = (
    ("shape", "shape NxK", ""), ("m", "M", "d"), ("path", "path", ""), ("mark", "pick", ""), ("kernel", "kernel", ""),
    ("blocks", "blocks", "d"), ("blocks_per_sm", "blk/SM", "d"), ("planned_blocks_per_sm", "plan blk/SM", "d"),
    ("waves", "waves", ".2f"), ("busiest_sm_steps", "busiest SM steps", "d"), ("mean_sm_steps", "mean", ".1f"),
    ("wave_efficiency", "wave eff", ".3f"), ("inflight_kb", "KB in flight/SM", ".1f"), ("little_kb", "Little KB", ".1f"),
    ("issue_ceiling_tbps", "issue TB/s", ".2f"), ("bound", "bound", ""), ("predicted_us", "pred us", ".2f"),
    ("fp16_ideal_us", "fp16 us", ".2f"), ("predicted_speedup_vs_fp16", "x fp16", ".2f"),
    ("predicted_speedup_vs_fp16_no_launch", "x fp16 (no launch)", ".2f"), ("bandwidth_limit_ratio", "limit", ".3f"),
)
CHECK_COLUMNS = (
    ("shape", "shape NxK", ""), ("m", "M", "d"), ("path", "picked path", ""), ("issue_ceiling_tbps", "issue TB/s", ".2f"),
    ("need", "needs", ".2f"), ("issue_ok", "issue ok", ""), ("no_spills", "0 spills", ""), ("littles_law", "Little ok", ""),
    ("wave_ok", "waves >= 0.9", ""), ("fits", "plan fits", ""), ("all", "ALL", ""),
)


def _yes(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "NO")


def format_report(payload: dict) -> str:
    """The readable tables of a run_static payload."""
    from awq_ext.bench.report import format_table

    out = [PREDICTED + ".", ""]
    gpus = [{**g, "little_kb": littles_law_bytes_per_sm(GPUS[g["name"]]) / 1024,
             "issue_g": GPUS[g["name"]].issue_rate / 1e9} for g in payload["gpus"].values()]
    out += ["GPU parameters (sources below):", format_table(gpus, GPU_COLUMNS)]
    for g in payload["gpus"].values():
        out += [f"  {g['name']}:"] + [f"    {k}: {v}" for k, v in g["sources"].items()]
    out.append("")
    for arch in sorted({c["arch"] for c in payload["configs"]}):
        names = [g["name"] for g in payload["gpus"].values() if g["arch"] == arch]
        a, b = names[0], names[1] if len(names) > 1 else names[0]
        cols = [(k, f"{h} {a}" if k in ("issue_a", "mma") else f"{h} {b}" if k == "issue_b" else h, f)
                for k, h, f in CONFIG_COLUMNS if not (k == "issue_b" and b == a)]
        cfgs = [{**c, **c["instructions_per_weight_byte_by_class"], "blocks_per_sm": c[f"{a}_blocks_per_sm"],
                 "limiter": c[f"{a}_occupancy_limiter"], "issue_a": c[f"{a}_issue_ceiling_tbps"],
                 "issue_b": c[f"{b}_issue_ceiling_tbps"], "mma": c[f"{a}_mma_ceiling_tbps"]}
                for c in payload["configs"] if c["arch"] == arch]
        out += [f"Per kernel config ({arch}; blocks/SM for {a}; hot-loop SASS warp-instructions per packed weight byte):",
                format_table(cfgs, cols), ""]
    for arch, d in payload["dispatch"].items():
        rows = [{**r, "mark": "*" if r["chosen"] else "", "bound": r["time"]["bound"],
                 "inflight_kb": r["bytes_in_flight_per_sm"] / 1024, "little_kb": r["littles_law_bytes_per_sm"] / 1024}
                for r in payload["rows"] if r["arch"] == arch]
        gpu = payload["gpus"][d["gpu"]]
        out += [f"Per shape / M / path ({arch} on {d['gpu']}: {gpu['hbm_tbps']} TB/s, {gpu['sms']} SMs, "
                f"{gpu['clock_ghz']} GHz, latency {gpu['dram_latency_ns']:.0f} ns, launch {gpu['launch_overhead_us']} us; "
                "* = the derived dispatch pick):", format_table(rows, ROW_COLUMNS), ""]
        checks = [{**r, **r["acceptance"], "need": r["acceptance"]["issue_ceiling_needed_tbps"],
                   "issue_ok": _yes(r["acceptance"]["issue_ceiling"]), "no_spills": _yes(r["acceptance"]["no_spills"]),
                   "littles_law": _yes(r["acceptance"]["littles_law"]), "wave_ok": _yes(r["acceptance"]["wave_efficiency"]),
                   "fits": _yes(r["acceptance"]["planned_residency_fits"]),
                   "all": _yes(r["acceptance"]["all"])}
                  for r in payload["rows"] if r["arch"] == arch and r["acceptance"] is not None]
        current = sorted({(r["m"], r["current_table_pick"]) for r in payload["rows"] if r["arch"] == arch})
        out += [f"Issue 17 acceptance on the picked paths ({arch}):", format_table(checks, CHECK_COLUMNS), "",
                f"Derived dispatch table ({arch}, {d['covers']}): {d['derived_table']}",
                f"Current ops.DISPATCH_TABLE picks: {current}", ""]
    return "\n".join(out)


def _git_commit(csrc: Path) -> str | None:
    return _first_line(["git", "-C", str(csrc), "rev-parse", "HEAD"])


def _first_line(cmd: list[str], last: bool = False) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out[-1] if last else out[0]) if out else None


__all__ = ["ACCEPTANCE_MAX_M", "ARCHS", "DISPATCHED", "MS", "PATHS", "SHAPES", "KernelReport", "acceptance", "analyse_arch",
           "derive_dispatch", "find_kernel", "format_report", "path_rows", "pick", "run_static"]
