"""Benchmark output: stdout tables, JSON with the environment, PNG plots, DESIGN §6 target checks."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from awq_ext.bench.ceilings import bandwidth_limit_ratio

_REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def kernel_source_hash(root: Path | None = None) -> str | None:
    """sha256 over the sorted paths and contents of ``csrc/`` (which kernel source produced the figures)."""
    root = root or _REPO / "csrc"
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def environment(device: torch.device) -> dict[str, Any]:
    """Who measured what: GPU, driver, torch, CUDA, triton, commit (with a dirty flag), kernel hash, date."""
    try:
        import triton
        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "driver": _driver_version() if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "kernel_source_sha256": kernel_source_hash(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(sm=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                   gpu_memory_gib=round(p.total_memory / 2**30, 1), l2_mib=round(p.L2_cache_size / 2**20, 1))
    return env


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): an interrupted run never leaves half a JSON behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, default=_json_default, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Fixed-width text table. ``columns``: (key, header, format spec such as ``".3f"``); None prints ``-``."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        line = []
        for key, _, fmt in columns:
            v = r.get(key)
            line.append("-" if v is None else format(v, fmt) if fmt else str(v))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    out = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


KERNEL_COLUMNS = (
    ("shape", "shape", ""), ("m", "M", "d"), ("method", "method", ""), ("median_ms", "ms", ".4f"),
    ("speedup_vs_dense", "x dense", ".2f"), ("gbps", "GB/s", ".0f"), ("pct_copy_bw", "%copy", ".0f"),
    ("tflops", "TFLOP/s", ".1f"), ("pct_gemm_peak", "%gemm", ".0f"), ("rel_err", "rel err", ".1e"),
    ("ok", "ok", ""),
)


def kernel_table(rows: Sequence[dict]) -> str:
    return format_table(sorted(rows, key=lambda r: (r["shape"], r["m"], r["method"])), KERNEL_COLUMNS)


# DESIGN §6 kernel targets: (description, check) evaluated on measured rows of the headline shape.
def check_targets(rows: Sequence[dict], headline_shape: str) -> list[dict]:
    """Pass/fail of the §6 kernel targets from measured rows (empty when the AWQ kernel did not run)."""
    t = {(r["shape"], r["m"], r["method"]): r for r in rows}
    if not any(meth == "awq" for (_, _, meth) in t):
        return []
    out: list[dict] = []

    def add(figure: str, target: float, measured: float | None) -> None:
        out.append({"figure": figure, "target": target, "measured": measured,
                    "pass": measured is not None and measured >= target})

    for m, target in ((1, 3.3), (16, 3.0), (64, 1.8)):
        r = t.get((headline_shape, m, "awq"))
        add(f"awq vs dense, {headline_shape}, M={m}", target, r and r["speedup_vs_dense"])
    ratios = [r["speedup_vs_dense"] for r in rows if r["method"] == "awq" and r.get("speedup_vs_dense")]
    add("awq vs dense, worst over all shapes and M", 0.95, min(ratios) if ratios else None)
    for other, target, mmax in (("gptq_r", 1.5, 16), ("torch_int4", 1.0, 64)):
        rs = [t[(s, m, other)]["median_ms"] / r["median_ms"] for (s, m, meth), r in t.items()
              if meth == "awq" and m <= mmax and (s, m, other) in t]
        add(f"awq vs {other}, worst at M<={mmax}", target, min(rs) if rs else None)
    return out


def targets_table(checks: Sequence[dict]) -> str:
    return format_table(checks, (("figure", "figure", ""), ("target", "target", ".2f"),
                                 ("measured", "measured", ".2f"), ("pass", "pass", "")))


def plot_speedups(rows: Sequence[dict], out_dir: str | os.PathLike, group_size: int = 128) -> list[Path]:
    """One PNG per (shape, dtype): speedup over dense vs M for each method, with the 1x line and the
    ``16 / bits_per_weight`` bandwidth limit (3.76x at G=128). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    limit = bandwidth_limit_ratio(4, group_size)
    paths: list[Path] = []
    for shape, dtype in sorted({(r["shape"], r["dtype"]) for r in rows}):
        sel = [r for r in rows if r["shape"] == shape and r["dtype"] == dtype and r.get("speedup_vs_dense")]
        methods = sorted({r["method"] for r in sel} - {"dense"})
        if not methods:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for meth in methods:
            pts = sorted((r["m"], r["speedup_vs_dense"]) for r in sel if r["method"] == meth)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=meth)
        ax.axhline(limit, color="red", linestyle="--", label=f"bandwidth limit {limit:.2f}x (16/{16 / limit:.2f} bits)")
        ax.axhline(1.0, color="gray", linestyle=":", label="dense (1x)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (tokens in the batch)")
        ax.set_ylabel("speedup over dense torch.matmul")
        r0 = sel[0]
        ax.set_title(f"{shape}  K={r0['k']} N={r0['n']}  {dtype}  G={group_size}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"speedup_{shape.replace('.', '_')}_{dtype}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths
