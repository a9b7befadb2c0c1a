"""Visual reasoning side by side: (image, question) -> answers of FP16, RTN and AWQ; JSON + markdown + HTML.

Example (LLaVA-1.5-7B, local)::

    python -m vlm.scripts.visual_reasoning --family llava --llava /ckpt/llava-1.5-7b-hf \
        --questions vlm/examples/questions.json --out results/llava_reasoning
"""
from __future__ import annotations

import argparse
import sys

from awq_ext.errors import AWQInputError
from vlm.reasoning import TEMPLATES, answer_all, load_questions, write_report
from vlm.scripts.common import add_model_args, add_quant_args, load_runner, quantize_runner, release


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vlm.scripts.visual_reasoning", description=__doc__.split("\n")[0])
    add_model_args(p)
    add_quant_args(p)
    p.add_argument("--questions", required=True, help='JSON list of {"image": PATH, "question": TEXT}')
    p.add_argument("--template", default=None, help="prompt with {question} and one <image> (default per family)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        questions = load_questions(args.questions)
        template = args.template or TEMPLATES[args.family]
        answers, summaries, calib = {}, {}, {}
        for method in args.methods:
            runner = load_runner(args)
            summaries[method] = quantize_runner(runner, method, args, calib)
            answers[method] = answer_all(runner, questions, template, args.max_new_tokens, args.num_beams)
            release(runner)
    except AWQInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = {"family": args.family, "model": args.llava or args.lang_encoder, "template": template,
            "w_bit": args.w_bit, "group_size": args.group_size, "quantization": summaries}
    paths = write_report(questions, answers, args.out, meta)
    print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
