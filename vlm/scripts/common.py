"""Argument groups and model loading shared by the VLM scripts."""
from __future__ import annotations

import argparse
import gc

import torch

from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.errors import AWQInputError
from vlm.quantize import FLOAT, quantize_language_tower, text_calibration

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (local paths; nothing is downloaded for a local path)")
    g.add_argument("--family", choices=("openflamingo", "llava"), required=True)
    g.add_argument("--llava", help="LLaVA: transformers LlavaForConditionalGeneration directory")
    g.add_argument("--lang-encoder", help="OpenFlamingo: the language model's HF directory (e.g. MPT-7B / LLaMA-7B)")
    g.add_argument("--tokenizer", help="OpenFlamingo: tokenizer directory (default: --lang-encoder)")
    g.add_argument("--vision-encoder", help="OpenFlamingo: open_clip:NAME:PRETRAINED_FILE or hf-clip:DIR")
    g.add_argument("--checkpoint", help="OpenFlamingo: checkpoint.pt (perceiver, cross-attention, embeddings)")
    g.add_argument("--cross-attn-every-n-layers", type=int, default=4, help="OpenFlamingo-9B: 4")
    g.add_argument("--dtype", choices=tuple(_DTYPES), default="float16" if torch.cuda.is_available() else "float32")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_quant_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization (language tower only)")
    g.add_argument("--methods", nargs="+", default=["fp16", "rtn", "awq"], help="fp16 = the model as loaded")
    g.add_argument("--w-bit", type=int, default=4)
    g.add_argument("--group-size", type=int, default=128)
    g.add_argument("--calib", default="pydoc", help="text source for calibration: pydoc, pileval (online), or a file")
    g.add_argument("--n-samples", type=int, default=128)
    g.add_argument("--seqlen", type=int, default=512)
    g.add_argument("--n-grid", type=int, default=20, help="AWQ scale-search grid points")
    g.add_argument("--clip-n-grid", type=int, default=20, help="AWQ clip-search grid points")


def load_runner(args: argparse.Namespace):
    dtype = _DTYPES[args.dtype]
    if args.family == "llava":
        if not args.llava:
            raise AWQInputError("--family llava needs --llava DIR")
        from vlm.llava import load_llava

        return load_llava(args.llava, dtype, args.device)
    missing = [f"--{n.replace('_', '-')}" for n in ("lang_encoder", "vision_encoder") if not getattr(args, n)]
    if missing:
        raise AWQInputError(f"--family openflamingo needs {' and '.join(missing)}")
    from vlm.openflamingo import load_openflamingo

    return load_openflamingo(args.lang_encoder, args.tokenizer, args.vision_encoder, args.checkpoint,
                             args.cross_attn_every_n_layers, dtype, args.device)


def tokenizer_of(runner):
    return runner.tokenizer if hasattr(runner, "tokenizer") else runner.processor.tokenizer


def quantize_runner(runner, method: str, args: argparse.Namespace, calib_cache: dict) -> dict | None:
    """Quantize ``runner``'s language tower with ``method`` (no-op for fp16); returns its summary."""
    if method == FLOAT:
        return None
    cfg = QuantizeConfig(method=method, w_bit=args.w_bit, group_size=args.group_size, device=args.device,
                         awq=AWQConfig(n_grid=args.n_grid, clip_n_grid=args.clip_n_grid))
    if "ids" not in calib_cache:
        calib_cache["ids"] = text_calibration(tokenizer_of(runner), args.n_samples, args.seqlen, args.calib)
    return quantize_language_tower(runner.model, calib_cache["ids"], cfg, family=runner.family).summary()


def release(runner) -> None:
    del runner
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
