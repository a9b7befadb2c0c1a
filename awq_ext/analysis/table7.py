"""Table 7: INT2 g64 - RTN vs GPTQ vs AWQ vs AWQ+GPTQ (AWQ's search replayed, then GPTQ)."""
from __future__ import annotations

import time

from awq_ext.analysis.runner import Runner, RunSettings, TableResult, fmt_ppl, fmt_seconds, md_table, quant_cfg

PAPER = ("At INT2-g64 RTN collapses (ppl 1e4-1e5), GPTQ is usable, and AWQ+GPTQ is best on every OPT size "
         "(OPT-6.7B: RTN 22290, GPTQ 19.04, AWQ+GPTQ 17.34): AWQ is orthogonal to GPTQ.")
METHODS = ("rtn", "gptq", "awq", "awq+gptq")
LABELS = {"rtn": "RTN", "gptq": "GPTQ", "awq": "AWQ (scale + clip, RTN)", "awq+gptq": "AWQ + GPTQ"}


def run(runner: Runner, s: RunSettings, bits: int = 2, group: int = 64) -> TableResult:
    t0 = time.time()
    rows = [runner.row("table7", "fp32", {"method": "fp32"}, s, lambda: {})]
    for m in METHODS:  # "awq" before "awq+gptq": the latter replays the former's search record
        cfg = quant_cfg(m, bits, group, s)
        rows.append(runner.row("table7", f"{m} w{bits}", {"method": m, "bits": bits, "group_size": group}, s,
                               lambda cfg=cfg: runner.quantize(cfg, s)[1]))
    body = [["FP32", fmt_ppl(rows[0]["ppl"]), "-"]]
    for m, r in zip(METHODS, rows[1:]):
        body.append([LABELS[m], fmt_ppl(r["ppl"]), fmt_seconds(r)])
    notes = [
        "AWQ + GPTQ follows the reference: AWQ's scales and clipping are searched (with RTN in the loss) and "
        "folded, then GPTQ quantizes the transformed weights from the transformed inputs; its time is the "
        "AWQ search plus the GPTQ pass.",
        "GPTQ: damp 0.01, block 128, natural order, dynamic groups.",
    ]
    return TableResult("table7", f"Table 7: INT2 g{group} - AWQ is orthogonal to GPTQ", PAPER,
                       {**s.__dict__, "model": runner.model_label, "bits": bits, "group_size": group}, rows,
                       md_table(["method", f"W{bits} g{group} ppl", "quantize s"], body), notes, time.time() - t0)
