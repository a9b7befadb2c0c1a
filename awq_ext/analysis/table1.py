"""Table 1: keep 0.1 / 1 / 3 % of input channels in FP (by activation, weight norm, random); RTN the rest."""
from __future__ import annotations

import time

from awq_ext.analysis.runner import Runner, RunSettings, TableResult, fmt_ppl, md_table
from awq_ext.analysis.salient import keep_salient, rtn_all
from awq_ext.quant.mixed import CRITERIA
from awq_ext.quant.quantizer import QuantSpec

PAPER = ("INT3-g128 RTN with 0.1-1 % of channels kept in FP16: selecting them by activation magnitude recovers "
         "most of the loss (OPT-6.7B: RTN 43.2 -> 13.0 at 1 %), selecting by weight norm or at random barely "
         "helps (~38-46).")
FRACS = (0.001, 0.01, 0.03)


def run(runner: Runner, s: RunSettings, bits: int = 3, group: int = 64, fracs: tuple[float, ...] = FRACS,
        criteria: tuple[str, ...] = CRITERIA) -> TableResult:
    t0 = time.time()
    spec = QuantSpec(bits, group)
    rows = [runner.row("table1", "fp32", {"method": "fp32"}, s, lambda: {})]
    rows.append(runner.row("table1", "rtn", {"method": "rtn", "bits": bits, "group_size": group}, s,
                           lambda: rtn_all(runner.model, spec)))
    for c in criteria:
        for f in fracs:
            cfg = {"method": "keep", "criterion": c, "frac": f, "bits": bits, "group_size": group}
            rows.append(runner.row("table1", f"keep {c} {f}", cfg, s,
                                   lambda c=c, f=f: keep_salient(
                                       runner.model, runner.float_activation_means(s) if c == "activation" else {},
                                       spec, c, f)))
    by = {(r["config"].get("criterion"), r["config"].get("frac")): r for r in rows}
    header = ["FP32", f"RTN W{bits} g{group}"] + [f"{c} {f * 100:g}%" for c in criteria for f in fracs]
    body = [[fmt_ppl(rows[0]["ppl"]), fmt_ppl(rows[1]["ppl"])] + [fmt_ppl(by[(c, f)]["ppl"]) for c in criteria
                                                                   for f in fracs]]
    notes = [
        f"INT{bits} g{group} (g128 does not divide SmolLM2's 576 channels). Kept channels per linear: "
        "max(1, round(frac·K)), K = 576 or 1536; they are excluded from the group min/max and stay exact.",
        "Activation statistics: mean |x| per input channel of each linear on the float model over the "
        f"calibration set ({s.n_samples} x {s.seqlen} tokens of {s.calib}).",
        "Weight criterion: L2 norm of the weight column; random: seeded per layer.",
    ]
    return TableResult("table1", "Table 1: keeping salient channels in FP (INT3 RTN)", PAPER,
                       {**s.__dict__, "model": runner.model_label, "bits": bits, "group_size": group}, rows,
                       md_table(header, body), notes, time.time() - t0)

