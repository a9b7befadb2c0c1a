"""Write a tiny random OpenFlamingo (local parts), a tiny LLaVA directory and a synthetic COCO-like set,
so every script can run end to end on a CPU in seconds (numbers are meaningless: random weights)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vlm.scripts.make_tiny_assets", description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--n-train", type=int, default=40)
    p.add_argument("--n-test", type=int, default=8)
    args = p.parse_args(argv)
    from vlm.synthetic import make_questions, make_synthetic_coco
    from vlm.tiny import save_tiny_openflamingo, tiny_llava, tiny_openflamingo

    out = Path(args.out)
    paths = save_tiny_openflamingo(tiny_openflamingo(), out / "openflamingo")
    llava = tiny_llava()
    llava.model.save_pretrained(out / "llava")
    llava.processor.save_pretrained(out / "llava")
    karpathy, images = make_synthetic_coco(out / "coco", args.n_train, args.n_test)
    questions = make_questions(karpathy, out / "questions.json")
    paths.update(llava=str(out / "llava"), karpathy=str(karpathy), images=str(images), questions=str(questions))
    print(json.dumps(paths, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
