"""Quantization cost: search seconds, peak memory and perplexity of AWQ at its defaults.

Each (model, bit width) runs in a fresh subprocess of the project CLI (``python -m awq_ext quantize
--method awq --model M --w-bit B --json PATH``, Protocol P evaluation unless ``--eval none`` is passed
through), so its peak RSS is its own and not this process's. The CLI's JSON gives the search seconds,
the perplexity, ``peak_rss_mb`` and per-block phase timings, summed here into a profile (where the
seconds go); we also measure the subprocess from outside (wall clock and the children's max RSS from
``getrusage``) as a cross-check that needs nothing from the CLI.
"""
from __future__ import annotations

import resource
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from awq_ext.bench.cli_runs import run_cli_json
from awq_ext.errors import AWQInputError

DEFAULT_CLI = (sys.executable, "-m", "awq_ext")


def phase_profile(cli_json: dict) -> dict[str, float]:
    """Seconds per calibration phase summed over blocks (``blocks[i].phases`` of the CLI JSON); scale
    searches of the same inspected module in every block add up under one name."""
    total: dict[str, float] = {}
    for b in cli_json.get("blocks") or []:
        for name, sec in (b.get("phases") or {}).items():
            total[name] = total.get(name, 0.0) + float(sec)
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def run_quant_cost(models: Sequence[str], extra_args: str = "", cli: Sequence[str] = DEFAULT_CLI,
                   timeout_s: float | None = None, log: Callable[[str], None] = print,
                   bits: Sequence[int] = (4,)) -> tuple[list[dict], list[str]]:
    """One row per (model, bit width): ``{model, bits, seconds, ppl, peak_rss_mb, phases, wall_s_outside,
    child_max_rss_mb, cli_json}``; ``seconds`` is the calibration + search + quantization time.

    Raises :class:`AWQInputError` when a run fails (its stderr tail is in the message) or writes no JSON.
    ``child_max_rss_mb`` is the max over all children so far (``getrusage`` cannot isolate one child), so
    it is exact for the first model and an upper bound afterwards.
    """
    if not models:
        raise AWQInputError("quant-cost needs at least one model: --models NAME_OR_PATH[,NAME...]")
    if not bits:
        raise AWQInputError("quant-cost needs at least one bit width: --bits 4[,3]")
    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="awq_bench_qc_") as tmp:
        for i, (model, b) in enumerate((m, b) for m in models for b in bits):
            out = Path(tmp) / f"run{i}.json"
            cmd = [*cli, "quantize", "--method", "awq", "--model", model, "--w-bit", str(b), "--no-progress",
                   "--json", str(out), *shlex.split(extra_args)]
            log(f"  quant-cost: {shlex.join(cmd)}")
            data, wall = run_cli_json(cmd, out, timeout_s, f"quantizing {model}")
            missing = [k for k in ("quantize_seconds", "peak_rss_mb") if k not in data]
            if missing:
                notes.append(f"{model}: the CLI JSON lacks {missing}; using the outside measurement only")
            # ru_maxrss is KiB on Linux
            child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            rows.append({
                "model": model, "bits": b, "seconds": data.get("quantize_seconds"),
                "ppl": data.get("ppl"), "peak_rss_mb": data.get("peak_rss_mb"), "phases": phase_profile(data),
                "wall_s_outside": wall, "child_max_rss_mb": child_rss, "cli_json": data,
            })
    return rows, notes


QUANT_COLUMNS = (
    ("model", "model", ""), ("bits", "bits", ""), ("seconds", "search s", ".1f"), ("ppl", "ppl", ".3f"),
    ("peak_rss_mb", "peak RSS MiB", ".0f"),
    ("wall_s_outside", "wall s (outside)", ".1f"), ("child_max_rss_mb", "child max RSS MiB", ".0f"),
)


def profile_rows(rows: Sequence[dict]) -> list[dict]:
    """The phase profile of every run as table rows: ``{phase, <label>: seconds, ...}``."""
    labels = [f"{r['model'].split('/')[-1]} w{r['bits']}" for r in rows]
    names: list[str] = []
    for r in rows:
        names += [n for n in r["phases"] if n not in names]
    return [{"phase": n, **{lab: r["phases"].get(n) for lab, r in zip(labels, rows)}} for n in names]
