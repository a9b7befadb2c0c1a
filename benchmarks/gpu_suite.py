"""Everything that needs a GPU, in one short device call (issue 17):

    bash benchmarks/gpu_suite.sh --prebuild          # HERE, no GPU: the CMake checker for sm_90, cudart static
    bash benchmarks/gpu_suite.sh OUT [--smoke]       # THERE: carry build/gpu_suite/w4a16_check
    bash benchmarks/gpu_suite.sh OUT --dry-run       # the plan (steps, time budgets) as JSON; runs nothing

Stages run one after another; inside a stage, lanes run side by side (the JIT build beside the
sanitizer runs); every step has its own time budget, and the plan's budgets add up to at most
``LIMIT_S`` (6 min; ``--smoke``: 90 s). A step is a list of cases:
  * command steps run each case as its own subprocess under the step's remaining time;
  * worker steps (correctness, timing: separate processes, so a fault in one never touches the other)
    run their cases in one Python process (benchmarks/gpu_suite_worker.py) that writes a ``case_start``
    record before and a ``case`` record after each case. When that process dies (a CUDA fault kills the
    context), stops writing for ``case_timeout_s`` (a hang) or runs out of time, the case it was on is
    recorded as crashed / timeout and a fresh process resumes with the next case: one fault loses one case,
    never the stage.
Every record is appended to ``OUT/results.jsonl`` the moment it exists. ``OUT`` ends with at most 8 files:
results.jsonl, summary.json (plan, step outcomes, counts, measured vs the static model's prediction),
suite.log, logs.tar.gz (every step's full log and whatever else the steps wrote).

This module needs no torch and no GPU (the plan and the orchestration are tested on CPU with a fake
runner: tests/bench/test_gpu_suite.py).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

REPO = Path(__file__).resolve().parents[1]
PREBUILT = REPO / "build" / "gpu_suite" / "w4a16_check"
STATIC_JSON = REPO / "benchmarks" / "results" / "static" / "static_sm90.json"
LIMIT_S = {"full": 360.0, "smoke": 90.0}
OUTPUT_FILES = ("results.jsonl", "summary.json", "suite.log", "logs.tar.gz")
FINALIZE_S = 5.0  # summary.json + logs.tar.gz after the last stage

# ---- what runs ----------------------------------------------------------------------------------------

# Checker problems: M N K G DTYPE GIDX (small: compute-sanitizer slows kernels down 10-100x).
CHECKER_CASES = (("5", "200", "384", "64", "f16", "0"), ("17", "136", "256", "32", "bf16", "1"),
                 ("64", "264", "1024", "128", "f16", "0"), ("1", "4096", "4096", "128", "bf16", "0"))
SANITIZER_CASES = CHECKER_CASES[:3]
# (name, N = out_features, K = in_features)
CORRECTNESS_SHAPES = (("odd.136x384", 136, 384), ("odd.296x640", 296, 640), ("odd.24x4160", 24, 4160),
                      ("smollm2.qkv", 576, 576), ("llama7b.up", 11008, 4096), ("llama7b.down", 4096, 11008))
CORRECTNESS_M = (1, 2, 3, 5, 8, 15, 16, 17, 31, 64, 127, 256)
TIMING_SHAPES = (("llama7b.down", 4096, 11008), ("llama7b.up", 11008, 4096), ("llama7b.qkv", 4096, 4096))
TIMING_M = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
TIMING_METHODS = ("cublas_fp16", "awq_gemv", "awq_gemm", "awq_gemm_wgmma", "awq_dequant_cublas", "awq_dispatch",
                  "gptq_r_gemv", "gptq_r_gemm", "torch_int4pack")


def correctness_cases() -> list[dict]:
    cases = []
    for name, n, k in CORRECTNESS_SHAPES:
        for dtype in ("fp16", "bf16"):
            for g in (32, 64, 128):
                if k % g:
                    continue
                for variant in ("awq", "gptq_r"):
                    for m in CORRECTNESS_M:
                        for path in ("gemv", "gemm", "gemm_wgmma", "dequant_cublas"):
                            if (path == "gemv" and m > 8) or (path == "gemm_wgmma" and variant != "awq"):
                                continue
                            cases.append({"id": f"{name}/{dtype}/g{g}/{variant}/m{m}/{path}", "shape": name, "n": n,
                                          "k": k, "dtype": dtype, "g": g, "variant": variant, "m": m, "path": path})
    return cases


def timing_cases() -> list[dict]:
    cases = [{"id": "ceilings", "kind": "ceilings"}, {"id": "launch_overhead", "kind": "launch_overhead"}]
    for name, n, k in TIMING_SHAPES:
        for m in TIMING_M:
            for meth in TIMING_METHODS:
                if (meth.endswith("gemv") and m > 8) or (meth == "awq_gemm_wgmma" and m < 32):
                    continue  # the wgmma variant is built for M 33-64 (the step's 100 s hold the rest)
                cases.append({"id": f"{name}/m{m}/{meth}", "kind": "time", "shape": name, "n": n, "k": k, "m": m,
                              "method": meth})
    return cases


@dataclass
class Step:
    name: str
    budget_s: float
    what: str
    kind: str                       # "command" | "worker" | "checker_build"
    cases: list[dict] = field(default_factory=list)  # command: {"id", "argv"}; worker: case dicts
    needs: tuple[str, ...] = ()
    case_timeout_s: float = 0.0     # worker steps: no record for this long = a hang
    worker: str = ""                # worker steps: the worker's mode ("correctness" | "timing")

    def plan_entry(self) -> dict:
        return {"name": self.name, "budget_s": self.budget_s, "what": self.what, "cases": len(self.cases),
                "needs": list(self.needs), **({"case_timeout_s": self.case_timeout_s} if self.kind == "worker" else {})}


def find_sanitizer() -> str | None:
    for cand in (shutil.which("compute-sanitizer"), "/usr/local/cuda/bin/compute-sanitizer",
                 "/usr/local/cuda/compute-sanitizer/compute-sanitizer"):
        if cand and Path(cand).exists():
            return cand
    return None


def build_plan(mode: str, checker: str = "{checker}", sanitizer: str = "{compute-sanitizer}",
               python: str = sys.executable) -> list[list[list[Step]]]:
    """Stages -> lanes -> steps. Command argv name the checker and compute-sanitizer by the given paths."""
    smoke = mode == "smoke"
    env_step = Step("environment", 10, "nvidia-smi, python/torch/nvcc versions, the commit", "command", [
        {"id": "nvidia-smi", "argv": ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                                      "clocks.sm,clocks.mem,power.limit", "--format=csv"]},
        {"id": "torch", "argv": [python, "-c", "import torch, sys; p = torch.cuda.get_device_properties(0); "
                                 "print(sys.version.split()[0], torch.__version__, torch.version.cuda, p.name, "
                                 "p.multi_processor_count, p.L2_cache_size)"]},
        {"id": "nvcc", "argv": ["nvcc", "--version"]}])
    build = Step("checker_build", 45, "use the prebuilt torch-free checker if it runs here, else cmake-build it "
                 "(sm_90, static cudart)", "checker_build", [{"id": "w4a16_check"}])
    probs = CHECKER_CASES[:1] if smoke else CHECKER_CASES
    check = Step("checker", 10 if smoke else 15, "w4a16_check: GEMV/GEMM/dequant vs an fp64 CPU reference, poisoned "
                 "outputs", "command", [{"id": " ".join(p), "argv": [checker, *p]} for p in probs], ("checker_build",))
    san = SANITIZER_CASES[:1] if smoke else SANITIZER_CASES
    memcheck = Step("memcheck", 10 if smoke else 40, "compute-sanitizer memcheck (leak check) on the checker: "
                    "cudaMalloc'd buffers, no caching allocator to hide overruns", "command",
                    [{"id": " ".join(p), "argv": [sanitizer, "--tool", "memcheck", "--leak-check", "full",
                                                  "--error-exitcode", "99", checker, *p]} for p in san], ("checker_build",))
    racecheck = Step("racecheck", 10 if smoke else 50, "compute-sanitizer racecheck (shared-memory hazards) on the "
                     "checker", "command",
                     [{"id": " ".join(p), "argv": [sanitizer, "--tool", "racecheck", "--racecheck-report", "all",
                                                   "--error-exitcode", "99", checker, *p]} for p in san],
                     ("checker_build",))
    lane_checker = [env_step, build, check, memcheck, racecheck]
    if smoke:
        return [[lane_checker]]
    jit = Step("jit_build", 150, "JIT-build the torch extension for this GPU (awq_ext.kernels.load)", "command",
               [{"id": "awq_ext.kernels.load", "argv": [python, "-c", "from awq_ext import kernels; "
                                                        "print(kernels.load(verbose=True).__file__)"]}])
    corr = Step("correctness", 80, "every path x M x dtype x G x AWQ/GPTQ-R vs an fp32 reference (fresh random "
                "inputs, poisoned outputs), one case per call", "worker", correctness_cases(), ("jit_build",),
                case_timeout_s=30, worker="correctness")
    timing = Step("timing", 100, "CUDA-graph timings (weights rotated past 2x L2) of cuBLAS FP16 and every W4A16 path; "
                  "copy bandwidth; launch overhead", "worker", timing_cases(), ("jit_build",), case_timeout_s=30,
                  worker="timing")
    return [[lane_checker, [jit]], [[corr]], [[timing]]]


def plan_json(stages: list[list[list[Step]]], mode: str) -> dict:
    out = []
    for i, lanes in enumerate(stages):
        budgets = [sum(s.budget_s for s in lane) for lane in lanes]
        out.append({"stage": i, "budget_s": max(budgets), "lanes": [[s.plan_entry() for s in lane] for lane in lanes]})
    total = sum(s["budget_s"] for s in out) + FINALIZE_S
    return {"mode": mode, "stages": out, "finalize_s": FINALIZE_S, "total_budget_s": total, "limit_s": LIMIT_S[mode],
            "fits": total <= LIMIT_S[mode], "outputs": list(OUTPUT_FILES)}


# ---- how it runs --------------------------------------------------------------------------------------

@dataclass
class Outcome:
    rc: int | None         # None when killed
    timed_out: bool        # the step's time ran out
    stalled: bool          # no progress for the idle timeout (a hang)
    seconds: float


class Runner(Protocol):
    def run(self, step: str, argv: list[str], timeout_s: float, log: Path, env: dict[str, str],
            idle_timeout_s: float = 0.0, progress: Callable[[], int] | None = None) -> Outcome: ...


class ProcessRunner:
    """Real subprocesses in their own process group (a timeout kills the whole tree)."""

    def run(self, step: str, argv: list[str], timeout_s: float, log: Path, env: dict[str, str],
            idle_timeout_s: float = 0.0, progress: Callable[[], int] | None = None) -> Outcome:
        t0 = time.monotonic()
        with open(log, "ab") as fh:
            fh.write(f"$ {' '.join(argv)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                        start_new_session=True)
            except OSError as exc:
                fh.write(f"cannot start: {exc}\n".encode())
                return Outcome(127, False, False, time.monotonic() - t0)
            last, mark = progress() if progress else 0, time.monotonic()
            while True:
                try:
                    rc = proc.wait(timeout=0.2)
                    return Outcome(rc, False, False, time.monotonic() - t0)
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if progress is not None:
                    cur = progress()
                    if cur != last:
                        last, mark = cur, now
                stalled = idle_timeout_s > 0 and now - mark > idle_timeout_s
                if now - t0 > timeout_s or stalled:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    fh.write(f"\nkilled: {'no progress for %.0f s' % idle_timeout_s if stalled else 'time budget'}\n".encode())
                    return Outcome(None, not stalled, stalled, time.monotonic() - t0)


def append_record(path: Path, record: dict) -> None:
    """Append one JSON line and flush. A writer killed mid-line leaves a torn last line: start on a new line
    then, so the torn one is the only record lost."""
    line = json.dumps({"t": round(time.time(), 3), **record}, default=str) + "\n"
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        fh.write(line.encode())
        fh.flush()


class Results:
    """The JSONL stream: every record appended (and flushed) as soon as it exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.touch()

    def add(self, record: dict) -> None:
        with self._lock:
            append_record(self.path, record)

    def read(self) -> list[dict]:
        with self._lock:
            lines = self.path.read_text().splitlines()
        out = []
        for ln in lines:
            try:
                out.append(json.loads(ln))
            except json.JSONDecodeError:
                continue  # a worker killed mid-line leaves a torn last line
        return out

    def size(self) -> int:
        return self.path.stat().st_size


