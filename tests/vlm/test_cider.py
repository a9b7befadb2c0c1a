"""CIDEr-D: our Java-free tokenization + pycocoevalcap's scorer, checked against the definition."""
from __future__ import annotations

import math
from collections import Counter

import pytest

pytest.importorskip("pycocoevalcap")

from awq_ext.errors import AWQInputError  # noqa: E402
from vlm.cider import cider, ptb_tokenize  # noqa: E402


def test_ptb_tokenize_lowercases_splits_clitics_drops_punctuation():
    assert ptb_tokenize("A man's dog, running.") == "a man 's dog running"
    assert ptb_tokenize("It DOESN'T stop!") == "it does n't stop"
    assert ptb_tokenize("a t-shirt; \"quoted\" (x)") == "a t-shirt quoted x"


def _ngrams(words, n):
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def cider_d_by_definition(cands: dict, refs: dict, sigma: float = 6.0) -> dict:
    """CIDEr-D from Vedantam et al. (2015) as the COCO server defines it: raw n-gram counts times
    idf = log(#images / max(1, #images whose references contain the n-gram)), per-n clipped cosine
    min(g_c, g_s) . g_s / (|g_c| |g_s|), Gaussian penalty on the length difference, mean over
    n = 1..4 and over references, times 10."""
    n_img = len(refs)
    df = Counter()
    for rs in refs.values():
        df.update({g for r in rs for n in range(1, 5) for g in _ngrams(r.split(), n)})

    def vec(words, n):
        return {g: c * (math.log(n_img) - math.log(max(1, df[g]))) for g, c in _ngrams(words, n).items()}

    out = {}
    for k, cand in cands.items():
        cw = cand.split()
        total = 0.0
        for ref in refs[k]:
            rw = ref.split()
            pen = math.exp(-((len(cw) - len(rw)) ** 2) / (2 * sigma ** 2))
            per_n = []
            for n in range(1, 5):
                gc, gs = vec(cw, n), vec(rw, n)
                num = sum(min(v, gs.get(g, 0.0)) * gs.get(g, 0.0) for g, v in gc.items())
                nc, ns = math.sqrt(sum(v * v for v in gc.values())), math.sqrt(sum(v * v for v in gs.values()))
                per_n.append(pen * (num / (nc * ns) if nc and ns else 0.0))
            total += sum(per_n) / 4
        out[k] = 10 * total / len(refs[k])
    return out


REFS = {
    1: ["a red circle on a white background", "a picture of a red circle", "a red circle"],
    2: ["a blue square on a black background", "a picture of a blue square", "one blue square"],
    3: ["a green triangle on a white background", "a small green triangle", "a green triangle"],
}


def test_cider_matches_definition_on_hand_made_case():
    cands = {1: "a red circle on a black background", 2: "a blue square", 3: "a picture of a green circle"}
    got = cider(cands, REFS)
    want = cider_d_by_definition(cands, REFS)
    for k in cands:
        assert got.per_image[k] == pytest.approx(want[k], rel=1e-9)
    assert got.score == pytest.approx(sum(want.values()) / 3, rel=1e-9)
    assert 0 < got.per_image[2] and got.per_image[1] > got.per_image[3]  # sanity: overlaps are rewarded


def test_cider_identities():
    # Vocabulary disjoint from every reference: every clipped dot product is 0.
    assert cider({k: "zebra xylophone quartz" for k in REFS}, REFS).score == 0.0
    # Every image's references identical to the candidate: each n-gram occurs in exactly one image's
    # references, so all vectors are parallel and the score is exactly 10 (cosine 1, no length penalty).
    refs = {1: ["red circle here now"] * 2, 2: ["blue square there again"] * 2, 3: ["green shape over it"] * 2}
    got = cider({k: v[0] for k, v in refs.items()}, refs)
    assert got.score == pytest.approx(10.0, rel=1e-12)


def test_cider_tokenizes_candidates_and_references_alike():
    a = cider({1: "A red circle.", 2: "a blue square", 3: "green"}, REFS).score
    b = cider({1: "a red circle", 2: "A Blue Square!", 3: "green"}, REFS).score
    assert a == pytest.approx(b)


def test_cider_rejects_mismatched_ids_and_empty_refs():
    with pytest.raises(AWQInputError, match="different images"):
        cider({1: "a"}, {1: ["a"], 2: ["b"]})
    with pytest.raises(AWQInputError, match="without reference"):
        cider({1: "a"}, {1: []})
