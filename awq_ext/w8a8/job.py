"""The W8A8 job behind the CLI methods ``w8a8-rtn``, ``smoothquant`` and ``aweq``.

Returns the same report fields as :func:`awq_ext.jobs.run_job` (model, method, bits, group_size,
zero_point, calib, eval, config, torch, threads, quantize_seconds, peak_rss_mb_after_quantize, blocks,
ppl, mean_nll, eval_tokens, eval_seconds, seconds, peak_rss_mb, peak_device_mb) plus ``mode``, ``act_quant``,
``bias_correction``, ``alpha`` and ``label``.

W8A8-specific options travel in ``JobOptions.extra`` (the CLI fills them from its flags):

* ``alpha`` (float, default 0.5) - SmoothQuant migration strength (``--alpha``);
* ``act_quant`` (``"static"`` | ``"dynamic"``, default ``"dynamic"``) - ``--act-quant``;
* ``bias_correction`` (bool or None = method default: on for aweq) - ``--bias-correction/--no-bias-correction``;
* ``weight_only`` (bool, default False) - ``--weight-only``: equalize, then group-wise RTN at
  ``--w-bit``/``--group-size``/``--zero-point`` with float activations (the ultra-low-bit use).

In W8A8 mode weights are always INT8 per output channel: ``w_bit``/``group_size`` are not used and the
report says ``bits: 8, group_size: -1``.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from awq_ext.errors import AWQInputError
from awq_ext.eval import perplexity
from awq_ext.jobs import (
    JobOptions, TextCache, check_zero_shot, job_spec, peak_rss_mb, plan_data, run_zero_shot, spec_file,
)
from awq_ext.memory import memory_peaks
from awq_ext.models.loading import is_quantized_checkpoint, load_model, model_label
from awq_ext.w8a8.calibrate import quantize_w8a8
from awq_ext.w8a8.config import W8A8_METHODS, W8A8Config

_EXTRA_KEYS = ("alpha", "act_quant", "bias_correction", "weight_only")


def config_from_options(opts: JobOptions) -> W8A8Config:
    """Build the W8A8 configuration from job options (method + ``extra``), validating everything."""
    unknown = set(opts.extra) - set(_EXTRA_KEYS)
    if unknown:
        raise AWQInputError(f"unknown W8A8 options {sorted(unknown)}; known: {', '.join(_EXTRA_KEYS)}")
    return W8A8Config(
        method=opts.method, alpha=float(opts.extra.get("alpha", 0.5)),
        act_quant=opts.extra.get("act_quant", "dynamic"), bias_correction=opts.extra.get("bias_correction"),
        weight_only=bool(opts.extra.get("weight_only", False)), w_bit=opts.w_bit, group_size=opts.group_size,
        zero_point=opts.zero_point, chunk_size=opts.chunk_size, device=opts.device, propagate=opts.propagate,
    )


def run_w8a8(opts: JobOptions, model=None, tokenizer=None, texts: TextCache | None = None) -> dict[str, Any]:
    """Calibrate + quantize (W8A8 or equalized weight-only) and evaluate one configuration."""
    t_start = time.time()
    if opts.method not in W8A8_METHODS:
        raise AWQInputError(f"run_w8a8 handles {', '.join(W8A8_METHODS)}; got {opts.method!r}")
    if opts.output:
        raise AWQInputError("W8A8 models are evaluated in memory; there is no W8A8 checkpoint format yet - omit "
                            "--output")
    if opts.load_record or opts.save_record:
        raise AWQInputError("--save-record/--load-record hold AWQ searches; W8A8 methods do not use them")
    cfg = config_from_options(opts)
    check_zero_shot(opts)
    store = None
    if opts.stream:  # one decoder block in memory at a time; perplexity layer by layer
        from awq_ext.io.stream import open_streamed
        from awq_ext.stream_job import check_stream

        check_stream(opts)
        streamed = open_streamed(opts.model, spec=spec_file(opts))
        model, tokenizer, store = streamed.model, streamed.tokenizer, streamed.store
    elif model is None:
        if opts.model and is_quantized_checkpoint(opts.model):
            raise AWQInputError(f"{opts.model} is already quantized; W8A8 needs the float model")
        model, tokenizer = load_model(opts.model)
    spec = job_spec(model, opts)
    texts = texts or TextCache(tokenizer)
    plan = plan_data(opts, texts, need_calib=True)
    out: dict[str, Any] = {
        "model": model_label(opts.model), "method": opts.method, "label": cfg.label(),
        "mode": "weight-only" if cfg.weight_only else "w8a8",
        "bits": cfg.w_bit if cfg.weight_only else 8,
        "group_size": cfg.group_size if cfg.weight_only else -1,
        "zero_point": cfg.zero_point if cfg.weight_only else False,
        "act_quant": None if cfg.weight_only else cfg.act_quant,
        "alpha": cfg.alpha if cfg.method == "smoothquant" else None,
        "bias_correction": cfg.use_bias_correction,
        "calib": {"source": opts.calib, "n_samples": opts.n_samples, "seqlen": opts.seqlen,
                  "token_range": plan.get("calib_range")},
        "eval": {"source": opts.eval, "seqlen": opts.eval_seqlen, "max_windows": opts.max_windows,
                 "token_range": plan.get("eval_range")} if opts.eval else None,
        "config": cfg.to_dict(), "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    evaluator = None
    if store is not None and opts.eval:
        from awq_ext.eval.layerwise import LayerwisePerplexity

        evaluator = LayerwisePerplexity(model, store.spec, plan["eval_windows"])
    result = quantize_w8a8(model, plan["calib_ids"], cfg, progress=opts.progress, spec=spec, source=store,
                           observers=[evaluator] if evaluator is not None else ())
    out["spec"] = opts.spec
    out["quantize_seconds"] = result.seconds
    out["peak_rss_mb_after_quantize"] = peak_rss_mb()
    out["blocks"] = [{"index": b.index, "rel_error": b.rel_error, "seconds": b.seconds, "groups": b.groups,
                      "bias_shift": b.bias_shift} for b in result.blocks]
    if opts.eval:
        t = time.time()
        ppl = (evaluator.result(opts.progress) if evaluator is not None
               else perplexity(model, plan["eval_windows"], progress=opts.progress))
        out.update(ppl=ppl.ppl, mean_nll=ppl.mean_nll, eval_tokens=ppl.n_tokens, eval_seconds=time.time() - t)
    run_zero_shot(out, model, tokenizer, opts)
    out["seconds"] = time.time() - t_start
    out.update(memory_peaks())
    return out
