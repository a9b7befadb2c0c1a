"""End-to-end jobs behind the CLI: load -> calibrate -> quantize -> evaluate -> save -> report.

Each job returns a plain dict of every figure (the CLI's ``--json``); the CLI only parses arguments.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from awq_ext.calibrate import SearchRecord, get_method, quantize_model
from awq_ext.calibrate.pipeline import needs_calibration
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.data import calib_blocks, calib_start, eval_windows, load_source, tokenize
from awq_ext.errors import AWQInputError
from awq_ext.eval import perplexity
from awq_ext.memory import memory_peaks, peak_rss_mb
from awq_ext.models.loading import declared_dtype, is_quantized_checkpoint, load_model, model_label

FLOAT_METHOD = "fp16"  # evaluate the model as loaded (float32 on CPU), no quantization


@dataclass
class JobOptions:
    model: str | None = None
    method: str = "awq"
    w_bit: int = 4
    group_size: int = 64
    zero_point: bool = True
    calib: str = "pydoc"
    n_samples: int = 16
    seqlen: int = 512
    eval: str | None = "pydoc"
    max_windows: int | None = 16
    eval_seqlen: int = 1024
    output: str | None = None
    save_record: str | None = None
    load_record: str | None = None
    awq: AWQConfig = field(default_factory=AWQConfig)
    propagate: str = "quantized"
    chunk_size: int = 4
    device: str | None = None
    extra: dict = field(default_factory=dict)
    progress: bool = True
    tasks: tuple[str, ...] = ()  # lm-eval zero-shot tasks run on the final model (needs awq_ext[eval])
    tasks_limit: int | None = None  # documents per task (None = all)
    tasks_path: str | None = None  # directory of extra lm-eval task YAMLs
    spec: str | None = None  # --spec FILE.json: architecture spec for a model type the registry lacks
    stream: bool = False  # read the float model block by block from its files (awq_ext.stream_job)
    save_dtype: str = "auto"  # unquantized tensors of --output: auto | float16 | bfloat16 | float32
    max_shard_size: str = "2GB"  # --output shards


def save_dtype_choice(opts: JobOptions) -> str | None:
    """``opts.save_dtype`` for :func:`awq_ext.io.save_quantized`: ``auto`` = bfloat16 when the source
    checkpoint declares bfloat16 (its config's dtype), else None (float16; the model is loaded in float32)."""
    if opts.save_dtype != "auto":
        return opts.save_dtype
    return "bfloat16" if declared_dtype(opts.model) == torch.bfloat16 else None


def check_output(opts: JobOptions) -> None:
    """Refuse an ``--output`` the method cannot fill, before any work."""
    if opts.output and (opts.method == FLOAT_METHOD or opts.w_bit != 4):
        raise AWQInputError(f"--output saves real-quantized 4-bit weights (the interchange layout); got method "
                            f"{opts.method!r} with {opts.w_bit} bits. Use --w-bit 4 with rtn/awq, or omit --output "
                            "to evaluate other bit widths pseudo-quantized")


class TextCache:
    """Tokenized sources, so a comparison of many methods tokenizes each text once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[tuple[str, str], torch.Tensor] = {}
        self._sources: dict[str, Any] = {}

    def source(self, name: str):
        if name not in self._sources:
            self._sources[name] = load_source(name)
        return self._sources[name]

    def ids(self, name: str, part: str) -> torch.Tensor:
        if (name, part) not in self._cache:
            src = self.source(name)
            self._cache[(name, part)] = tokenize(src.eval_text if part == "eval" else src.calib_text, self.tokenizer)
        return self._cache[(name, part)]


def plan_data(opts: JobOptions, texts: TextCache, need_calib: bool) -> dict[str, Any]:
    """Evaluation windows and calibration blocks, disjoint when they come from one text."""
    plan: dict[str, Any] = {}
    eval_tokens = None
    eval_src = None
    if opts.eval:
        eval_src = texts.source(opts.eval)
        win, rng = eval_windows(texts.ids(opts.eval, "eval"), opts.eval_seqlen, opts.max_windows)
        plan["eval_windows"] = win
        plan["eval_range"] = [rng.start, rng.stop]
        eval_tokens = rng.stop if opts.max_windows is not None else None
    if need_calib:
        src = texts.source(opts.calib)
        start = calib_start(src, eval_src, eval_tokens)
        cal, crng = calib_blocks(texts.ids(opts.calib, "calib"), opts.n_samples, opts.seqlen, start)
        plan["calib_ids"] = cal
        plan["calib_range"] = [crng.start, crng.stop]
    return plan


def quantize_config(opts: JobOptions) -> QuantizeConfig:
    return QuantizeConfig(
        method=opts.method, w_bit=opts.w_bit, group_size=opts.group_size, zero_point=opts.zero_point,
        awq=opts.awq, propagate=opts.propagate, chunk_size=opts.chunk_size, device=opts.device,
        extra=dict(opts.extra),
    )


def spec_file(opts: JobOptions):
    """The ``--spec`` file's spec; ``None`` without one."""
    from awq_ext.models.spec_file import load_spec_file

    return load_spec_file(opts.spec) if opts.spec else None


def job_spec(model, opts: JobOptions):
    """The ``--spec`` file's spec (``None`` without one), after checking that the model has a spec at
    all: an unknown model_type is refused here, before calibration data is prepared."""
    from awq_ext.models import get_spec

    spec = spec_file(opts)
    get_spec(model, spec)
    return spec


def check_zero_shot(opts: JobOptions) -> None:
    """Refuse an unusable ``--tasks`` (lm-eval missing, unknown task) before the long work starts."""
    if opts.tasks:
        from awq_ext.eval.zeroshot import check_tasks

        check_tasks(opts.tasks, opts.tasks_path)


def run_zero_shot(out: dict[str, Any], model, tokenizer, opts: JobOptions) -> None:
    """Add lm-eval accuracies to ``out``; a task whose data is unreachable is reported in
    ``out["zero_shot_error"]`` so the job's other results (and checkpoint) are kept."""
    if not opts.tasks:
        return
    from awq_ext.errors import OfflineError
    from awq_ext.eval.zeroshot import zero_shot

    t = time.time()
    try:
        out["zero_shot"] = zero_shot(model, tokenizer, opts.tasks, limit=opts.tasks_limit,
                                      include_path=opts.tasks_path)["metrics"]
        out["zero_shot_seconds"] = time.time() - t
    except OfflineError as e:
        out["zero_shot_error"] = str(e)


def run_job(opts: JobOptions, model=None, tokenizer=None, texts: TextCache | None = None) -> dict[str, Any]:
    """Quantize (unless ``method`` is fp16) and evaluate one configuration; optionally save."""
    if opts.stream:
        from awq_ext.stream_job import run_stream_job

        return run_stream_job(opts, texts=texts)
    t_start = time.time()
    check_zero_shot(opts)
    check_output(opts)
    if model is None:
        if opts.model and is_quantized_checkpoint(opts.model):
            raise AWQInputError(f"{opts.model} is already quantized; use `eval --model {opts.model}` to evaluate it")
        model, tokenizer = load_model(opts.model)
    texts = texts or TextCache(tokenizer)
    is_float = opts.method == FLOAT_METHOD
    spec = None if is_float else job_spec(model, opts)
    cfg = None if is_float else quantize_config(opts)
    method = None if is_float else get_method(opts.method)
    record = SearchRecord.load(opts.load_record) if opts.load_record else None
    need_calib = not is_float and needs_calibration(method, record)
    plan = plan_data(opts, texts, need_calib)
    out = job_header(opts, plan, cfg, need_calib)
    result = None
    if not is_float:
        result = quantize_model(model, plan.get("calib_ids"), cfg, record=record, progress=opts.progress,
                                spec=spec)
        out["spec"] = opts.spec
        out["quantize_seconds"] = result.seconds
        out["peak_rss_mb_after_quantize"] = peak_rss_mb()
        out["blocks"] = [
            {"index": b.index, "rel_error": b.rel_error, "seconds": b.seconds, "phases": b.phases,
             "groups": b.groups, "clips": b.clips}
            for b in result.blocks
        ]
        if opts.save_record and result.record is not None:
            result.record.save(opts.save_record)
            out["record"] = opts.save_record
    if opts.eval:
        t = time.time()
        ppl = perplexity(model, plan["eval_windows"], progress=opts.progress)
        out.update(ppl=ppl.ppl, mean_nll=ppl.mean_nll, eval_tokens=ppl.n_tokens, eval_seconds=time.time() - t)
    if opts.output:
        if result is None:
            raise AWQInputError("--output saves a quantized model; choose --method rtn or awq")
        out["checkpoint"] = save_checkpoint(model, tokenizer, result, opts.output, save_dtype=save_dtype_choice(opts),
                                            max_shard_size=opts.max_shard_size)
    run_zero_shot(out, model, tokenizer, opts)  # after saving: an unreachable task loses no work
    out["seconds"] = time.time() - t_start
    out.update(memory_peaks())
    return out


def job_header(opts: JobOptions, plan: dict[str, Any], cfg: QuantizeConfig | None, need_calib: bool) -> dict[str, Any]:
    """The fields every quantize/evaluate JSON starts with."""
    is_float = cfg is None
    return {
        "model": model_label(opts.model), "method": opts.method,
        "bits": None if is_float else opts.w_bit, "group_size": None if is_float else opts.group_size,
        "zero_point": None if is_float else opts.zero_point,
        "calib": {"source": opts.calib, "n_samples": opts.n_samples, "seqlen": opts.seqlen,
                  "token_range": plan.get("calib_range")} if need_calib else None,
        "eval": {"source": opts.eval, "seqlen": opts.eval_seqlen, "max_windows": opts.max_windows,
                 "token_range": plan.get("eval_range")} if opts.eval else None,
        "config": None if cfg is None else cfg.to_dict(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def save_checkpoint(model, tokenizer, result, output: str, save_dtype: str | None = None,
                    max_shard_size: str = "2GB") -> dict[str, Any]:
    """Replace the quantized linears by packed WQLinear modules and save the interchange checkpoint."""
    from awq_ext.io import save_quantized
    from awq_ext.nn import replace_linears

    bits = {qw.spec.bits for qw in result.quantized.values()}
    if bits != {4}:
        raise AWQInputError(f"real-quantized checkpoints hold 4-bit weights (the interchange layout); got bits "
                            f"{sorted(bits)}. Omit --output to evaluate other bit widths pseudo-quantized")
    replace_linears(model, result.quantized)
    save_quantized(model, output, tokenizer=tokenizer, save_dtype=save_dtype, max_shard_size=max_shard_size)
    return checkpoint_summary(output)


def checkpoint_summary(output: str | os.PathLike) -> dict[str, Any]:
    from awq_ext.io import checkpoint_size_report

    rep = checkpoint_size_report(output)
    return {"dir": str(output), "size": rep.summary(), "bits_per_quantized_weight": rep.bits_per_quantized_weight,
            "file_bytes": rep.file_bytes}


def run_eval(model_path: str | None, opts: JobOptions) -> dict[str, Any]:
    """Evaluate a float model or a saved quantized checkpoint."""
    t0 = time.time()
    check_zero_shot(opts)
    quantized = bool(model_path) and is_quantized_checkpoint(model_path)
    if opts.stream and not quantized:
        from awq_ext.stream_job import run_stream_job

        return run_stream_job(JobOptions(model=model_path, method=FLOAT_METHOD, eval=opts.eval,
                                         max_windows=opts.max_windows, eval_seqlen=opts.eval_seqlen,
                                         device=opts.device, progress=opts.progress, tasks=opts.tasks, stream=True,
                                         spec=opts.spec))
    if quantized:
        from awq_ext.io import load_quantized, read_quant_config

        # float32 compute on the CPU, as for float models (the checkpoint stores float16 or bfloat16)
        model = load_quantized(model_path, dtype=torch.float32)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        qc = read_quant_config(model_path)
        label = {"method": "checkpoint", "quantization_config": qc}
    else:
        model, tokenizer = load_model(model_path)
        label = {"method": FLOAT_METHOD}
    texts = TextCache(tokenizer)
    plan = plan_data(JobOptions(eval=opts.eval, max_windows=opts.max_windows, eval_seqlen=opts.eval_seqlen),
                     texts, need_calib=False)
    ppl = perplexity(model, plan["eval_windows"], progress=opts.progress)
    out = {"model": model_label(model_path), **label, "eval": {"source": opts.eval, "seqlen": opts.eval_seqlen,
           "max_windows": opts.max_windows, "token_range": plan["eval_range"]}, "ppl": ppl.ppl,
           "mean_nll": ppl.mean_nll, "eval_tokens": ppl.n_tokens}
    run_zero_shot(out, model, tokenizer, opts)
    return {**out, "seconds": time.time() - t0, **memory_peaks()}


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Atomic JSON write (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
