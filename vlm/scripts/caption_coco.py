"""COCO captioning, FP16 vs RTN vs AWQ (language tower only), CIDEr-D; writes JSON + markdown.

Example (OpenFlamingo-9B on a GPU, all parts local)::

    python -m vlm.scripts.caption_coco --family openflamingo \
        --lang-encoder /ckpt/mpt-7b --vision-encoder open_clip:ViT-L-14:/ckpt/openai-vit-l-14.pt \
        --checkpoint /ckpt/OpenFlamingo-9B-vitl-mpt7b/checkpoint.pt --cross-attn-every-n-layers 4 \
        --karpathy /data/coco/dataset_coco.json --images /data/coco --max-images 5000 --out results/of9b
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from awq_ext.errors import AWQInputError
from awq_ext.jobs import write_json
from vlm.captioning import DEFAULT_SHOTS, TRAIN_SPLITS, CaptionConfig, evaluate_captioning, load_karpathy, \
    report_table, results_json
from vlm.scripts.common import add_model_args, add_quant_args, load_runner, quantize_runner, release


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vlm.scripts.caption_coco", description=__doc__.split("\n")[0])
    add_model_args(p)
    add_quant_args(p)
    g = p.add_argument_group("captioning")
    g.add_argument("--karpathy", required=True, help="Karpathy split JSON (dataset_coco.json)")
    g.add_argument("--images", required=True, help="COCO image folder (holding train2014/, val2014/)")
    g.add_argument("--split", default="test", help="query split (default test)")
    g.add_argument("--max-images", type=int, default=None, help="first N query images (default all)")
    g.add_argument("--max-demo-images", type=int, default=None, help="cap the demonstration pool (default all)")
    g.add_argument("--shots", type=int, nargs="+", default=list(DEFAULT_SHOTS))
    g.add_argument("--seeds", type=int, nargs="+", default=[42])
    g.add_argument("--num-beams", type=int, default=3)
    g.add_argument("--max-new-tokens", type=int, default=20)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--zero-shot-text-demos", type=int, default=2)
    p.add_argument("--out", required=True, help="output folder: results.json, results.md, predictions.jsonl")
    p.add_argument("--progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.family != "openflamingo":
            raise AWQInputError("few-shot COCO captioning uses OpenFlamingo's interleaved prompts; use --family "
                                "openflamingo (LLaVA: vlm.scripts.visual_reasoning)")
        cfg = CaptionConfig(tuple(args.shots), tuple(args.seeds), args.num_beams, args.max_new_tokens,
                            batch_size=args.batch_size, zero_shot_text_demos=args.zero_shot_text_demos)
        queries = load_karpathy(args.karpathy, args.images, (args.split,), args.max_images)
        pool = load_karpathy(args.karpathy, args.images, TRAIN_SPLITS, args.max_demo_images)
        cfg.validate(len(pool))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        results, calib = [], {}
        with open(out / "predictions.jsonl", "w") as pred_file:
            for method in args.methods:
                t0 = time.time()
                runner = load_runner(args)
                summary = quantize_runner(runner, method, args, calib)
                res = evaluate_captioning(runner, queries, pool, cfg, method,
                                          on_prediction=lambda r: pred_file.write(json.dumps(r) + "\n"),
                                          progress=args.progress)
                res.quantization, res.seconds = summary, time.time() - t0
                results.append(res)
                release(runner)
                print(f"{method}: " + ", ".join(f"{k}-shot {100 * res.mean(k):.2f}" for k in cfg.shots), flush=True)
    except AWQInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = {"family": args.family, "model": {k: getattr(args, k) for k in (
                "lang_encoder", "tokenizer", "vision_encoder", "checkpoint", "cross_attn_every_n_layers", "llava")},
            "dtype": args.dtype, "device": args.device, "karpathy": args.karpathy, "split": args.split,
            "n_query_images": len(queries), "n_demo_images": len(pool),
            "quantization": {"w_bit": args.w_bit, "group_size": args.group_size, "calib": args.calib,
                             "n_samples": args.n_samples, "seqlen": args.seqlen, "n_grid": args.n_grid,
                             "clip_n_grid": args.clip_n_grid}}
    table = report_table(results, cfg.shots)
    write_json(results_json(results, cfg, meta), out / "results.json")
    (out / "results.md").write_text(f"# COCO captioning (CIDEr-D x100), {len(queries)} {args.split} images\n\n"
                                    f"Language tower W{args.w_bit} g{args.group_size}; vision side FP.\n\n{table}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