_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) error")
_HAZARDS = re.compile(r"RACECHECK SUMMARY: (\d+) hazard")


def sanitizer_errors(text: str) -> int | None:
    found = [int(x) for x in _SUMMARY.findall(text)] + [int(x) for x in _HAZARDS.findall(text)]
    return sum(found) if found else None


class Suite:
    def __init__(self, out: Path, mode: str, runner: Runner, work: Path, python: str = sys.executable,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.mode, self.runner, self.python, self.clock = out, mode, runner, python, clock
        self.work = work  # step logs and builds, outside OUT: the logs go into logs.tar.gz, never loose
        self.work.mkdir(parents=True, exist_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        self.results = Results(out / "results.jsonl")
        self.status: dict[str, dict] = {}
        self.checker = str(PREBUILT)
        sanitizer = find_sanitizer() or "compute-sanitizer"
        self.stages = build_plan(mode, checker="{checker}", sanitizer=sanitizer, python=python)
        self.env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                    "PYTHONUNBUFFERED": "1", "MAX_JOBS": str(os.cpu_count() or 4),
                    "AWQ_EXT_CACHE_DIR": os.environ.get("AWQ_EXT_CACHE_DIR", str(self.work / "awq_ext_cache"))}
        self._log_lock = threading.Lock()

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        with self._log_lock:
            print(line, flush=True)
            with open(self.out / "suite.log", "a") as fh:
                fh.write(line + "\n")

    # -- steps --
    def run(self) -> int:
        plan = plan_json(self.stages, self.mode)
        self.results.add({"type": "plan", **plan})
        self.log(f"plan: {plan['total_budget_s']:.0f} s of {plan['limit_s']:.0f} s; outputs {plan['outputs']}")
        for lanes in self.stages:
            threads = [threading.Thread(target=self._lane, args=(lane,)) for lane in lanes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self._pack()
        summary = self.summary(plan)
        tmp = self.out / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str))
        os.replace(tmp, self.out / "summary.json")
        self._pack()
        self.log(f"done: {summary['counts']}; passed={summary['passed']}")
        return 0 if summary["passed"] else 1

    def _lane(self, lane: list[Step]) -> None:
        for step in lane:
            missing = [n for n in step.needs if self.status.get(n, {}).get("status") != "ok"]
            if missing:
                self._finish(step, "skipped", 0.0, f"needs {missing}")
                for c in step.cases:
                    self.results.add({"type": "case", "step": step.name, "id": c["id"], "status": "skipped",
                                      "why": f"step needs {missing}"})
                continue
            self.results.add({"type": "step_start", "step": step.name, "budget_s": step.budget_s})
            self.log(f"== {step.name} (budget {step.budget_s:.0f} s, {len(step.cases)} cases)")
            t0 = self.clock()
            try:
                status, detail = {"command": self._command, "worker": self._worker,
                                  "checker_build": self._checker_build}[step.kind](step)
            except Exception as exc:  # noqa: BLE001 - an orchestration bug loses the step, not the suite
                status, detail = "error", f"{type(exc).__name__}: {exc}"
            self._finish(step, status, self.clock() - t0, detail)

    def _finish(self, step: Step, status: str, seconds: float, detail: str) -> None:
        self.status[step.name] = {"status": status, "seconds": round(seconds, 1), "detail": detail,
                                  "budget_s": step.budget_s}
        self.results.add({"type": "step", "step": step.name, **self.status[step.name]})
        self.log(f"   {step.name}: {status} in {seconds:.1f} s {detail}")

    def _argv(self, argv: list[str]) -> list[str]:
        return [a.replace("{checker}", self.checker) for a in argv]

    def _command(self, step: Step) -> tuple[str, str]:
        deadline = self.clock() + step.budget_s
        bad = 0
        for c in step.cases:
            left = deadline - self.clock()
            if left <= 0:
                self.results.add({"type": "case", "step": step.name, "id": c["id"], "status": "skipped",
                                  "why": "step budget spent"})
                bad += 1
                continue
            log = self.work / f"{step.name}.{_safe(c['id'])}.log"
            o = self.runner.run(step.name, self._argv(c["argv"]), left, log, self.env)
            text = log.read_text(errors="replace") if log.exists() else ""
            rec = {"type": "case", "step": step.name, "id": c["id"], "rc": o.rc, "seconds": round(o.seconds, 2),
                   "tail": text[-1500:]}
            errors = 0
            if step.name in ("memcheck", "racecheck"):  # no summary line parsed = not a pass
                errors = rec["sanitizer_errors"] = sanitizer_errors(text)
            ok = o.rc == 0 and errors == 0
            rec["status"] = "timeout" if o.timed_out or o.stalled else ("ok" if ok else "fail")
            bad += rec["status"] != "ok"
            self.results.add(rec)
        return ("ok" if bad == 0 else "fail"), f"{len(step.cases) - bad}/{len(step.cases)} ok"

    def _checker_build(self, step: Step) -> tuple[str, str]:
        probe = self.work / "checker_probe.log"
        if PREBUILT.exists():
            o = self.runner.run(step.name, [str(PREBUILT)], 10, probe, self.env)
            if o.rc == 2:  # usage message: it loads and runs here
                self.checker = str(PREBUILT)
                self.results.add({"type": "case", "step": step.name, "id": "w4a16_check", "status": "ok",
                                  "how": "prebuilt", "path": self.checker})
                return "ok", "prebuilt binary runs"
            self.log(f"   prebuilt checker does not run here (rc={o.rc}); building it")
        build = self.work / "cmake-build"
        deadline = self.clock() + step.budget_s
        log = self.work / "checker_build.log"
        for argv in (["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DCMAKE_CUDA_ARCHITECTURES=90",
                      "-DCMAKE_CUDA_RUNTIME_LIBRARY=Static"],
                     ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 4), "--target", "w4a16_check"]):
            o = self.runner.run(step.name, argv, max(1.0, deadline - self.clock()), log, self.env)
            if o.rc != 0:
                self.results.add({"type": "case", "step": step.name, "id": "w4a16_check", "status":
                                  "timeout" if o.timed_out else "fail", "how": "cmake", "rc": o.rc})
                return "fail", f"cmake failed (rc={o.rc}); see logs.tar.gz/{log.name}"
        self.checker = str(build / "w4a16_check")
        self.results.add({"type": "case", "step": step.name, "id": "w4a16_check", "status": "ok", "how": "cmake",
                          "path": self.checker})
        return "ok", "built here"

    def _worker(self, step: Step) -> tuple[str, str]:
        deadline = self.clock() + step.budget_s
        remaining = [c["id"] for c in step.cases]
        by_id = {c["id"]: c for c in step.cases}
        restarts = 0
        while remaining:
            left = deadline - self.clock()
            if left <= 1:
                break
            cases_file = self.work / f"{step.name}.cases.json"
            cases_file.write_text(json.dumps([by_id[i] for i in remaining]))
            argv = [self.python, str(REPO / "benchmarks" / "gpu_suite_worker.py"), step.worker, str(cases_file),
                    str(self.results.path), step.name]
            o = self.runner.run(step.name, argv, left, self.work / f"{step.name}.worker{restarts}.log", self.env,
                                idle_timeout_s=step.case_timeout_s, progress=self.results.size)
            recs = [r for r in self.results.read() if r.get("step") == step.name]
            done = {r["id"] for r in recs if r.get("type") == "case"}
            started = [r["id"] for r in recs if r.get("type") == "case_start" and r["id"] not in done]
            if not (set(remaining) & ({r["id"] for r in recs if r.get("type") == "case_start"})):
                # it died before its first case (no GPU, an import error): restarting would only repeat that
                for cid in remaining:
                    self.results.add({"type": "case", "step": step.name, "id": cid, "status": "error",
                                      "why": f"worker exited (rc={o.rc}) before its first case; see logs.tar.gz"})
                remaining = []
                break
            for cid in started:  # the case the worker was on when it died, hung or ran out of time
                if cid in remaining:
                    why = ("no record for %.0f s (hang)" % step.case_timeout_s if o.stalled else
                           "step budget spent" if o.timed_out else f"worker died (rc={o.rc})")
                    self.results.add({"type": "case", "step": step.name, "id": cid, "status":
                                      "timeout" if (o.stalled or o.timed_out) else "crashed", "why": why})
                    done.add(cid)
            remaining = [i for i in remaining if i not in done]
            if o.rc == 0 and remaining:
                for cid in remaining:  # the worker finished without them: a worker bug, reported per case
                    self.results.add({"type": "case", "step": step.name, "id": cid, "status": "error",
                                      "why": "worker exited 0 without a record"})
                remaining = []
            if remaining:
                restarts += 1
                self.log(f"   {step.name}: worker stopped (rc={o.rc}, stalled={o.stalled}); restart {restarts} "
                         f"with {len(remaining)} cases left")
        for cid in remaining:
            self.results.add({"type": "case", "step": step.name, "id": cid, "status": "skipped",
                              "why": "step budget spent"})
        recs = [r for r in self.results.read() if r.get("step") == step.name and r.get("type") == "case"]
        bad = sum(r["status"] not in ("ok",) for r in recs)
        return ("ok" if bad == 0 else "fail"), f"{len(recs) - bad}/{len(recs)} ok, {restarts} worker restart(s)"

    # -- outputs --
    def summary(self, plan: dict) -> dict:
        recs = self.results.read()
        cases = [r for r in recs if r.get("type") == "case"]
        counts: dict[str, dict[str, int]] = {}
        for r in cases:
            counts.setdefault(r["step"], {}).setdefault(r["status"], 0)
            counts[r["step"]][r["status"]] += 1
        passed = all(s["status"] == "ok" for name, s in self.status.items() if name != "environment")
        return {"mode": self.mode, "passed": passed, "note": "measured on the device; the predictions beside them "
                "come from the static SASS model (benchmarks/results/static/static_sm90.json)",
                "plan": plan, "steps": self.status, "counts": counts,
                "measured_vs_predicted": measured_vs_predicted(cases, STATIC_JSON)}

    def _pack(self) -> None:
        tmp = self.out / "logs.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for p in sorted(self.work.rglob("*")):
                if p.is_file() and "cmake-build" not in p.parts and "awq_ext_cache" not in p.parts:
                    tar.add(p, arcname=str(p.relative_to(self.work)))
        os.replace(tmp, self.out / "logs.tar.gz")


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:80]


