"""COCO captioning with OpenFlamingo few-shot prompts, scored with CIDEr-D (the paper's Table 6 protocol).

Data: the Karpathy split JSON (``dataset_coco.json``: ``images[]`` with ``filepath``, ``filename``,
``split`` in train/restval/val/test, ``cocoid``, ``sentences[].raw``) and the COCO image folder, both
given by the user. Queries come from ``query_split`` (``test``); demonstrations from the training
images (``train`` + ``restval``), each shown with its first caption, as OpenFlamingo's evaluation does.

Prompt for k shots: ``<image>Output:{caption}<|endofchunk|>`` x k, then ``<image>Output:``. For 0 shots
the reference uses two text-only demonstrations (``Output:{caption}<|endofchunk|>``, no image) so the
model sees the format; ``zero_shot_text_demos`` sets how many (0 = a bare query). Generation is beam
search (3 beams, up to 20 new tokens, length penalty 0), and the caption is the text before any
``Output`` the model goes on to write, with double quotes removed.
"""
from __future__ import annotations

import json
import random
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm.auto import tqdm

from awq_ext.errors import AWQInputError
from vlm.cider import cider

DEFAULT_SHOTS = (0, 4, 8, 16, 32)
TRAIN_SPLITS = ("train", "restval")


@dataclass(frozen=True)
class CocoImage:
    image_id: str
    path: Path
    captions: tuple[str, ...]


