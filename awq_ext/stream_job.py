"""The streaming job behind ``quantize --stream``, ``eval --stream`` and ``compare --stream``.

The float model is a meta-device skeleton (:func:`awq_ext.io.stream.open_streamed`); the driver reads
each decoder block from the model's safetensors shards or GGUF file when it reaches it, quantizes it,
hands it to the observers and frees it:

* :class:`awq_ext.io.stream.StreamingCheckpoint` (with ``--output``) packs the block into the output
  shards at once - the checkpoint is byte-identical to the in-memory path's;
* :class:`awq_ext.eval.layerwise.LayerwisePerplexity` (with ``--eval``) carries the evaluation windows
  through the quantized block - the perplexity of the in-memory path, computed layer by layer.

Host memory is one block's float weights, the calibration and evaluation activations, and the
embeddings/head - never the model. What needs the whole model at once is refused with a pointer to
what to run instead (zero-shot tasks: on the saved checkpoint).
"""
from __future__ import annotations

import time
from typing import Any

from awq_ext.calibrate import SearchRecord, get_method
from awq_ext.calibrate.driver import calibration_device
from awq_ext.calibrate.pipeline import needs_calibration, quantize_blocks
from awq_ext.errors import AWQInputError
from awq_ext.eval.layerwise import LayerwisePerplexity, layerwise_perplexity
from awq_ext.io.checkpoint import resolve_save_dtype
from awq_ext.io.stream import StreamingCheckpoint, map_large_allocations, open_streamed
from awq_ext.jobs import (
    FLOAT_METHOD, JobOptions, TextCache, check_output, checkpoint_summary, job_header, plan_data, quantize_config,
    save_dtype_choice, spec_file,
)
from awq_ext.memory import memory_peaks, peak_rss_mb
from awq_ext.models.loading import is_quantized_checkpoint


def check_stream(opts: JobOptions) -> None:
    """Refuse what streaming cannot do, before any weights are read."""
    if opts.tasks:
        raise AWQInputError("--tasks runs lm-eval on the whole model in memory, which --stream avoids; save the "
                            "checkpoint with --output, then run `eval --model OUTPUT --tasks ...`")
    if opts.model and is_quantized_checkpoint(opts.model):
        raise AWQInputError(f"{opts.model} is already quantized; `eval --model {opts.model}` evaluates it (a packed "
                            "checkpoint is small: it is loaded whole)")


def run_stream_job(opts: JobOptions, texts: TextCache | None = None) -> dict[str, Any]:
    """Quantize (unless ``method`` is fp16) and evaluate one configuration, one block in memory at a time."""
    t_start = time.time()
    check_stream(opts)
    check_output(opts)
    map_large_allocations()  # memory is the point of streaming: freed tensors go back to the OS at once
    is_float = opts.method == FLOAT_METHOD
    cfg = None if is_float else quantize_config(opts)
    record = SearchRecord.load(opts.load_record) if opts.load_record else None
    need_calib = not is_float and needs_calibration(get_method(opts.method), record)
    # Without layer-by-layer evaluation nothing needs the final norm and head before the checkpoint's end.
    spec_arg = spec_file(opts)
    streamed = open_streamed(opts.model, head_only=not is_float and not opts.eval, spec=spec_arg)
    model, tokenizer, store = streamed.model, streamed.tokenizer, streamed.store
    texts = texts or TextCache(tokenizer)
    plan = plan_data(opts, texts, need_calib)
    out = job_header(opts, plan, cfg, need_calib)
    out["stream"] = {"source": streamed.source_kind}
    spec = store.spec
    if is_float:
        if not opts.eval:
            raise AWQInputError("a float model with --stream only evaluates; pass --eval (or a --method to quantize)")
        t = time.time()
        ppl, _ = layerwise_perplexity(model, spec, plan["eval_windows"], device=calibration_device(opts.device),
                                      source=store, progress=opts.progress)
        out.update(ppl=ppl.ppl, mean_nll=ppl.mean_nll, eval_tokens=ppl.n_tokens, eval_seconds=time.time() - t)
    else:
        evaluator = LayerwisePerplexity(model, spec, plan["eval_windows"]) if opts.eval else None
        writer = None
        if opts.output:
            writer = StreamingCheckpoint(opts.output, model, spec, resolve_save_dtype(model, save_dtype_choice(opts)),
                                         opts.max_shard_size)
        observers = [o for o in (evaluator, writer) if o is not None]  # evaluate before packing replaces linears
        store.release_globals_after_capture = evaluator is None  # nothing needs the embeddings/head meanwhile
        try:
            result = quantize_blocks(model, plan.get("calib_ids"), cfg, record=record, progress=opts.progress,
                                     source=store, observers=observers, keep_codes=False, spec=spec_arg)
            if writer is not None:  # the final norm and head complete it (read back if they were released)
                reload = store if store.release_globals_after_capture else None
                out["checkpoint"] = checkpoint_summary(writer.commit(tokenizer, reload=reload))
        finally:
            if writer is not None:
                writer.abort()  # no-op after a commit; drops the partial shards otherwise
        out["spec"] = opts.spec
        out["quantize_seconds"] = result.seconds
        out["peak_rss_mb_after_quantize"] = peak_rss_mb()
        out["blocks"] = [{"index": b.index, "rel_error": b.rel_error, "seconds": b.seconds, "phases": b.phases,
                          "groups": b.groups,
                          "clips": b.clips} for b in result.blocks]
        if opts.save_record and result.record is not None:
            result.record.save(opts.save_record)
            out["record"] = opts.save_record
        if evaluator is not None:
            t = time.time()
            ppl = evaluator.result(opts.progress)
            out.update(ppl=ppl.ppl, mean_nll=ppl.mean_nll, eval_tokens=ppl.n_tokens, eval_seconds=time.time() - t)
    out["seconds"] = time.time() - t_start
    out.update(memory_peaks())
    return out
