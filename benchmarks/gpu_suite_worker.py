"""The GPU side of benchmarks/gpu_suite.py: runs one list of cases in this process and appends a
``case_start`` record before and a ``case`` record after each one to the results JSONL.

    python benchmarks/gpu_suite_worker.py {correctness|timing} CASES.json RESULTS.jsonl STEP

A Python exception fails its case only. A CUDA error that leaves the context unusable (an illegal
address, a launch failure) is recorded as ``fault`` and the process exits 3: the orchestrator starts a
fresh process with the next case. Correctness and timing always run in different processes.

Correctness: fresh random codes/scales/zeros per weight and fresh activations per case; reference =
x (fp32) @ W^T (fp32, TF32 off) with W rounded once to the activation dtype; relative error
||out - ref|| / ||ref|| under TOL; outputs poisoned (a NaN block of the output's size is freed into the
caching allocator right before the call, which usually hands it to the output) and non-finite fails.
Timing: CUDA-graph replays of back-to-back calls, weights rotated over enough copies to exceed 2x L2,
median of several replays.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_suite import append_record  # noqa: E402  (the one JSONL writer, torn-line safe)

from awq_ext.kernels.ops import w4a16_linear  # noqa: E402
from awq_ext.pack.kernel_layout import pack_kernel  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
TOL = {"fp16": 2e-3, "bf16": 1e-2}
EXIT_FAULT = 3


class Stream:
    def __init__(self, path: Path, step: str) -> None:
        self.path, self.step = path, step

    def add(self, record: dict) -> None:
        append_record(self.path, {"step": self.step, **record})


def context_alive() -> bool:
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
        return True
    except RuntimeError:
        return False


def random_weight(n: int, k: int, g: int, dtype: torch.dtype, gidx: bool, gen: torch.Generator):
    q = torch.randint(0, 16, (n, k), device="cuda", dtype=torch.int32, generator=gen)
    ng = k // g
    scales = (torch.rand(n, ng, device="cuda", generator=gen) * 0.02 + 1e-3) / math.sqrt(k / 128)
    zeros = torch.randint(0, 16, (n, ng), device="cuda", generator=gen).float()
    g_idx = (torch.randperm(k, device="cuda", generator=gen) // g).to(torch.int32) if gidx else None
    packed = pack_kernel(q, scales, zeros, g, g_idx=g_idx, dtype=dtype)
    gi = g_idx.long() if gidx else torch.arange(k, device="cuda") // g
    w_ref = ((q.float() - zeros[:, gi]) * scales.to(dtype).float()[:, gi]).to(dtype).float()  # rounded once
    return packed, w_ref


class WeightCache:
    """The weights of the current key only (cases come grouped by key), rebuilt on a new key."""

    def __init__(self) -> None:
        self.key = None
        self.value = None

    def get(self, key, make):  # noqa: ANN001, ANN201
        if key != self.key:
            self.value = None
            torch.cuda.empty_cache()
            self.key, self.value = key, make()
        return self.value


def correctness_case(c: dict, weights: WeightCache, gen: torch.Generator) -> dict:
    dtype = DTYPES[c["dtype"]]
    n, k, g, m = c["n"], c["k"], c["g"], c["m"]
    packed, w_ref = weights.get((c["shape"], c["dtype"], g, c["variant"]),
                                lambda: random_weight(n, k, g, dtype, c["variant"] == "gptq_r", gen))
    x = torch.randn(m, k, device="cuda", generator=gen).to(dtype)
    ref = x.float() @ w_ref.t()
    poison = torch.full((m, n), float("nan"), dtype=dtype, device="cuda")
    ptr = poison.data_ptr()
    del poison
    y = w4a16_linear(x, packed, g, n, k, path=c["path"])
    torch.cuda.synchronize()
    finite = bool(torch.isfinite(y).all())
    err = float((y.float() - ref).norm() / ref.norm().clamp_min(1e-30))
    ok = finite and err < TOL[c["dtype"]]
    return {"status": "ok" if ok else "fail", "rel_err": err, "tolerance": TOL[c["dtype"]], "finite": finite,
            "poisoned_block_reused": y.data_ptr() == ptr}


def graph_time_us(calls: list, reps: int = 7) -> tuple[float, str, float]:
    """Median per-call time over ``reps`` replays of a graph of back-to-back calls (one per weight copy), the
    mode, and the spread (max - min over the replays: differences below it are noise)."""
    for c in calls:  # warm-up; also allocates split-K counters outside capture
        c()
    torch.cuda.synchronize()
    per_graph = max(len(calls), 20 // len(calls) * len(calls))
    try:
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for c in calls:
                c()
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, stream=stream):
                for i in range(per_graph):
                    calls[i % len(calls)]()
        run, mode = graph.replay, "cuda_graph"
    except RuntimeError as exc:
        mode = f"eager ({type(exc).__name__})"

        def run() -> None:
            for i in range(per_graph):
                calls[i % len(calls)]()
    times = []
    for _ in range(reps + 2):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        run()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / per_graph)
    kept = times[2:]
    return statistics.median(kept), mode, max(kept) - min(kept)


class TimingWeights:
    """fp16 / AWQ / GPTQ-R / torch-int4 weight copies of the current shape, enough to exceed 2x L2."""

    def __init__(self, n: int, k: int, gen: torch.Generator, g: int = 128) -> None:
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 * 2**20)
        self.cp16 = max(2, math.ceil(2 * l2 / (n * k * 2)))
        self.cp4 = max(2, math.ceil(2 * l2 / (n * k // 2)))
        self.g = g
        self.fp16 = [torch.randn(n, k, dtype=torch.float16, device="cuda") for _ in range(self.cp16)]
        self.awq = [random_weight(n, k, g, torch.float16, False, gen)[0] for _ in range(self.cp4)]
        self.gptq = [random_weight(n, k, g, torch.float16, True, gen)[0] for _ in range(self.cp4)]
        self.int4, self.int4_why = None, None
        try:
            outs = []
            for _ in range(self.cp4):
                q = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
                packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
                outs.append((packed, torch.rand(k // 128, n, 2, dtype=torch.bfloat16, device="cuda")))
            torch._weight_int4pack_mm(torch.randn(1, k, dtype=torch.bfloat16, device="cuda"), outs[0][0], 128, outs[0][1])
            self.int4 = outs
        except (RuntimeError, AttributeError) as exc:
            self.int4_why = f"{type(exc).__name__}: {str(exc)[:200]}"


def timing_case(c: dict, cache: WeightCache, gen: torch.Generator) -> dict:
    if c["kind"] == "ceilings":
        x = torch.randint(0, 256, (2**28,), dtype=torch.uint8, device="cuda")  # 256 MiB of random bytes
        y = torch.empty_like(x)
        t, _, _ = graph_time_us([lambda: y.copy_(x)], reps=5)
        a = torch.randn(8192, 8192, dtype=torch.float16, device="cuda")
        t2, _, _ = graph_time_us([lambda: a @ a], reps=5)
        return {"status": "ok", "copy_GBps": round(2 * x.numel() / (t * 1e-6) / 1e9, 1),
                "fp16_matmul_TFLOPs": round(2 * 8192**3 / (t2 * 1e-6) / 1e12, 1)}
    if c["kind"] == "launch_overhead":
        z = torch.zeros(1, device="cuda")
        t, mode, spread = graph_time_us([lambda: z.add_(1)], reps=9)
        return {"status": "ok", "us_per_launch": round(t, 3), "spread_us": round(spread, 3), "mode": mode,
                "note": "a 1-element kernel back to back in a graph: the static model assumes 2 us"}
    n, k, m, meth = c["n"], c["k"], c["m"], c["method"]
    w = cache.get((n, k), lambda: TimingWeights(n, k, gen))
    x = torch.randn(m, k, dtype=torch.float16, device="cuda", generator=gen)
    g = w.g
    if meth == "cublas_fp16":
        calls, wbytes = [(lambda i: lambda: torch.matmul(x, w.fp16[i].t()))(i) for i in range(w.cp16)], n * k * 2
    elif meth == "torch_int4pack":
        if w.int4 is None:
            return {"status": "ok", "unavailable": w.int4_why, **_ids(c)}
        xb = x.bfloat16()
        calls = [(lambda i: lambda: torch._weight_int4pack_mm(xb, w.int4[i][0], 128, w.int4[i][1]))(i)
                 for i in range(w.cp4)]
        wbytes = n * k // 2 + 2 * (k // 128) * n * 2
    else:
        variant, path = meth.split("_", 1) if not meth.startswith("gptq_r") else ("gptq_r", meth[len("gptq_r_"):])
        pool = w.awq if variant == "awq" else w.gptq
        p = None if path == "dispatch" else path
        calls = [(lambda i: lambda: w4a16_linear(x, pool[i], g, n, k, path=p))(i) for i in range(w.cp4)]
        wbytes = n * k // 2 + 2 * (k // g) * n * 2
    t, mode, spread = graph_time_us(calls)
    moved = wbytes + 2 * m * k + 2 * m * n
    return {"status": "ok", **_ids(c), "us": round(t, 3), "spread_us": round(spread, 3), "GBps": round(moved / (t * 1e-6) / 1e9, 1),
            "TFLOPs": round(2 * m * n * k / (t * 1e-6) / 1e12, 3), "mode": mode}


def _ids(c: dict) -> dict:
    return {k: c[k] for k in ("shape", "n", "k", "m", "method") if k in c}


def run_cases(cases: list[dict], run, out: Stream, alive=context_alive) -> int:  # noqa: ANN001
    """Each case between a case_start and a case record. An exception fails its case; if the CUDA context
    is dead after it, the case is recorded as a fault and EXIT_FAULT returned (the orchestrator restarts)."""
    for c in cases:
        out.add({"type": "case_start", "id": c["id"]})
        t0 = time.monotonic()
        fault = False
        try:
            rec = run(c)
        except Exception as exc:  # noqa: BLE001 - one case fails, the next one runs
            fault = not alive()
            rec = {"status": "fault" if fault else "error", "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                   "traceback": traceback.format_exc()[-2000:]}
        out.add({"type": "case", "id": c["id"], **{k: c[k] for k in c if k != "id"}, **rec,
                 "seconds": round(time.monotonic() - t0, 3)})
        if fault:
            return EXIT_FAULT
    return 0


def main(argv: list[str]) -> int:
    mode, cases_path, results_path, step = argv
    if not torch.cuda.is_available():
        print("gpu_suite_worker: no CUDA GPU visible (torch.cuda.is_available() is False)", file=sys.stderr)
        return 4
    cases = json.loads(Path(cases_path).read_text())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    gen = torch.Generator(device="cuda").manual_seed(time.time_ns() % 2**63)  # fresh inputs every run
    cache = WeightCache()
    run = correctness_case if mode == "correctness" else timing_case
    return run_cases(cases, lambda c: run(c, cache, gen), Stream(Path(results_path), step))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
