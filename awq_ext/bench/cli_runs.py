"""One project-CLI command in a fresh process, for benchmarks that measure a whole run (its peak RSS is
the child's own): its JSON and the wall seconds seen from outside."""
from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from awq_ext.errors import AWQInputError


def run_cli_json(cmd: Sequence[str], json_path: Path, timeout_s: float | None, what: str) -> tuple[dict[str, Any], float]:
    """Run ``cmd`` (which writes ``--json json_path``); ``what`` names the run in errors."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise AWQInputError(f"{what} took longer than {timeout_s} s; raise --timeout") from exc
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise AWQInputError(f"`{shlex.join(cmd)}` exited with {proc.returncode}:\n{tail}")
    if not json_path.is_file():
        raise AWQInputError(f"`{shlex.join(cmd)}` succeeded but wrote no JSON to {json_path}; does the CLI "
                            "support --json?")
    return json.loads(json_path.read_text()), wall
