"""AWQ search speed on SmolLM2-135M (issue 18): where the seconds of the search go, before and after the
exact shortcuts, and the perplexity cost of every approximation tried.

Reads the CLI JSONs (``python -m awq_ext quantize --method awq --w-bit B --json PATH ...``) listed in
``benchmarks/results/search_speed/runs.json`` (label, bits, file, what was measured and how) and writes
``benchmarks/results/search_speed/README.md``: one table of configurations (search seconds, Protocol P
perplexity) and one phase profile (seconds summed over the 30 blocks).

    python benchmarks/search_speed_results.py
"""
from __future__ import annotations

import json
from pathlib import Path

from awq_ext.bench.quant_cost import phase_profile

OUT = Path(__file__).parent / "results" / "search_speed"


def clean_block_seconds(run: dict, skip: int) -> float | None:
    """Search seconds extrapolated from the blocks after the first ``skip`` (those ran on a shared CPU)."""
    blocks = run.get("blocks") or []
    rest = [b["seconds"] for b in blocks[skip:]]
    return sum(rest) / len(rest) * len(blocks) if rest else None


def changed_choices(run: dict, reference: dict) -> str:
    """How many scaling groups chose another (alpha, beta) than the reference run."""
    diff = tot = 0
    for b, r in zip(run["blocks"], reference["blocks"]):
        for g, h in zip(b["groups"], r["groups"]):
            if "alpha" in g and "alpha" in h:
                tot += 1
                diff += (g["alpha"], g["beta"]) != (h["alpha"], h["beta"])
    return f"{diff}/{tot}"


def main() -> None:
    runs = json.loads((OUT / "runs.json").read_text())
    data = {r["file"]: json.loads((OUT / r["file"]).read_text()) for r in runs}
    refs = {r["bits"]: data[r["file"]] for r in runs if r.get("reference")}
    lines = [
        "# AWQ search speed: SmolLM2-135M-Instruct, 16 x 512 calibration, g64, 2 CPU cores",
        "",
        "Written by `python benchmarks/search_speed_results.py` from the CLI JSONs in this folder; every run is",
        "`python -m awq_ext quantize --method awq --w-bit B --json ...` with the arguments shown, evaluated on",
        "Protocol P (16 x 1024 pydoc windows). `search s` is the CLI's `quantize_seconds` (capture, search,",
        "clip, quantize, propagate). `changed` counts scaling groups whose chosen (alpha, beta) differs from the",
        "full exact search at the same bit width.",
        "",
        "| configuration | args | bits | search s | ppl | changed | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        d = data[r["file"]]
        sec = f"{d['quantize_seconds']:.0f}"
        if r.get("clean_after") is not None:
            sec += f" ({clean_block_seconds(d, r['clean_after']):.0f} from clean blocks)"
        ch = changed_choices(d, refs[r["bits"]]) if r["bits"] in refs and not r.get("reference") else "-"
        lines.append(f"| {r['label']} | `{r['args'] or '(defaults)'}` | W{r['bits']} | {sec} | {d['ppl']:.3f} | {ch} | "
                     f"{r.get('note', '')} |")
    prof = [(r, phase_profile(data[r["file"]])) for r in runs if r.get("profile")]
    names: list[str] = []
    for _, p in prof:
        names += [n for n in p if n not in names]
    lines += ["", "## Where the seconds go (summed over the 30 blocks)", "",
              "| phase | " + " | ".join(f"{r['label']} W{r['bits']}" for r, _ in prof) + " |",
              "|---|" + "---|" * len(prof)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{p[n]:.1f}" if n in p else "-" for _, p in prof) + " |")
    lines.append("| **total** | " + " | ".join(f"{sum(p.values()):.1f}" for _, p in prof) + " |")
    notes = (OUT / "NOTES.md").read_text() if (OUT / "NOTES.md").is_file() else ""
    (OUT / "README.md").write_text("\n".join(lines) + "\n\n" + notes)
    print((OUT / "README.md").read_text())


if __name__ == "__main__":
    main()
