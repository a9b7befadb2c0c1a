"""Tables 3-5: RTN vs GPTQ vs GPTQ-R vs AWQ at INT4 and INT3 (g64 on SmolLM2: 576 % 128 != 0)."""
from __future__ import annotations

import time

from awq_ext.analysis.runner import Runner, RunSettings, TableResult, fmt_ppl, fmt_seconds, md_table, quant_cfg

PAPER = ("AWQ beats RTN everywhere and matches or beats GPTQ and GPTQ-R (act-order) at INT3-g128 and "
         "INT4-g128 on LLaMA / Llama-2 (e.g. LLaMA-7B INT3: RTN 7.01, GPTQ 8.81, GPTQ-R 6.53, AWQ 6.35).")
METHODS = ("rtn", "gptq", "gptq-r", "awq", "awq+gptq")
LABELS = {"rtn": "RTN", "gptq": "GPTQ", "gptq-r": "GPTQ-R (act-order)", "awq": "AWQ (scale + clip)",
          "awq+gptq": "AWQ + GPTQ"}


def run(runner: Runner, s: RunSettings, bits: tuple[int, ...] = (4, 3), group: int = 64) -> TableResult:
    t0 = time.time()
    rows = [runner.row("table5", "fp32", {"method": "fp32"}, s, lambda: {})]
    for b in bits:
        for m in METHODS:
            cfg = quant_cfg(m, b, group, s)

            def apply(cfg=cfg):
                res, info = runner.quantize(cfg, s)
                return info

            rows.append(runner.row("table5", f"{m} w{b}", {"method": m, "bits": b, "group_size": group}, s, apply))
    by = {(r["config"].get("method"), r["config"].get("bits")): r for r in rows}
    header = ["method"] + [f"W{b} g{group} ppl" for b in bits] + [f"W{b} quantize s" for b in bits]
    body = [["FP32", *[fmt_ppl(by[("fp32", None)]["ppl"])] * len(bits), *["-"] * len(bits)]]
    for m in METHODS:
        body.append([LABELS[m], *[fmt_ppl(by[(m, b)]["ppl"]) for b in bits],
                     *[_qsec(by[(m, b)]) for b in bits]])
    notes = [
        "Quantize time is the calibration/search wall time on the shared 2-core CPU (RTN: no calibration); "
        "for an AWQ row replayed from the search cache the original search time is shown.",
        "GPTQ: the reference algorithm (min-max group ranges; the CLI defaults to the MSE observer), damp 0.01, "
        "block 128, dynamic groups; GPTQ-R adds act-order (descending Hessian diagonal) "
        "and exports g_idx.",
        "AWQ + GPTQ: AWQ's scales and clipping (the AWQ row's search, replayed when cached), then natural-order "
        "GPTQ on the transformed weights; its time is the AWQ search plus the GPTQ pass.",
    ]
    return TableResult("table5", f"Tables 3-5: RTN vs GPTQ vs GPTQ-R vs AWQ (INT4/INT3, g{group})", PAPER,
                       {**s.__dict__, "model": runner.model_label, "group_size": group}, rows,
                       md_table(header, body), notes, time.time() - t0)


_qsec = fmt_seconds  # a table cell: search (+ GPTQ pass) seconds, '-' when not run