def measured_vs_predicted(cases: list[dict], static_json: Path) -> list[dict]:
    """Timing cases of the AWQ paths beside the static model's prediction for the same (N, K, M, path), with
    the measured speedup over cuBLAS FP16 beside the predicted one over an ideal FP16 kernel."""
    if not static_json.exists():
        return []
    pred = {(r["n"], r["k"], r["m"], r["path"]): r for r in json.loads(static_json.read_text()).get("rows", [])}
    timed = [c for c in cases if c.get("step") == "timing" and c.get("status") == "ok" and c.get("us")]
    cublas = {(c["n"], c["k"], c["m"]): c["us"] for c in timed if c.get("method") == "cublas_fp16"}
    out = []
    for c in timed:
        if not str(c.get("method", "")).startswith("awq_"):
            continue
        path = c["method"].removeprefix("awq_")
        p = pred.get((c["n"], c["k"], c["m"], path))
        if p is None:
            continue
        base = cublas.get((c["n"], c["k"], c["m"]))
        out.append({"shape": f"{c['n']}x{c['k']}", "m": c["m"], "path": path, "chosen_by_model": p["chosen"],
                    "measured_us": c["us"], "predicted_us": p["predicted_us"],
                    "measured_over_predicted": round(c["us"] / p["predicted_us"], 3),
                    "measured_speedup_vs_cublas_fp16": round(base / c["us"], 3) if base else None,
                    "predicted_speedup_vs_fp16": p["predicted_speedup_vs_fp16"]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, nargs="?")
    ap.add_argument("--smoke", action="store_true", help=f"checker + sanitizers only (<= {LIMIT_S['smoke']:.0f} s)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan as JSON and exit")
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "full"
    if args.dry_run:
        print(json.dumps({"plan": plan_json(build_plan(mode), mode)}, indent=1))
        return 0
    if args.out_dir is None:
        ap.error("OUT_DIR is required unless --dry-run")
    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        print(f"note: {args.out_dir} is not empty; results are appended", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="gpu_suite_"))  # outside OUT: only logs.tar.gz of it comes back
    return Suite(args.out_dir, mode, ProcessRunner(), work=work).run()


if __name__ == "__main__":
    sys.exit(main())
