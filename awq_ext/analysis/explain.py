"""Why one method beats another on this model: per-block output error and activation-outlier statistics.

For each method (RTN, AWQ and GPTQ at W3 g64 by default: the width where the methods differ most) every decoder block of the quantized model is fed
the *float* model's block inputs and its output compared with the float block's:
``rel_error = ||block_q(x) - block(x)||^2 / ||block(x)||^2``, on three texts: calibration sequences,
held-out pydoc (evaluation windows) and the license corpus (never used for calibration here). A method
that fits the calibration text much better than held-out text overfits; one with lower held-out error
in most blocks is simply the better quantizer for this model.

The measurement is a :attr:`Runner.probe`: a Table 5 run with the probe attached stores it in its rows,
and this experiment reuses those rows instead of quantizing again.

Activation statistics: per linear, the share of the summed mean |x| carried by its top 1 % input
channels (uniform = 1 %) - how concentrated the salient channels AWQ protects are.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from awq_ext.analysis.fig7 import second_source
from awq_ext.analysis.runner import Runner, RunSettings, TableResult, md_table, quant_cfg
from awq_ext.calibrate.capture import capture_block_inputs, run_chunked
from awq_ext.models import get_blocks, get_spec

PAPER = ("AWQ needs no regression and so 'does not overfit the calibration set'; GPTQ reconstructs each layer "
         "on the calibration data (paper Sec. 3.4). The paper reports AWQ <= GPTQ at INT3/INT4-g128 on "
         "LLaMA-7B..70B.")


@torch.no_grad()
def _float_io(runner: Runner, ids: torch.Tensor, chunk: int):
    """Float block inputs ``xs[i]`` (``xs[i+1]`` = block i's output) and the blocks' keyword inputs."""
    runner.restore()
    blocks = get_blocks(runner.model, get_spec(runner.model))
    x, kw = capture_block_inputs(runner.model, blocks, ids)
    xs = [x]
    for b in blocks:
        xs.append(run_chunked(b, xs[-1], kw, chunk))
    return xs, kw


def make_probe(runner: Runner, s: RunSettings, windows: int = 1) -> Callable[[Runner], dict]:
    """Capture the float model's block inputs on the three texts once; return the per-block error probe."""
    lic, _ = second_source(runner)
    texts = {"calibration": runner.calib_ids(s)[: 2 * windows], "pydoc": runner.eval_windows(s.eval, s)[:windows],
             "licenses": runner.eval_windows(lic, s)[:windows]}
    ios = {d: _float_io(runner, ids, s.chunk_size) for d, ids in texts.items()}
    runner.restore()

    @torch.no_grad()
    def probe(r: Runner) -> dict:
        blocks = get_blocks(r.model, get_spec(r.model))
        out = {}
        for d, (xs, kw) in ios.items():
            errs = []
            for i, b in enumerate(blocks):
                yq = run_chunked(b, xs[i], kw, s.chunk_size)
                errs.append(float((yq - xs[i + 1]).pow(2).mean() / xs[i + 1].pow(2).mean()))
            out[d] = errs
        return {"block_rel_error": out, "tokens": {d: int(t.numel()) for d, t in texts.items()}}

    return probe


def outlier_share(act: dict[str, torch.Tensor], frac: float = 0.01) -> dict[str, float]:
    """Mean over blocks, per linear type, of the top-``frac`` channels' share of summed mean |x|."""
    per: dict[str, list[float]] = {}
    for name, a in act.items():
        k = max(1, round(frac * a.numel()))
        share = float(torch.topk(a, k).values.sum() / a.sum())
        per.setdefault(name.split(".", 3)[-1], []).append(share)
    return {t: sum(v) / len(v) for t, v in sorted(per.items())}


def run(runner: Runner, s: RunSettings, bits: tuple[int, ...] = (3,), group: int = 64,
        methods: tuple[str, ...] = ("rtn", "awq", "gptq"), windows: int = 1, act_samples: int = 4) -> TableResult:
    t0 = time.time()
    probe = None
    rows = []
    for b in bits:
        for m in methods:
            cfg = {"method": m, "bits": b, "group_size": group}
            cached = runner.cached_row("table5", f"{m} w{b}", cfg, s)
            if cached is not None and "probe" in cached:
                res = cached["probe"]
                source = "table5 row"
            elif runner.cached_only:
                rows.append({"label": f"{m} w{b}", "method": m, "bits": b, "not_run": True})
                continue
            else:
                probe = probe or make_probe(runner, s, windows)
                runner.restore()
                runner.quantize(quant_cfg(m, b, group, s), s)
                res = probe(runner)
                runner.restore()
                source = "measured here"
            rows.append({"label": f"{m} w{b}", "method": m, "bits": b, "source": source, **res})
    runner.restore()
    act = runner.activation_means(runner.calib_ids(s)[:act_samples], s.chunk_size)  # a share is stable: few needed
    shares = outlier_share(act)

    def mean(v):
        return sum(v) / len(v) if v else float("nan")

    body = []
    for r in rows:
        if r.get("not_run"):
            body.append([r["label"], *["not run"] * 5])
            continue
        h = r["block_rel_error"]
        body.append([r["label"], f"{mean(h['calibration']):.4f}", f"{mean(h['pydoc']):.4f}",
                     f"{mean(h['licenses']):.4f}", f"{mean(h['pydoc']) / mean(h['calibration']):.2f}",
                     f"{mean(h['licenses']) / mean(h['calibration']):.2f}"])
    wins = []
    for b in bits:
        by = {r["method"]: r for r in rows if r["bits"] == b and not r.get("not_run")}
        if "awq" in by and "gptq" in by:
            for d in ("calibration", "pydoc", "licenses"):
                a, g = by["awq"]["block_rel_error"][d], by["gptq"]["block_rel_error"][d]
                wins.append([f"W{b}", d, f"{sum(x < y for x, y in zip(g, a))} / {len(a)}"])
    t1 = md_table(["method", "mean block rel. error: calibration", "held-out pydoc", "held-out licenses",
                   "pydoc / calibration", "licenses / calibration"], body)
    t2 = md_table(["bits", "text", "blocks where GPTQ's error < AWQ's"], wins) if wins else ""
    t3 = md_table(["linear", f"top-1% channels' share of mean |x| ({act_samples} x {s.seqlen} calibration tokens)"],
                  [[k, f"{v * 100:.1f}%"] for k, v in shares.items()])
    notes = ["Every block is fed the float model's block inputs (the same for every method) on: "
             f"{2 * windows} calibration sequences, the first {windows} evaluation window(s) of pydoc and of the "
             "license corpus (never used for calibration here)."]
    md = "\n\n".join([t1, t2, "**Activation concentration (float model, calibration set)**", t3])
    return TableResult("explain", "Per-block error of AWQ vs GPTQ on calibration and held-out text", PAPER,
                       {**s.__dict__, "model": runner.model_label, "bits": list(bits), "group_size": group},
                       rows, md, notes, time.time() - t0, extra={"outlier_share": shares})