def load_karpathy(json_path: str | Path, image_root: str | Path, splits: tuple[str, ...],
                  max_images: int | None = None) -> list[CocoImage]:
    """Images of ``splits`` (file order), at most ``max_images``; every returned image file exists."""
    json_path, image_root = Path(json_path), Path(image_root)
    if not json_path.is_file():
        raise AWQInputError(f"Karpathy split file {json_path} does not exist")
    if not image_root.is_dir():
        raise AWQInputError(f"image folder {image_root} does not exist")
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise AWQInputError(f"{json_path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AWQInputError(f"{json_path} is not a Karpathy split file (expected an object with an 'images' list)")
    out: list[CocoImage] = []
    for n, rec in enumerate(data["images"]):
        if rec.get("split") not in splits:
            continue
        try:
            name, sentences = rec["filename"], rec["sentences"]
        except KeyError as e:
            raise AWQInputError(f"{json_path}: images[{n}] lacks {e}") from e
        sub = image_root / rec.get("filepath", "") / name
        path = sub if sub.is_file() else image_root / name
        if not path.is_file():
            raise AWQInputError(f"image {name} of {json_path} is neither at {sub} nor at {image_root / name}; "
                                "pass the COCO image folder (the one holding train2014/ and val2014/)")
        caps = tuple(s["raw"].strip() for s in sentences if s.get("raw", "").strip())
        if not caps:
            raise AWQInputError(f"{json_path}: image {name} has no captions")
        out.append(CocoImage(str(rec.get("cocoid", rec.get("imgid", name))), path, caps))
        if max_images is not None and len(out) >= max_images:
            break
    if not out:
        raise AWQInputError(f"{json_path} has no images in split(s) {', '.join(splits)}")
    return out


@dataclass
class CaptionConfig:
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: tuple[int, ...] = (42,)
    num_beams: int = 3
    max_new_tokens: int = 20
    length_penalty: float = 0.0
    batch_size: int = 8
    zero_shot_text_demos: int = 2

    def validate(self, pool_size: int) -> None:
        if not self.shots or any(k < 0 for k in self.shots):
            raise AWQInputError(f"shots must be non-negative integers, got {self.shots}")
        need = max(max(self.shots), self.zero_shot_text_demos if 0 in self.shots else 0)
        if need > pool_size:
            raise AWQInputError(f"{need} demonstrations per prompt need at least {need} training images; the "
                                f"demonstration pool has {pool_size}")
        if not self.seeds:
            raise AWQInputError("give at least one seed")
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise AWQInputError("num_beams, max_new_tokens and batch_size must be >= 1")


def demo_text(caption: str, with_image: bool) -> str:
    return f"{'<image>' if with_image else ''}Output:{caption.strip()}<|endofchunk|>"


def build_prompt(demos: list[CocoImage], shots: int, zero_shot_text_demos: int) -> tuple[str, list[Path]]:
    """``(prompt, image paths in prompt order)`` for one query; ``demos`` already sampled."""
    if shots == 0:
        text = "".join(demo_text(d.captions[0], False) for d in demos[:zero_shot_text_demos])
        return text + "<image>Output:", []
    return "".join(demo_text(d.captions[0], True) for d in demos[:shots]) + "<image>Output:", [d.path for d in demos[:shots]]


def postprocess(text: str) -> str:
    return text.split("Output", 1)[0].replace('"', "").strip()


def sample_demos(pool: list[CocoImage], n: int, rng: random.Random, exclude: str) -> list[CocoImage]:
    # Never show the query image as its own demonstration (pools can overlap in custom splits).
    candidates = [d for d in pool if d.image_id != exclude] if any(d.image_id == exclude for d in pool) else pool
    if n > len(candidates):
        raise AWQInputError(f"need {n} demonstrations but only {len(candidates)} are available")
    return rng.sample(candidates, n)


def _load_image(path: Path, cache: dict) -> Image.Image:
    if path not in cache:
        with Image.open(path) as im:
            cache[path] = im.convert("RGB")
    return cache[path]


def caption_queries(runner, queries: list[CocoImage], pool: list[CocoImage], shots: int, seed: int,
                    cfg: CaptionConfig, progress: bool = False) -> dict[str, str]:
    """Image id -> generated caption for every query, ``shots`` demonstrations sampled with ``seed``."""
    if shots > 0 and not getattr(runner, "interleaved", False):
        raise AWQInputError(f"{runner.family} takes one image per prompt; few-shot captioning needs OpenFlamingo")
    rng = random.Random(f"{seed}/{shots}")
    n_demo = shots if shots else cfg.zero_shot_text_demos
    jobs = []
    for q in queries:
        prompt, paths = build_prompt(sample_demos(pool, n_demo, rng, q.image_id), shots, cfg.zero_shot_text_demos)
        jobs.append((q, prompt, [*paths, q.path]))
    cache: dict = {}
    out: dict[str, str] = {}
    batches = range(0, len(jobs), cfg.batch_size)
    for b in tqdm(batches, desc=f"{shots}-shot seed {seed}", disable=not progress):
        chunk = jobs[b : b + cfg.batch_size]
        texts = runner.generate([[_load_image(p, cache) for p in paths] for _, _, paths in chunk],
                                [prompt for _, prompt, _ in chunk], max_new_tokens=cfg.max_new_tokens,
                                num_beams=cfg.num_beams, length_penalty=cfg.length_penalty)
        for (q, _, _), text in zip(chunk, texts):
            out[q.image_id] = postprocess(text)
        if len(cache) > 512:  # bounded: demonstration images repeat, but the pool can be 100k images
            cache.clear()
    return out


@dataclass
class MethodResult:
    method: str
    scores: dict[int, dict[int, float]] = field(default_factory=dict)  # shots -> seed -> CIDEr
    quantization: dict | None = None
    seconds: float = 0.0

    def mean(self, shots: int) -> float:
        return statistics.fmean(self.scores[shots].values())

    def std(self, shots: int) -> float:
        vals = list(self.scores[shots].values())
        return statistics.stdev(vals) if len(vals) > 1 else 0.0


def evaluate_captioning(runner, queries: list[CocoImage], pool: list[CocoImage], cfg: CaptionConfig, method: str,
                        on_prediction: Callable[[dict], None] | None = None, progress: bool = False) -> MethodResult:
    """CIDEr-D (x100 is *not* applied: values as pycocoevalcap returns them) for every shots x seed."""
    cfg.validate(len(pool))
    refs = {q.image_id: list(q.captions) for q in queries}
    result = MethodResult(method)
    for shots in cfg.shots:
        result.scores[shots] = {}
        for seed in cfg.seeds:
            preds = caption_queries(runner, queries, pool, shots, seed, cfg, progress)
            scored = cider(preds, refs)
            result.scores[shots][seed] = scored.score
            if on_prediction is not None:
                for qid, cap in preds.items():
                    on_prediction({"method": method, "shots": shots, "seed": seed, "image_id": qid, "caption": cap,
                                   "cider": scored.per_image[qid]})
    return result


def delta_shots(shots: tuple[int, ...]) -> int:
    """The shot count the delta column uses: 32 as in the paper, else the largest evaluated."""
    return 32 if 32 in shots else max(shots)


def report_table(results: list[MethodResult], shots: tuple[int, ...], baseline: str = "fp16") -> str:
    """Markdown: one row per method, CIDEr-D x100 per shot count (mean +- std over seeds), delta vs FP16."""
    d = delta_shots(shots)
    base = next((r for r in results if r.method == baseline), None)
    head = "| method | " + " | ".join(f"{k}-shot" for k in shots) + f" | Δ({d}-shot) vs {baseline.upper()} |"
    rows = [head, "|" + "---|" * (len(shots) + 2)]
    for r in results:
        cells = []
        for k in shots:
            cell = f"{100 * r.mean(k):.2f}"
            if len(r.scores[k]) > 1:
                cell += f" ± {100 * r.std(k):.2f}"
            cells.append(cell)
        delta = "—" if base is None or r is base else f"{100 * (r.mean(d) - base.mean(d)):+.2f}"
        rows.append(f"| {r.method.upper()} | " + " | ".join(cells) + f" | {delta} |")
    return "\n".join(rows) + "\n"


def results_json(results: list[MethodResult], cfg: CaptionConfig, meta: dict) -> dict:
    d = delta_shots(cfg.shots)
    base = next((r for r in results if r.method == "fp16"), None)
    return {
        "meta": meta,
        "caption_config": asdict(cfg),
        "metric": "CIDEr-D (pycocoevalcap Cider, Python PTB-style tokenization); tables show x100",
        "delta_shots": d,
        "methods": {
            r.method: {
                "cider": {str(k): {str(s): v for s, v in r.scores[k].items()} for k in cfg.shots},
                "mean": {str(k): r.mean(k) for k in cfg.shots},
                "std": {str(k): r.std(k) for k in cfg.shots},
                "delta_vs_fp16": None if base is None else r.mean(d) - base.mean(d),
                "quantization": r.quantization,
                "seconds": r.seconds,
            }
            for r in results
        },
    }
