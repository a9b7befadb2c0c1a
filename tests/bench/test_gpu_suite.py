"""The GPU suite's orchestration, on CPU: a fake runner stands in for every subprocess (it crashes one
correctness case, hangs one timing case and times out the racecheck step) and a fake clock for the wall
clock; the JSONL must still hold a final record for every other case. Plus the plan's budgets, and the real
process runner's timeout and stall kills."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SUITE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def gs():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = mod
    spec.loader.exec_module(mod)
    return mod


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """Plays every subprocess. Worker steps: writes the records a worker would; at FAULT it dies after
    case_start (as a CUDA fault kills the process), at HANG it stops writing (the runner's idle timeout)."""

    def __init__(self, gs, clock: Clock, fault: str, hang: str, timeout_step: str) -> None:
        self.gs, self.clock, self.fault, self.hang, self.timeout_step = gs, clock, fault, hang, timeout_step
        self.calls: list[tuple[str, list[str]]] = []
        self.first_case: dict[str, list[str]] = {}  # worker step -> the first case of each worker process
        self.faulted = False

    def run(self, step, argv, timeout_s, log, env, idle_timeout_s=0.0, progress=None):
        self.calls.append((step, argv))
        O = self.gs.Outcome
        log.write_text(f"$ {' '.join(argv)}\n")
        if step == self.timeout_step:
            self.clock.now += timeout_s  # runs until the step's time is gone
            return O(None, True, False, timeout_s)
        if step == "checker_build":  # the prebuilt checker prints its usage (it runs), or cmake builds it
            return O(0 if argv[0] == "cmake" else 2, False, False, 0.1)
        if step in ("memcheck", "racecheck"):
            with open(log, "a") as fh:
                fh.write("========= ERROR SUMMARY: 0 errors\n")
            return O(0, False, False, 1.0)
        if argv[1].endswith("gpu_suite_worker.py"):
            if self.fault == "no-gpu":
                return O(4, False, False, 2.0)  # dies at start-up, before any record
            cases = json.loads(Path(argv[3]).read_text())
            results, name = Path(argv[4]), argv[5]
            self.first_case.setdefault(name, []).append(cases[0]["id"])
            for c in cases:
                self._add(results, {"type": "case_start", "step": name, "id": c["id"]})
                if c["id"] == self.fault and not self.faulted:
                    self.faulted = True
                    self.clock.now += 0.5
                    return O(-11, False, False, 0.5)  # SIGSEGV: no record after case_start
                if c["id"] == self.hang:
                    self.clock.now += idle_timeout_s
                    return O(None, False, True, idle_timeout_s)
                self.clock.now += 0.01
                self._add(results, {"type": "case", "step": name, "id": c["id"], "status": "ok", "us": 5.0,
                                    **{k: c[k] for k in ("n", "k", "m", "method") if k in c}})
            return O(0, False, False, 1.0)
        self.clock.now += 0.2
        return O(0, False, False, 0.2)

    @staticmethod
    def _add(path: Path, rec: dict) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")


def test_orchestration_survives_a_fault_a_hang_and_a_step_timeout(gs, tmp_path):
    corr = gs.correctness_cases()
    tim = gs.timing_cases()
    fault, hang = corr[len(corr) // 2]["id"], tim[5]["id"]
    clock = Clock()
    runner = FakeRunner(gs, clock, fault=fault, hang=hang, timeout_step="racecheck")
    out = tmp_path / "out"
    rc = gs.Suite(out, "full", runner, work=tmp_path / "work", python="python3", clock=clock).run()
    assert rc == 1  # a crashed case, a hang and a timed-out step are failures

    recs = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    final = {}
    for r in recs:
        if r.get("type") == "case":
            assert (r["step"], r["id"]) not in final, f"two final records for {r['step']}/{r['id']}"
            final[(r["step"], r["id"])] = r
    # every correctness and timing case has its record; only the faulted / hung ones are not ok
    for step, cases, bad, status in (("correctness", corr, fault, "crashed"), ("timing", tim, hang, "timeout")):
        for c in cases:
            r = final[(step, c["id"])]
            assert r["status"] == (status if c["id"] == bad else "ok"), (step, c["id"], r)
    # a fresh worker resumed at the case right after the fault, and right after the hang
    ids = [c["id"] for c in corr]
    assert runner.first_case["correctness"] == [ids[0], ids[ids.index(fault) + 1]]
    tids = [c["id"] for c in tim]
    assert runner.first_case["timing"] == [tids[0], tids[tids.index(hang) + 1]]
    # the racecheck step ran out of time: its first case timed out, the others never started
    race = [final[("racecheck", " ".join(p))]["status"] for p in gs.SANITIZER_CASES]
    assert race == ["timeout"] + ["skipped"] * (len(gs.SANITIZER_CASES) - 1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"]["racecheck"]["status"] == "fail"
    assert summary["steps"]["memcheck"]["status"] == "ok"
    assert summary["counts"]["correctness"] == {"ok": len(corr) - 1, "crashed": 1}
    # the timings sit beside the static model's predictions (benchmarks/results/static/static_sm90.json)
    mvp = summary["measured_vs_predicted"]
    assert mvp and {r["path"] for r in mvp} == {"gemv", "gemm", "gemm_wgmma", "dequant_cublas"}
    assert all(r["measured_speedup_vs_cublas_fp16"] == 1.0 for r in mvp)  # the fake times every method at 5 us
    # at most 8 files come back, all named in the plan
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(gs.OUTPUT_FILES) and len(files) <= 8


def test_a_failed_dependency_skips_its_cases_with_a_record(gs, tmp_path):
    clock = Clock()
    runner = FakeRunner(gs, clock, fault="-", hang="-", timeout_step="jit_build")
    out = tmp_path / "out"
    gs.Suite(out, "full", runner, work=tmp_path / "work", python="python3", clock=clock).run()
    recs = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    skipped = {r["id"] for r in recs if r.get("type") == "case" and r["step"] == "correctness"}
    assert skipped == {c["id"] for c in gs.correctness_cases()}
    assert all(r["status"] == "skipped" for r in recs if r.get("type") == "case" and r["step"] == "timing")
    assert not any(s == "correctness" for s, _ in runner.calls)


def test_a_worker_that_cannot_start_is_not_restarted_forever(gs, tmp_path):
    clock = Clock()
    runner = FakeRunner(gs, clock, fault="no-gpu", hang="-", timeout_step="-")
    out = tmp_path / "out"
    gs.Suite(out, "full", runner, work=tmp_path / "work", python="python3", clock=clock).run()
    assert sum(s == "correctness" for s, _ in runner.calls) == 1
    recs = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    errs = [r for r in recs if r.get("type") == "case" and r["step"] == "correctness"]
    assert len(errs) == len(gs.correctness_cases()) and all(r["status"] == "error" for r in errs)


@pytest.mark.parametrize("mode, limit", [("full", 360), ("smoke", 90)])
def test_dry_run_plan_fits(gs, capsys, mode, limit):
    assert gs.main(["--dry-run"] + (["--smoke"] if mode == "smoke" else [])) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    lanes_total = sum(max(sum(s["budget_s"] for s in lane) for lane in st["lanes"]) for st in plan["stages"])
    assert plan["total_budget_s"] == lanes_total + plan["finalize_s"] <= limit
    names = [s["name"] for st in plan["stages"] for lane in st["lanes"] for s in lane]
    assert names[:5] == ["environment", "checker_build", "checker", "memcheck", "racecheck"]  # the checker first
    if mode == "full":
        assert {"jit_build", "correctness", "timing"} <= set(names)
        stage_of = {s["name"]: st["stage"] for st in plan["stages"] for lane in st["lanes"] for s in lane}
        assert stage_of["correctness"] != stage_of["timing"]  # never in one process, never side by side
    assert len(plan["outputs"]) <= 8


def test_process_runner_kills_on_budget_and_on_stall(gs, tmp_path):
    r = gs.ProcessRunner()
    slow = [sys.executable, "-c", "import time; time.sleep(30)"]
    o = r.run("x", slow, 0.5, tmp_path / "a.log", {})
    assert o.timed_out and o.rc is None and o.seconds < 10
    o = r.run("x", slow, 20, tmp_path / "b.log", {}, idle_timeout_s=0.5, progress=lambda: 0)
    assert o.stalled and not o.timed_out and o.seconds < 10
    o = r.run("x", [sys.executable, "-c", "raise SystemExit(3)"], 20, tmp_path / "c.log", {})
    assert (o.rc, o.timed_out, o.stalled) == (3, False, False)
    assert "killed: time budget" in (tmp_path / "a.log").read_text()


def test_a_torn_last_line_costs_only_itself(gs, tmp_path):
    res = gs.Results(tmp_path / "r.jsonl")
    res.add({"type": "case", "id": "a"})
    with open(res.path, "a") as fh:
        fh.write('{"type": "case", "id": "tor')  # a worker killed mid-write
    res.add({"type": "case", "id": "b"})
    assert [r["id"] for r in res.read()] == ["a", "b"]


def test_worker_loop_isolates_cases(gs, tmp_path):
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("gpu_suite_worker", SUITE_PATH.with_name("gpu_suite_worker.py"))
    wk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wk)
    cases = [{"id": f"c{i}", "m": i} for i in range(6)]
    dead = {"now": False}

    def run(c):
        if c["id"] == "c1":
            raise ValueError("a bad case")  # an ordinary exception: the context is fine
        if c["id"] == "c3":
            dead["now"] = True
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"status": "ok"}

    out = wk.Stream(tmp_path / "r.jsonl", "correctness")
    rc = wk.run_cases(cases, run, out, alive=lambda: not dead["now"])
    recs = gs.Results(tmp_path / "r.jsonl").read()
    final = [(r["id"], r["status"]) for r in recs if r["type"] == "case"]
    assert rc == wk.EXIT_FAULT
    assert final == [("c0", "ok"), ("c1", "error"), ("c2", "ok"), ("c3", "fault")]  # c4, c5: a fresh process
    assert all(r["step"] == "correctness" for r in recs)


def test_sanitizer_summary_parsing(gs):
    assert gs.sanitizer_errors("========= ERROR SUMMARY: 0 errors\n") == 0
    assert gs.sanitizer_errors("========= ERROR SUMMARY: 3 errors\n") == 3
    assert gs.sanitizer_errors("========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)\n") == 2
    assert gs.sanitizer_errors("segfault before any summary") is None
