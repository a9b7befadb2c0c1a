"""``python -m awq_ext.bench {kernels,e2e,quant-cost,stream-memory,static,all} [options]`` - see benchmarks/BENCH_README_SECTION.md."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from awq_ext.bench import report
from awq_ext.bench.ceilings import bandwidth_limit_ratio, measure_ceilings
from awq_ext.bench.timing import TimerConfig
from awq_ext.errors import AWQInputError

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
NO_GPU_BANNER = (
    "No CUDA GPU found (torch.cuda.is_available() is False): running the CPU reference path.\n"
    "These are CPU wall-clock timings of torch code; they say nothing about the CUDA kernels, which are\n"
    "skipped. Run on a GPU machine for the real table."
)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", help="write every figure plus GPU/driver/torch/CUDA/commit here")
    p.add_argument("--plot-dir", metavar="DIR", help="write PNG plots (speedup vs M per shape) here")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp16", help="activation dtype (default fp16)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="auto: the GPU when there is one, else the CPU reference path")
    p.add_argument("--nvtx", action="store_true", help="NVTX ranges around every timed region (for nsys)")
    p.add_argument("--profile-once", action="store_true",
                   help="one warm-up and ONE timed call per case (for nsys/ncu); ceilings are skipped")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls per case")
    p.add_argument("--iters", type=int, default=None, help="timed calls per case (median reported)")
    p.add_argument("--group-size", type=int, default=128, choices=(32, 64, 128))
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default on the CPU path: 1, because OpenMP barriers make "
                        "multi-threaded timings erratic on a shared machine; default on GPU: torch's)")


def _kernel_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", help="all | 7b | 13b | 70b | 7b.up,... | KxN (default: all LLaMA shapes on "
                                    "GPU, two small shapes on CPU)")
    p.add_argument("--m", help="comma-separated M values (default 1,2,4,...,4096 on GPU; 1,16,64 on CPU)")
    p.add_argument("--methods", help="dense,awq,gptq_r,torch_int4,triton,torch_ref (default: all that apply)")
    p.add_argument("--no-ceilings", action="store_true", help="skip measuring copy bandwidth / GEMM peak")


def _e2e_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="llama-7b | tiny (default llama-7b on GPU, tiny on CPU)")
    p.add_argument("--batches", default="1,4,16", help="decode batch sizes (default 1,4,16)")
    p.add_argument("--prefill", type=int, default=512, help="prompt length for prefill (default 512)")
    p.add_argument("--no-cuda-graph", action="store_true", help="time decode steps eagerly")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m awq_ext.bench", description=__doc__)
    sub = ap.add_subparsers(dest="mode", required=True)
    k = sub.add_parser("kernels", help="W4A16 GEMM vs cuBLAS/GPTQ-R/torch int4/Triton over shapes x M")
    _common(k)
    _kernel_opts(k)
    e = sub.add_parser("e2e", help="LLaMA-shaped decoder: prefill and decode ms/token, FP16 vs W4A16")
    _common(e)
    _e2e_opts(e)
    q = sub.add_parser("quant-cost", help="AWQ at its defaults: search seconds, Protocol P ppl, peak RSS, "
                                          "phase profile (runs the quantize CLI)")
    _common(q)
    q.add_argument("--models", default="smollm2",
                   help="comma-separated model names or paths (default: smollm2, the offline SmolLM2-135M)")
    q.add_argument("--bits", default="4,3", help="comma-separated weight bit widths (default 4,3)")
    q.add_argument("--quant-args", default="",
                   help="extra arguments for `python -m awq_ext quantize` (e.g. '--eval none' to skip perplexity)")
    q.add_argument("--timeout", type=float, default=None, help="seconds per model before giving up")
    sm = sub.add_parser("stream-memory", help="peak RSS of streamed AWQ W4 g64 vs the float checkpoint (synthetic LLaMA)")
    _common(sm)
    sm.add_argument("--preset", default="llama-1b", help="llama-1b (default, 4.4 GB float32) | llama-1b-2l (its shapes, 2 layers) | qwen3-moe-1b (5.4 GB float32, 32 experts per layer) | tiny | tiny-moe")
    sm.add_argument("--model-dir", default=None, help="write (or reuse) the synthetic float model here")
    sm.add_argument("--quant-args", default="", help="extra arguments for `python -m awq_ext quantize`")
    sm.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    a = sub.add_parser("all", help="kernels then e2e, one JSON")
    _common(a)
    _kernel_opts(a)
    _e2e_opts(a)
    s = sub.add_parser("static", help="static performance model of the CUDA kernels from their SASS (no GPU; "
                                      "predicted, not measured)")
    s.add_argument("--json", metavar="PATH", help="write every figure (configs, rows, dispatch) here")
    s.add_argument("--arch", default="sm_90,sm_80", help="comma-separated: sm_90, sm_80 (default both)")
    s.add_argument("--dtype", choices=sorted(_DTYPES), default="fp16", help="activation dtype of the rows")
    s.add_argument("--variant", choices=("awq", "gptq_r"), default="awq", help="reorder-free AWQ or GPTQ-R rows")
    s.add_argument("--group-size", type=int, default=128, choices=(32, 64, 128))
    s.add_argument("--jobs", type=int, default=None, help="parallel nvcc processes on a cold cache (default <= 4)")
    s.add_argument("--csrc", default=None, help="model the kernels of another source folder (default: this "
                                                "checkout's csrc/)")
    return ap


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise AWQInputError("--device cuda but torch.cuda.is_available() is False; use --device auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _timer_config(args: argparse.Namespace, on_gpu: bool, warmup: int, iters: int) -> TimerConfig:
    return TimerConfig(warmup=args.warmup if args.warmup is not None else warmup,
                       iters=args.iters if args.iters is not None else iters,
                       nvtx=args.nvtx, profile_once=args.profile_once)


def _ints(spec: str, flag: str) -> list[int]:
    try:
        vals = [int(t) for t in spec.split(",") if t.strip()]
    except ValueError as exc:
        raise AWQInputError(f"{flag} must be comma-separated positive integers, got {spec!r}") from exc
    if not vals or min(vals) < 1:
        raise AWQInputError(f"{flag} must be comma-separated positive integers, got {spec!r}")
    return vals


def _run_kernels(args: argparse.Namespace, dev: torch.device, payload: dict) -> None:
    from awq_ext.bench import kernels as kb

    on_gpu = dev.type == "cuda"
    dtype = _DTYPES[args.dtype]
    timer = _timer_config(args, on_gpu, warmup=10 if on_gpu else 2, iters=50 if on_gpu else 5)
    cfg = kb.KernelConfig(shapes=kb.parse_shapes(args.shapes, on_gpu), ms=kb.parse_ms(args.m, on_gpu),
                          methods=kb.parse_methods(args.methods, on_gpu), dtype=dtype, device=dev,
                          group_size=args.group_size, timer=timer)
    ceilings = None
    if not on_gpu:
        # CPU caches hold these small working sets and CPU fp16 GEMMs take slow paths: a percentage of such
        # "ceilings" would mislead, so the CPU table has none
        payload["notes"].append("ceilings (copy GB/s, GEMM TFLOP/s) are measured on CUDA only")
    elif not (args.no_ceilings or args.profile_once):
        ceilings = measure_ceilings(dev, dtype, timer)
        print(f"ceilings (measured now): copy {ceilings.copy_gbps:.0f} GB/s, "
              f"{args.dtype} GEMM {ceilings.gemm_size}^3 {ceilings.gemm_tflops:.1f} TFLOP/s")
    print(f"kernels: {len(cfg.shapes)} shapes x {len(cfg.ms)} M x {len(cfg.methods)} methods, {args.dtype}, "
          f"G={cfg.group_size}, {'CUDA events' if on_gpu else 'CPU wall clock'}")
    rows, notes = kb.run_kernels(cfg)
    if ceilings is not None:
        for r in rows:
            r["pct_copy_bw"] = 100.0 * r["gbps"] / ceilings.copy_gbps
            r["pct_gemm_peak"] = 100.0 * r["tflops"] / ceilings.gemm_tflops
    print()
    print(report.kernel_table(rows))
    print(f"\nbandwidth limit for W4 G={cfg.group_size} vs 16-bit: {bandwidth_limit_ratio(4, cfg.group_size):.2f}x")
    bad = [f"{r['shape']}/M{r['m']}/{r['method']}" for r in rows if not r["ok"]]
    if bad:
        notes.append(f"WRONG RESULTS (rel err above tolerance, timings meaningless): {', '.join(bad)}")
    checks = report.check_targets(rows, kb.HEADLINE_SHAPE)
    if checks:
        print("\nDESIGN §6 targets:\n" + report.targets_table(checks))
    payload["kernels"] = {
        "config": {"shapes": [vars(s) for s in cfg.shapes], "ms": list(cfg.ms),
                   "methods": {m.key: m.label for m in cfg.methods}, "dtype": args.dtype,
                   "group_size": cfg.group_size, "timer": vars(timer)},
        "ceilings": ceilings.to_dict() if ceilings else None,
        "bandwidth_limit_ratio": bandwidth_limit_ratio(4, cfg.group_size),
        "rows": rows, "targets": checks,
    }
    payload["notes"] += notes
    if args.plot_dir:
        paths = report.plot_speedups(rows, args.plot_dir, cfg.group_size)
        print(f"\nplots: {', '.join(str(p) for p in paths) or 'none (no speedups to plot)'}")


def _run_e2e(args: argparse.Namespace, dev: torch.device, payload: dict) -> None:
    from awq_ext.bench import e2e

    on_gpu = dev.type == "cuda"
    preset = args.preset or ("llama-7b" if on_gpu else "tiny")
    cfg = e2e.E2EConfig(preset=preset, batches=_ints(args.batches, "--batches"), prefill=args.prefill,
                        dtype=_DTYPES[args.dtype], device=dev, group_size=args.group_size,
                        cuda_graph=not args.no_cuda_graph,
                        timer=_timer_config(args, on_gpu, warmup=3, iters=20 if on_gpu else 5))
    if args.prefill < 1:
        raise AWQInputError(f"--prefill must be >= 1, got {args.prefill}")
    print(f"e2e: preset {preset} ({e2e.PRESETS.get(preset)}), prefill 1x{cfg.prefill}, decode batches {list(cfg.batches)}")
    rows, notes = e2e.run_e2e(cfg)
    print()
    print(report.format_table(rows, e2e.E2E_COLUMNS))
    payload["e2e"] = {"config": {"preset": preset, "decoder": vars(cfg.decoder()), "batches": list(cfg.batches),
                                 "prefill": cfg.prefill, "dtype": args.dtype, "group_size": cfg.group_size,
                                 "cuda_graph": cfg.cuda_graph},
                      "rows": rows}
    payload["notes"] += notes


def _run_quant_cost(args: argparse.Namespace, payload: dict) -> None:
    from awq_ext.bench import quant_cost

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        bits = [int(b) for b in args.bits.split(",") if b.strip()]
    except ValueError as exc:
        raise AWQInputError(f"--bits takes comma-separated integers, got {args.bits!r}") from exc
    rows, notes = quant_cost.run_quant_cost(models, args.quant_args, timeout_s=args.timeout, bits=bits)
    print()
    print(report.format_table(rows, quant_cost.QUANT_COLUMNS))
    prof = quant_cost.profile_rows(rows)
    if prof:
        print("\nwhere the seconds go (summed over blocks):")
        print(report.format_table(prof, [("phase", "phase", "")] + [(k, k, ".1f") for k in prof[0] if k != "phase"]))
    payload["quant_cost"] = {"rows": rows, "profile": prof}
    payload["notes"] += notes


def _run_static(args: argparse.Namespace) -> int:
    from awq_ext.bench import static
    from awq_ext.bench.sass import SassError
    from awq_ext.errors import KernelUnavailableError

    try:
        payload = static.run_static(tuple(a.strip() for a in args.arch.split(",") if a.strip()), args.dtype,
                                    args.variant, args.group_size, args.jobs,
                                    *(() if args.csrc is None else (Path(args.csrc).resolve(),)))
    except (AWQInputError, KernelUnavailableError, SassError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(static.format_report(payload))
    if args.json:
        print(f"json: {report.write_json(args.json, payload)}")
    return 0
def _run_stream_memory(args: argparse.Namespace, payload: dict) -> None:
    from awq_ext.bench import stream_memory

    rows, notes = stream_memory.run_stream_memory(args.preset, model_dir=args.model_dir, quant_args=args.quant_args,
                                                  timeout_s=args.timeout)
    print()
    print(report.format_table(rows, stream_memory.STREAM_COLUMNS))
    payload["stream_memory"] = {"rows": rows}
    payload["notes"] += notes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.mode == "static":
        return _run_static(args)
    try:
        dev = _device(args.device)
        if args.threads is not None and args.threads < 1:
            raise AWQInputError(f"--threads must be >= 1, got {args.threads}")
        if args.threads is not None or dev.type != "cuda":
            torch.set_num_threads(args.threads or 1)
        if dev.type != "cuda":
            banner = NO_GPU_BANNER if not torch.cuda.is_available() else (
                "--device cpu: running the CPU reference path (CPU wall-clock timings of torch code).")
            print(banner + f"\nCPU threads: {torch.get_num_threads()} (--threads to change)\n")
        payload: dict = {"mode": args.mode, "env": report.environment(dev), "notes": []}
        if not torch.cuda.is_available() and args.nvtx:
            payload["notes"].append("--nvtx has no effect without CUDA")
        if args.mode in ("kernels", "all"):
            _run_kernels(args, dev, payload)
        if args.mode in ("e2e", "all"):
            _run_e2e(args, dev, payload)
        if args.mode == "quant-cost":
            _run_quant_cost(args, payload)
        if args.mode == "stream-memory":
            _run_stream_memory(args, payload)
    except AWQInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if payload["notes"]:
        print("\nnotes:\n" + "\n".join(f"  - {n}" for n in payload["notes"]))
    if args.json:
        print(f"\njson: {report.write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
