"""Quantization cost: wall time and peak memory of the AWQ search, one model at a time.

Each model runs in a fresh subprocess of the project CLI (``python -m awq_ext quantize --method awq
--model M --json PATH``), so its peak RSS is its own and not this process's. The CLI's JSON gives
``seconds`` and ``peak_rss_mb``; we also measure the subprocess from outside (wall clock and the
children's max RSS from ``getrusage``) as a cross-check that needs nothing from the CLI.
"""
from __future__ import annotations

import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from awq_ext.errors import AWQInputError

DEFAULT_CLI = (sys.executable, "-m", "awq_ext")


def run_quant_cost(models: Sequence[str], extra_args: str = "", cli: Sequence[str] = DEFAULT_CLI,
                   timeout_s: float | None = None, log: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """One row per model: ``{model, seconds, peak_rss_mb, wall_s_outside, child_max_rss_mb, cli_json}``.

    Raises :class:`AWQInputError` when a run fails (its stderr tail is in the message) or writes no JSON.
    ``child_max_rss_mb`` is the max over all children so far (``getrusage`` cannot isolate one child), so
    it is exact for the first model and an upper bound afterwards.
    """
    if not models:
        raise AWQInputError("quant-cost needs at least one model: --models NAME_OR_PATH[,NAME...]")
    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="awq_bench_qc_") as tmp:
        for i, model in enumerate(models):
            out = Path(tmp) / f"run{i}.json"
            # --eval none: time the search itself, not a perplexity evaluation after it
            cmd = [*cli, "quantize", "--method", "awq", "--model", model, "--eval", "none", "--json", str(out),
                   *shlex.split(extra_args)]
            log(f"  quant-cost: {shlex.join(cmd)}")
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise AWQInputError(f"quantizing {model} took longer than {timeout_s} s; raise --timeout") from exc
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
                raise AWQInputError(f"`{shlex.join(cmd)}` exited with {proc.returncode}:\n{tail}")
            if not out.is_file():
                raise AWQInputError(f"`{shlex.join(cmd)}` succeeded but wrote no JSON to {out}; does the CLI "
                                    "support --json?")
            data = json.loads(out.read_text())
            missing = [k for k in ("seconds", "peak_rss_mb") if k not in data]
            if missing:
                notes.append(f"{model}: the CLI JSON lacks {missing}; using the outside measurement only")
            # ru_maxrss is KiB on Linux
            child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            rows.append({
                "model": model, "seconds": data.get("quantize_seconds", data.get("seconds")), "peak_rss_mb": data.get("peak_rss_mb"),
                "wall_s_outside": wall, "child_max_rss_mb": child_rss, "cli_json": data,
            })
    return rows, notes


QUANT_COLUMNS = (
    ("model", "model", ""), ("seconds", "search s", ".1f"), ("peak_rss_mb", "peak RSS MiB", ".0f"),
    ("wall_s_outside", "wall s (outside)", ".1f"), ("child_max_rss_mb", "child max RSS MiB", ".0f"),
)
