"""Everything that needs a GPU, in one command (DESIGN.md §4):

    python benchmarks/gpu_suite.py OUT_DIR [--quick] [--budget-s 540]

On a bare GPU machine (a CUDA torch, nvcc, ninja; no network): JIT-builds the kernels, runs the
correctness sweep against an fp32 reference, compute-sanitizer memcheck on a small case, and the kernel
timing table; writes ``OUT_DIR/gpu_suite.json`` (environment, every figure) after every stage, plus PNG
plots when matplotlib is importable. Exit status 1 when any correctness case or the sanitizer fails.

Correctness: fresh random codes/scales/zeros per (shape, dtype, G, variant) and fresh activations per M;
reference = x (fp32) @ W^T (fp32, TF32 off) with W rounded once to the activation dtype - what the packed
format means; relative error ||out - ref|| / ||ref||. Outputs are poisoned: before every call a NaN-filled
block of the output's size is freed into the caching allocator, which hands that block to the op's output
(the JSON counts how often the poisoned block was reused); a non-finite output fails the case.

Timing: CUDA graphs of back-to-back calls (no host overhead), weights rotated over enough copies to
exceed 2x the L2 size, warm-up, median of several replays; GB/s and TFLOP/s against measured ceilings.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from awq_ext import kernels  # noqa: E402
from awq_ext.kernels.ops import DISPATCH_TABLE, w4a16_linear  # noqa: E402
from awq_ext.pack.kernel_layout import pack_kernel  # noqa: E402

M_SWEEP = (1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 17, 31, 64, 127, 128, 255, 256, 1024, 4096)
# (name, N = out_features, K = in_features)
SHAPES = (
    ("llama7b.qkv", 4096, 4096), ("llama7b.up", 11008, 4096), ("llama7b.down", 4096, 11008),
    ("llama13b.qkv", 5120, 5120), ("llama13b.up", 13824, 5120), ("llama13b.down", 5120, 13824),
    ("llama70b.q", 8192, 8192), ("llama70b.kv", 1024, 8192), ("llama70b.up", 28672, 8192),
    ("llama70b.down", 8192, 28672),
    ("odd.136x384", 136, 384), ("odd.296x640", 296, 640), ("odd.24x4160", 24, 4160),
    ("smollm2.qkv", 576, 576), ("smollm2.up", 1536, 576), ("smollm2.down", 576, 1536),
)
BIG = {"llama70b.up", "llama70b.down", "llama70b.q", "llama13b.up", "llama13b.down"}
GROUPS = (32, 64, 128)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
TOL = {"fp16": 2e-3, "bf16": 1e-2}
BENCH_M = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
BENCH_SHAPES = (("llama7b.up", 11008, 4096), ("llama7b.down", 4096, 11008), ("llama7b.qkv", 4096, 4096),
                ("llama70b.up", 28672, 8192))


class Suite:
    def __init__(self, out: Path, budget_s: float, quick: bool) -> None:
        self.out, self.quick = out, quick
        self.t0 = time.monotonic()
        self.deadline = self.t0 + budget_s
        self.result: dict = {"stages": {}}
        self.failed = False

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.result["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        tmp = self.out / "gpu_suite.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, self.out / "gpu_suite.json")

    def stage(self, name: str, fn) -> None:  # noqa: ANN001
        start = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            self.result["stages"][name] = {"status": "ok", **(fn() or {})}
        except Exception as exc:  # noqa: BLE001 - a stage failure is recorded, the suite goes on
            self.failed = True
            self.result["stages"][name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                                           "traceback": traceback.format_exc()[-4000:]}
            print(self.result["stages"][name]["traceback"], flush=True)
        self.result["stages"][name]["seconds"] = round(time.monotonic() - start, 1)
        self.save()


def _cmd(args: list[str], **kw) -> str:  # noqa: ANN003
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False, **kw).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"


def environment() -> dict:
    props = torch.cuda.get_device_properties(0)
    commit = os.environ.get("AWQ_EXT_COMMIT") or _cmd(["git", "-C", str(REPO), "rev-parse", "HEAD"]) or "unknown"
    return {
        "gpu": props.name, "sm_count": props.multi_processor_count,
        "compute_capability": f"{props.major}.{props.minor}", "memory_gib": round(props.total_memory / 2**30, 1),
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "driver": _cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "nvcc": _cmd([str((kernels.toolkit_root() or Path("/usr/local/cuda")) / "bin" / "nvcc"), "--version"]).splitlines()[-1:],
        "git_commit": commit, "kernel_source_hash": kernels.source_hash(), "dispatch_table": DISPATCH_TABLE,
    }


# ---- correctness ----------------------------------------------------------------------------------------

def random_weight(n: int, k: int, g: int, dtype: torch.dtype, gidx: bool, gen: torch.Generator):
    dev = "cuda"
    q = torch.randint(0, 16, (n, k), device=dev, dtype=torch.int32, generator=gen)
    ng = k // g
    scales = (torch.rand(n, ng, device=dev, generator=gen) * 0.02 + 1e-3) / math.sqrt(k / 128)
    zeros = torch.randint(0, 16, (n, ng), device=dev, generator=gen).float()
    g_idx = (torch.randperm(k, device=dev, generator=gen) // g).to(torch.int32) if gidx else None
    packed = pack_kernel(q, scales, zeros, g, g_idx=g_idx, dtype=dtype)
    gi = g_idx.long() if gidx else torch.arange(k, device=dev) // g
    s_dt = scales.to(dtype).float()
    w_ref = ((q.float() - zeros[:, gi]) * s_dt[:, gi]).to(dtype).float()  # rounded once, as the kernels do
    return packed, w_ref


def poisoned_call(fn, m: int, n: int, dtype: torch.dtype):  # noqa: ANN001
    poison = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")
    ptr = poison.data_ptr()
    del poison  # the block goes back to the caching allocator; the op's output usually gets it
    y = fn()
    return y, y.data_ptr() == ptr


def correctness(s: Suite) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    cases, worst, skipped = [], {}, []
    poison_hits = poison_total = 0
    gen = torch.Generator(device="cuda").manual_seed(int(time.time()))  # fresh inputs every run
    shapes = SHAPES if not s.quick else tuple(x for x in SHAPES if x[0] not in BIG)
    m_list = M_SWEEP if not s.quick else (1, 3, 8, 16, 17, 64, 255)
    for name, n, k in shapes:
        for dname, dtype in DTYPES.items():
            for g in GROUPS:
                if k % g:
                    continue
                for variant in ("awq", "gptq_r"):
                    if s.left() < 200:  # keep time for the sanitizer and the benchmark
                        skipped.append(f"{name}/{dname}/g{g}/{variant}: time budget")
                        continue
                    packed, w_ref = random_weight(n, k, g, dtype, variant == "gptq_r", gen)
                    for m in m_list:
                        if name in BIG and m > 1024 and variant == "gptq_r":
                            continue  # the slow reordered kernel at prefill sizes: covered by the smaller shapes
                        x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
                        ref = x.float() @ w_ref.t()
                        paths = (["gemv"] if m <= 8 else []) + ["gemm", "dequant_cublas"]
                        for path in paths:
                            y, hit = poisoned_call(lambda: w4a16_linear(x, packed, g, n, k, path=path), m, n, dtype)
                            poison_hits += hit
                            poison_total += 1
                            finite = bool(torch.isfinite(y).all())
                            err = float((y.float() - ref).norm() / ref.norm().clamp_min(1e-30))
                            ok = finite and err < TOL[dname]
                            key = f"{dname}/{variant}/{path}"
                            worst[key] = max(worst.get(key, 0.0), err if finite else float("inf"))
                            if not ok:
                                s.failed = True
                            cases.append({"shape": name, "n": n, "k": k, "m": m, "dtype": dname, "g": g,
                                          "variant": variant, "path": path, "rel_err": err, "finite": finite,
                                          "ok": ok})
                    del packed, w_ref
                    torch.cuda.empty_cache()
    n_fail = sum(not c["ok"] for c in cases)
    print(f"   {len(cases)} cases, {n_fail} failed; worst relative error per path: {worst}", flush=True)
    return {"cases": len(cases), "failed": n_fail, "failures": [c for c in cases if not c["ok"]][:200],
            "worst_rel_err": worst, "tolerance": TOL, "poisoned_output_reused": f"{poison_hits}/{poison_total}",
            "skipped": skipped, "all_cases": cases}


# ---- compute-sanitizer --------------------------------------------------------------------------------

def find_sanitizer() -> str | None:
    root = kernels.toolkit_root()
    for cand in ([root / "bin" / "compute-sanitizer", root / "compute-sanitizer" / "compute-sanitizer"] if root else []):
        if cand.exists():
            return str(cand)
    return shutil.which("compute-sanitizer")


SMALL_CASE = """
import sys, torch
sys.path.insert(0, {repo!r})
from awq_ext.kernels.ops import w4a16_linear
from awq_ext.pack.kernel_layout import pack_kernel
for gidx in (False, True):
    for dtype in (torch.float16, torch.bfloat16):
        n, k, g = 136, 384, 64
        q = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
        s = torch.rand(n, k // g, device="cuda") * 0.01
        z = torch.randint(0, 16, (n, k // g), device="cuda").float()
        gi = (torch.randperm(k, device="cuda") // g).int() if gidx else None
        p = pack_kernel(q, s, z, g, g_idx=gi, dtype=dtype)
        for m, path in ((3, "gemv"), (5, "gemm"), (40, "gemm"), (130, "gemm"), (7, "dequant_cublas")):
            y = w4a16_linear(torch.randn(m, k, device="cuda", dtype=dtype), p, g, n, k, path=path)
torch.cuda.synchronize()
print("small case done")
"""


def sanitizer(s: Suite) -> dict:
    tool = find_sanitizer()
    if tool is None:
        s.failed = True
        return {"status_detail": "compute-sanitizer not found (toolkit bin/ or PATH)", "errors": None}
    runs = []
    cmake = shutil.which("cmake")
    build = s.out / "cmake-build"
    if cmake:
        cc = torch.cuda.get_device_capability()
        arch = f"{cc[0]}{cc[1]}"
        env = {**os.environ, "CUDACXX": str((kernels.toolkit_root() or Path("/usr/local/cuda")) / "bin" / "nvcc")}
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        cfg = subprocess.run([cmake, "-S", str(REPO), "-B", str(build), *gen, f"-DCMAKE_CUDA_ARCHITECTURES={arch}"],
                             capture_output=True, text=True, env=env, check=False)
        bld = subprocess.run([cmake, "--build", str(build), "-j", str(os.cpu_count() or 4)], capture_output=True,
                             text=True, env=env, check=False) if cfg.returncode == 0 else cfg
        if bld.returncode == 0:
            for args in (["5", "200", "384", "64", "f16", "0"], ["17", "136", "256", "32", "bf16", "1"],
                         ["64", "264", "1024", "128", "f16", "0"]):
                runs.append(["--tool", "memcheck", str(build / "w4a16_check"), *args])
        else:
            runs.append(None)
            print("   cmake build failed, falling back to python:", bld.stderr[-2000:], flush=True)
    script = s.out / "sanitizer_small_case.py"
    script.write_text(SMALL_CASE.format(repo=str(REPO)))
    runs.append(["--tool", "memcheck", "--target-processes", "all", sys.executable, str(script)])
    results = []
    for r in runs:
        if r is None:
            continue
        res = subprocess.run([tool, *r], capture_output=True, text=True, timeout=max(60, min(300, s.left() - 150)),
                             check=False)
        text = res.stdout + res.stderr
        summary = [ln for ln in text.splitlines() if "ERROR SUMMARY" in ln]
        errors = sum(int(ln.split("ERROR SUMMARY:")[1].split()[0]) for ln in summary) if summary else None
        ok = res.returncode == 0 and errors == 0
        if not ok:
            s.failed = True
        results.append({"cmd": " ".join(r[2:]), "returncode": res.returncode, "errors": errors, "ok": ok,
                        "tail": text[-1500:]})
        print(f"   {' '.join(r[2:])[:90]}: rc={res.returncode} errors={errors}", flush=True)
    return {"tool": tool, "runs": results}


# ---- timing -------------------------------------------------------------------------------------------

def graph_time_us(make_call, copies: int, reps: int = 7) -> tuple[float, str]:  # noqa: ANN001
    """Median per-call time over `reps` graph replays of `copies` back-to-back calls (one per weight copy)."""
    calls = [make_call(i) for i in range(copies)]
    for c in calls:  # warm-up (also allocates split-K counters outside capture)
        c()
    torch.cuda.synchronize()
    per_graph = max(copies, 20 // copies * copies)
    try:
        g = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for c in calls:
                c()
            torch.cuda.synchronize()
            with torch.cuda.graph(g, stream=stream):
                for i in range(per_graph):
                    calls[i % copies]()
        mode = "cuda_graph"
        run = g.replay
    except RuntimeError as exc:
        mode = f"eager ({exc.__class__.__name__})"

        def run() -> None:
            for i in range(per_graph):
                calls[i % copies]()
    times = []
    for _ in range(reps + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / per_graph)
    return statistics.median(times[2:]), mode


def ceilings() -> dict:
    x = torch.empty(2**28, dtype=torch.uint8, device="cuda")  # 256 MiB
    y = torch.empty_like(x)
    t, _ = graph_time_us(lambda i: (lambda: y.copy_(x)), 1, reps=5)
    bw = 2 * x.numel() / (t * 1e-6) / 1e9
    a = torch.randn(8192, 8192, dtype=torch.float16, device="cuda")
    t2, _ = graph_time_us(lambda i: (lambda: a @ a), 1, reps=5)
    return {"copy_GBps": round(bw, 1), "fp16_matmul_TFLOPs": round(2 * 8192**3 / (t2 * 1e-6) / 1e12, 1)}


def int4pack_setup(n: int, k: int, copies: int):
    """torch's own int4 kernel (bf16 activations, G = 128), or the reason it is unavailable."""
    if not hasattr(torch, "_weight_int4pack_mm"):
        return None, "torch._weight_int4pack_mm not in this torch"
    try:
        outs = []
        for _ in range(copies):
            q = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
            try:
                packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
            except RuntimeError:
                packed = torch._convert_weight_to_int4pack(q, 8)
            sz = torch.rand(k // 128, n, 2, dtype=torch.bfloat16, device="cuda")
            outs.append((packed, sz))
        x = torch.randn(1, k, dtype=torch.bfloat16, device="cuda")
        torch._weight_int4pack_mm(x, outs[0][0], 128, outs[0][1])
        return outs, None
    except RuntimeError as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:300]}"


def benchmark(s: Suite, ceil: dict) -> dict:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size if hasattr(torch.cuda.get_device_properties(0), "L2_cache_size") else 50 * 2**20
    rows, notes = [], {}
    shapes = BENCH_SHAPES if not s.quick else BENCH_SHAPES[:2]
    gen = torch.Generator(device="cuda").manual_seed(0)
    for name, n, k in shapes:
        g = 128
        w_bytes_fp16 = n * k * 2
        w_bytes_int4 = n * k // 2 + 2 * (k // g) * n * 2
        cp16 = max(2, math.ceil(2 * l2 / w_bytes_fp16))
        cp4 = max(2, math.ceil(2 * l2 / w_bytes_int4))
        wf = [torch.randn(n, k, dtype=torch.float16, device="cuda") for _ in range(cp16)]
        awq = [random_weight(n, k, g, torch.float16, False, gen)[0] for _ in range(cp4)]
        gptq = [random_weight(n, k, g, torch.float16, True, gen)[0] for _ in range(cp4)]
        i4, i4_why = int4pack_setup(n, k, cp4)
        notes[name] = {"weight_copies_fp16": cp16, "weight_copies_int4": cp4, "torch_int4": i4_why or "ok"}
        for m in BENCH_M:
            if s.left() < 20:
                notes.setdefault("skipped", []).append(f"{name} m={m}: time budget")
                continue
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            xb = x.bfloat16()
            row = {"shape": name, "n": n, "k": k, "m": m}
            methods = {"cublas_fp16": lambda i: (lambda: torch.matmul(x, wf[i % cp16].t()))}
            for path in ("gemv", "gemm", "dequant_cublas"):
                if path == "gemv" and m > 8:
                    continue
                methods[f"awq_{path}"] = (lambda p: lambda i: (lambda: w4a16_linear(x, awq[i], g, n, k, path=p)))(path)
                if path != "dequant_cublas":
                    methods[f"gptq_r_{path}"] = (lambda p: lambda i: (lambda: w4a16_linear(x, gptq[i], g, n, k, path=p)))(path)
            methods["awq_dispatch"] = lambda i: (lambda: w4a16_linear(x, awq[i], g, n, k))
            if i4 is not None:
                methods["torch_int4pack"] = lambda i: (lambda: torch._weight_int4pack_mm(xb, i4[i][0], 128, i4[i][1]))
            for meth, make in methods.items():
                copies = cp16 if meth == "cublas_fp16" else cp4
                try:
                    t, mode = graph_time_us(make, copies)
                except RuntimeError as exc:
                    row[meth] = {"error": str(exc)[:200]}
                    continue
                wb = w_bytes_fp16 if meth == "cublas_fp16" else w_bytes_int4
                moved = wb + 2 * m * k + 2 * m * n
                row[meth] = {"us": round(t, 2), "GBps": round(moved / (t * 1e-6) / 1e9, 1),
                             "TFLOPs": round(2 * m * n * k / (t * 1e-6) / 1e12, 2), "mode": mode}
            base = row["cublas_fp16"].get("us") if isinstance(row.get("cublas_fp16"), dict) else None
            for meth in list(methods):
                r = row.get(meth)
                if base and isinstance(r, dict) and "us" in r:
                    r["speedup_vs_cublas"] = round(base / r["us"], 3)
            best_awq = min((row[p]["us"], p) for p in ("awq_gemv", "awq_gemm", "awq_dequant_cublas")
                           if isinstance(row.get(p), dict) and "us" in row[p])
            row["best_awq_path"] = best_awq[1].removeprefix("awq_")
            best_g = [row[p]["us"] for p in ("gptq_r_gemv", "gptq_r_gemm") if isinstance(row.get(p), dict) and "us" in row[p]]
            if best_g:
                row["reorder_free_vs_gptq_r"] = round(min(best_g) / best_awq[0], 3)
            rows.append(row)
            print(f"   {name} m={m}: " + ", ".join(f"{k2}={v['us']}us" for k2, v in row.items()
                                                     if isinstance(v, dict) and "us" in v), flush=True)
        del wf, awq, gptq, i4
        torch.cuda.empty_cache()
    # measured dispatch: per M, the path that won most shapes
    measured = {}
    for m in BENCH_M:
        wins = [r["best_awq_path"] for r in rows if r["m"] == m]
        if wins:
            measured[m] = max(set(wins), key=wins.count)
    return {"rows": rows, "notes": notes, "ceilings": ceil, "dispatch_measured": measured}


def plots(s: Suite) -> dict:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"status_detail": "matplotlib not installed: no PNGs (the JSON holds every figure)"}
    rows = s.result["stages"].get("benchmark", {}).get("rows", [])
    files = []
    for name in sorted({r["shape"] for r in rows}):
        sub = [r for r in rows if r["shape"] == name]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        meths = sorted({k for r in sub for k, v in r.items() if isinstance(v, dict) and "us" in v})
        for meth in meths:
            pts = [(r["m"], r[meth]["us"]) for r in sub if isinstance(r.get(meth), dict) and "us" in r[meth]]
            ax1.plot(*zip(*pts), marker="o", label=meth)
            sp = [(r["m"], r[meth]["speedup_vs_cublas"]) for r in sub
                  if isinstance(r.get(meth), dict) and "speedup_vs_cublas" in r[meth]]
            if sp and meth != "cublas_fp16":
                ax2.plot(*zip(*sp), marker="o", label=meth)
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("M (tokens)")
            ax.grid(True, alpha=0.3)
        ax1.set_yscale("log")
        ax1.set_ylabel("time per call (us)")
        ax2.axhline(1.0, color="k", lw=0.8)
        ax2.set_ylabel("speedup vs cuBLAS FP16")
        ax1.legend(fontsize=7)
        fig.suptitle(f"{name} (N={sub[0]['n']}, K={sub[0]['k']}) on {s.result['stages']['environment'].get('gpu')}")
        fig.tight_layout()
        path = s.out / f"bench_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path.name)
    return {"files": files}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--quick", action="store_true", help="smaller sweep and benchmark (smoke test)")
    ap.add_argument("--budget-s", type=float, default=540.0, help="wall-clock budget; later stages are trimmed to fit")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    s = Suite(args.out_dir, args.budget_s, args.quick)
    if not torch.cuda.is_available():
        s.result["stages"]["environment"] = {"status": "error", "error": "no CUDA GPU visible; nothing to run"}
        s.save()
        print("no CUDA GPU visible", file=sys.stderr)
        return 2
    s.stage("environment", environment)
    s.stage("build", lambda: {"module": str(kernels.load(verbose=False).__file__), "build_dir": str(kernels.build_dir())})
    if s.result["stages"]["build"]["status"] != "ok":
        return 1
    s.stage("correctness", lambda: correctness(s))
    s.stage("sanitizer", lambda: sanitizer(s))
    ceil: dict = {}
    s.stage("ceilings", lambda: ceil.update(ceilings()) or dict(ceil))
    s.stage("benchmark", lambda: benchmark(s, ceil))
    s.stage("plots", lambda: plots(s))
    s.result["passed"] = not s.failed
    s.save()
    print(f"wrote {args.out_dir / 'gpu_suite.json'}; passed={not s.failed}; {s.result['elapsed_s']} s", flush=True)
    return 0 if not s.failed else 1


if __name__ == "__main__":
    sys.exit(main())
