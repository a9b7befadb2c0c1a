"""Calibration budget: how the number and length of calibration sequences trade AWQ search time for ppl.

AWQ at INT3 g64 (where calibration matters most) over a grid of ``n_samples x seqlen``; each row reports
the calibration tokens, the search wall time, the process's peak RSS and the perplexity. Rows at
``seqlen`` 512 share their search records with Figure 7's AWQ size sweep (same tokens, same config), so
running this experiment first makes Figure 7's AWQ column a replay. The times are only meaningful on an
otherwise idle machine: each row stores the 1-minute load average measured after its search.
"""
from __future__ import annotations

import dataclasses
import os
import time

from awq_ext.analysis.runner import Runner, RunSettings, TableResult, fmt_ppl, md_table, quant_cfg, search_seconds

PAPER = ("AWQ only measures average activation magnitudes, so a small calibration set suffices (the paper "
         "uses 128 x 512 Pile tokens and shows 16 sequences already give good INT3 perplexity, Fig. 7a); the "
         "search cost grows linearly with the calibration tokens.")
# (n_samples, seqlen, loss_samples): loss_samples = calibration sequences in the scale-search loss (None = all;
# the activation statistics always use all n_samples).
GRID: tuple[tuple[int, int, int | None], ...] = (
    (16, 512, 4), (16, 512, None), (4, 512, None), (8, 256, None), (8, 512, None))


def run(runner: Runner, s: RunSettings, bits: int = 3, group: int = 64,
        grid: tuple[tuple[int, int, int | None], ...] = GRID) -> TableResult:
    t0 = time.time()
    rows = [runner.row("calib_budget", "fp32", {"method": "fp32"}, s, lambda: {})]
    for n, seqlen, loss_samples in grid:
        sn = dataclasses.replace(s, n_samples=n, seqlen=seqlen, loss_samples=loss_samples)
        qc = quant_cfg("awq", bits, group, sn)

        def apply(qc=qc, sn=sn):
            info = runner.quantize(qc, sn)[1]
            info["loadavg_1min_after_search"] = os.getloadavg()[0]
            return info

        cfg = {"method": "awq", "bits": bits, "group_size": group, "n_samples": n, "seqlen": seqlen}
        label = f"awq {n}x{seqlen}"
        if loss_samples is not None:
            cfg["loss_samples"] = loss_samples
            label += f" loss{loss_samples}"
        rows.append(runner.row("calib_budget", label, cfg, s, apply))

    ref = next((r for r in rows[1:] if r["config"]["n_samples"] == s.n_samples and r["config"]["seqlen"] == s.seqlen
                and "loss_samples" not in r["config"] and r.get("ppl") is not None), None)
    body = []
    for r in rows[1:]:
        c, sec, p = r["config"], search_seconds(r), r.get("ppl")
        tokens = c["n_samples"] * c["seqlen"]
        delta = "-" if ref is None or p is None else f"{p - ref['ppl']:+.2f}"
        shape = f"{c['n_samples']} x {c['seqlen']}"
        if "loss_samples" in c:
            shape += f" (loss on {c['loss_samples']})"
        body.append([shape, str(tokens), "-" if sec is None else f"{sec:.0f}",
                     "-" if sec is None else f"{sec / tokens * 1000:.1f}", fmt_ppl(p), delta,
                     "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb'] / 1024:.2f}"])
    header = ["n_samples x seqlen", "tokens", "search s", "s per 1k tokens", f"W{bits} g{group} ppl",
              f"vs {s.n_samples} x {s.seqlen}", "process peak RSS GiB"]
    notes = [f"FP32 ppl on the same windows: {fmt_ppl(rows[0].get('ppl'))}.",
             "Search = AWQ scale + clip search over all blocks (2 torch threads); a row whose search was replayed "
             "from the cache (made by an earlier experiment with the same tokens and configuration) shows the "
             "time of that search.",
             "'loss on k': the scale-search loss runs on the first k calibration sequences (`--loss-samples k`); "
             "the activation statistics and the clip search still use all of them.",
             "Peak RSS is the whole process's high-water mark (model, pristine copy, evaluation included), an "
             "upper bound on the search's own memory."]
    return TableResult("calib_budget", f"Calibration budget: n_samples x seqlen vs search time and ppl "
                       f"(AWQ INT{bits} g{group})", PAPER,
                       {**s.__dict__, "model": runner.model_label, "bits": bits, "group_size": group,
                        "grid": [list(g) for g in grid]}, rows, md_table(header, body), notes, time.time() - t0)
