"""Table 8: no-group vs grouped INT3 - RTN / 1 % salient channels kept in FP / AWQ."""
from __future__ import annotations

import time

from awq_ext.analysis.runner import Runner, RunSettings, TableResult, fmt_ppl, md_table, quant_cfg
from awq_ext.analysis.salient import keep_salient
from awq_ext.config import AWQConfig
from awq_ext.quant.quantizer import QuantSpec

PAPER = ("Grouped INT3 (g128): AWQ matches keeping 1 % salient weights in FP16 (OPT-6.7B 12.99 vs 13.02); "
         "without groups AWQ (18.11) falls clearly behind 1 % FP16 (14.67) - one scale per input channel can "
         "protect only so much - yet grouped quantization is far better than no-group.")
# "awq-noclip": AWQ's scale search alone, which separates what the per-channel scales do from what the
# clip search does (without groups one outlier sets the step of a whole row, and clipping removes it).
METHODS = ("rtn", "keep", "awq", "awq-noclip")


def run(runner: Runner, s: RunSettings, bits: int = 3, groups: tuple[int, ...] = (64, -1),
        frac: float = 0.01) -> TableResult:
    t0 = time.time()
    rows = [runner.row("table8", "fp32", {"method": "fp32"}, s, lambda: {})]
    by: dict = {}
    for g in groups:
        for m in METHODS:
            cfg = {"method": m, "bits": bits, "group_size": g}
            if m == "keep":
                cfg.update(criterion="activation", frac=frac)
                fn = lambda g=g: keep_salient(runner.model, runner.float_activation_means(s), QuantSpec(bits, g),
                                              "activation", frac)
            elif m == "awq-noclip":
                qc = quant_cfg("awq", bits, g, s, awq=AWQConfig(clip=False))
                fn = lambda qc=qc: runner.quantize(qc, s)[1]
            else:
                qc = quant_cfg(m, bits, g, s)
                fn = lambda qc=qc: runner.quantize(qc, s)[1]
            r = runner.row("table8", f"{m} g{g}", cfg, s, fn)
            rows.append(r)
            by[(m, g)] = r
    gname = {g: ("no group" if g == -1 else f"g{g}") for g in groups}
    labels = {"rtn": "RTN", "keep": f"{frac * 100:g}% FP", "awq": "AWQ", "awq-noclip": "AWQ scale only"}
    header = ["FP32"] + [f"INT{bits} {gname[g]} {labels[m]}" for g in groups for m in METHODS]
    body = [[fmt_ppl(rows[0]["ppl"])] + [fmt_ppl(by[(m, g)]["ppl"]) for g in groups for m in METHODS]]
    notes = [f"g64 stands for the paper's g128 (576 % 128 != 0). 1 % FP: salient channels by mean |x| on the "
             "float model, excluded from the group min/max, kept exact.",
             "AWQ no-group: scale search with per-channel quantization in the loss, clip search per output row.",
             "AWQ scale only: the same scale search without the clip search (with Table 2's settings it "
             "replays Table 2's 's_X & s_W' search record)."]
    return TableResult("table8", "Table 8: grouped vs no-group INT3 - RTN / 1% FP / AWQ", PAPER,
                       {**s.__dict__, "model": runner.model_label, "bits": bits, "groups": list(groups)}, rows,
                       md_table(header, body), notes, time.time() - t0)
