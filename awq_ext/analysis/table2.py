"""Table 2: heuristic scaling of the salient 1 % (x1.25 / 1.5 / 2 / 4) vs searched scales.

Searched variants use the AWQ pipeline with ``AWQConfig.scale_mode``: ``weight`` (s_W only),
``act`` (s_X only), ``duo`` (s_X^a · s_W^-(1-a), "both"), each without clipping, then ``duo`` + clip
(= AWQ). All at INT3 g64 with RTN after the transform.
"""
from __future__ import annotations

import time

from awq_ext.analysis.runner import Runner, RunSettings, TableResult, fmt_ppl, fmt_seconds, md_table, quant_cfg
from awq_ext.analysis.salient import rtn_all, scale_salient
from awq_ext.calibrate import SearchRecord
from awq_ext.config import AWQConfig
from awq_ext.quant.quantizer import QuantSpec

PAPER = ("Scaling the 1 % salient channels by s > 1 helps (best near x2: OPT-6.7B 43.2 -> 14.1) but gets worse "
         "for large s; searching s works better, s_X matters most (s_X only 11.71 vs s_W only 14.46 on "
         "OPT-6.7B), adding s_W gives a marginal change, and +clip sometimes helps further.")
FACTORS = (1.25, 1.5, 2.0, 4.0)
SEARCHED = (("s_W only", "weight", False), ("s_X only", "act", False), ("s_X & s_W", "duo", False),
            ("+clip (AWQ)", "duo", True))


def run(runner: Runner, s: RunSettings, bits: int = 3, group: int = 64, frac: float = 0.01,
        factors: tuple[float, ...] = FACTORS) -> TableResult:
    t0 = time.time()
    spec = QuantSpec(bits, group)
    rows = [runner.row("table2", "fp32", {"method": "fp32"}, s, lambda: {}),
            runner.row("table2", "rtn", {"method": "rtn", "bits": bits, "group_size": group}, s,
                       lambda: rtn_all(runner.model, spec))]
    for f in factors:
        rows.append(runner.row("table2", f"x{f}", {"method": "heuristic", "factor": f, "frac": frac, "bits": bits,
                                                    "group_size": group}, s,
                               lambda f=f: scale_salient(runner.model, runner.float_activation_means(s), spec, f, frac)))
    records: dict[str, SearchRecord] = {}
    for label, mode, clip in SEARCHED:
        qc = quant_cfg("awq", bits, group, s, awq=AWQConfig(scale_mode=mode, clip=clip))
        rows.append(runner.row("table2", label, {"method": "awq", "scale_mode": mode, "clip": clip, "bits": bits,
                                                 "group_size": group}, s, lambda qc=qc: runner.quantize(qc, s)[1]))
        path = runner.record_path(qc, s)
        if path is not None and path.is_file():  # absent when the row came from a committed cache alone
            records[label] = SearchRecord.load(path)
    header = ["FP32", f"RTN W{bits} g{group}"] + [f"x{f:g}" for f in factors] + [lab for lab, _, _ in SEARCHED]
    body = [["ppl", *[fmt_ppl(r["ppl"]) for r in rows]],
            ["search s", "-", "-", *["-"] * len(factors),
             *[fmt_seconds(r) for r in rows[-len(SEARCHED):]]]]
    notes = [
        f"Heuristic: the {frac * 100:g} % input channels with the largest mean |x| (float model, calibration set) "
        "of each AWQ scaling group are multiplied by the factor, folded exactly into the previous op, then RTN; "
        "o_proj (not scalable under GQA) is plain RTN in every column, as in AWQ.",
        "Searched: AWQ's grid search (20 points) over the named family, minimising the inspected module's "
        "output MSE on the calibration set; '+clip' adds the clip search (= the full AWQ).",
    ]
    md = md_table(["", *header], body)
    losses = {label: search_loss_ratios(r) for label, r in records.items()}
    by_kind = {label: _by_kind(v) for label, v in losses.items()}
    kinds = list(dict.fromkeys(k for v in by_kind.values() for k in v))
    if losses:
        md += ("\n\n**Scale-search loss on the calibration data** (the searched output MSE of each scaling group "
               "divided by its MSE with s = 1, mean over blocks; lower = the family fits better; columns name the op "
               "each scale is folded into)\n\n")
        md += md_table(["searched family", *kinds],
                       [[label, *[f"{sum(v[k]) / len(v[k]):.3f}" if v.get(k) else "-" for k in kinds]]
                        for label, v in by_kind.items()])
    extra = {"search_loss_ratio": losses}
    if "s_X only" in losses and "s_X & s_W" in losses:
        a, d = losses["s_X only"], losses["s_X & s_W"]
        both = [op for op in a if op in d]  # the same scaling groups, compared one by one
        extra["duo_below_act"] = {k: [sum(d[op] < a[op] for op in both if _kind(op) == k),
                                      sum(_kind(op) == k for op in both)] for k in kinds}
        notes.append("Blocks where 's_X & s_W' reached a lower search loss than 's_X only': " + ", ".join(
            f"{k} {n}/{tot}" for k, (n, tot) in extra["duo_below_act"].items())
            + ". The 's_X & s_W' grid ties the exponents (s_X^a · s_W^-(1-a)), so it does not contain the "
            "'s_X only' candidates.")
    return TableResult("table2", f"Table 2: heuristic vs searched scaling (INT{bits} g{group})", PAPER,
                       {**s.__dict__, "model": runner.model_label, "bits": bits, "group_size": group}, rows,
                       md, notes, time.time() - t0, extra=extra)


def search_loss_ratios(record: SearchRecord) -> dict[str, float]:
    """Searched loss / identity (s = 1) loss of each scaling group, keyed by the op its scale folds into
    (e.g. ``model.layers.3.input_layernorm``); groups with no identity loss (dead inputs) are left out."""
    return {op: e.loss / e.identity_loss for op, e in record.scales.items() if e.identity_loss > 0}


def _kind(op: str) -> str:
    return op.rsplit(".", 1)[-1]


def _by_kind(ratios: dict[str, float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for op, r in ratios.items():
        out.setdefault(_kind(op), []).append(r)
    return out
