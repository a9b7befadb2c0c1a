"""CIDEr-D for captions, without Java.

Scoring is ``pycocoevalcap``'s ``Cider`` (the CIDEr-D variant the COCO server reports: tf-idf n-gram
vectors for n = 1..4, idf from the references of the evaluated images, clipped cosine, Gaussian length
penalty sigma = 6, x10). The COCO toolkit tokenizes with Stanford's PTBTokenizer (Java); we use
:func:`ptb_tokenize`, a pure-Python approximation: lowercase, split clitics (``n't``, ``'s``, ``'re``,
``'ve``, ``'ll``, ``'d``, ``'m``) off as the PTB tokenizer does, keep hyphenated words whole, and drop
the punctuation tokens the toolkit removes. Scores can differ slightly from the Java pipeline on
captions with unusual punctuation; the difference is the same for every method compared.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from awq_ext.errors import AWQInputError

_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:[-/][a-z0-9]+)*(?=n't)|[a-z0-9]+(?:[-/][a-z0-9]+)*")


def ptb_tokenize(text: str) -> str:
    """``"A man's dog, running."`` -> ``"a man 's dog running"`` (space-joined tokens)."""
    return " ".join(_TOKEN.findall(text.lower().replace("\u2019", "'")))


@dataclass(frozen=True)
class CiderResult:
    score: float  # corpus CIDEr-D (mean over images)
    per_image: dict  # image id -> CIDEr-D


def cider(predictions: dict, references: dict[object, list[str]]) -> CiderResult:
    """CIDEr-D of one caption per image against that image's reference captions.

    ``predictions``: image id -> caption; ``references``: image id -> list of captions. Both are
    tokenized with :func:`ptb_tokenize`. The ids must match exactly; every image needs >= 1 reference.
    """
    from pycocoevalcap.cider.cider import Cider

    if set(predictions) != set(references):
        missing = sorted(map(str, set(references) - set(predictions)))[:5]
        extra = sorted(map(str, set(predictions) - set(references)))[:5]
        raise AWQInputError(f"predictions and references cover different images (no prediction for {missing}, "
                            f"no references for {extra})")
    if not predictions:
        raise AWQInputError("no captions to score")
    empty = [k for k, refs in references.items() if not refs]
    if empty:
        raise AWQInputError(f"images without reference captions: {sorted(map(str, empty))[:5]}")
    ids = list(references)
    gts = {i: [ptb_tokenize(r) for r in references[i]] for i in ids}
    res = {i: [ptb_tokenize(predictions[i])] for i in ids}
    score, scores = Cider().compute_score(gts, res)
    return CiderResult(float(score), {i: float(s) for i, s in zip(ids, scores)})
