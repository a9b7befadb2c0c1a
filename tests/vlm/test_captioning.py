"""Captioning runner: Karpathy loading, prompt format, end-to-end with the tiny OpenFlamingo, report."""
from __future__ import annotations

import json

import pytest

from awq_ext.errors import AWQInputError
from vlm.captioning import TRAIN_SPLITS, CaptionConfig, MethodResult, build_prompt, evaluate_captioning, \
    load_karpathy, postprocess, report_table, results_json
from vlm.synthetic import make_synthetic_coco


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("coco"), n_train=8, n_test=3, size=32)


def test_load_karpathy_splits_and_errors(coco, tmp_path):
    js, root = coco
    test = load_karpathy(js, root, ("test",))
    train = load_karpathy(js, root, TRAIN_SPLITS)
    assert len(test) == 3 and len(train) == 8 and all(len(im.captions) == 5 for im in test)
    assert len(load_karpathy(js, root, ("test",), max_images=2)) == 2
    with pytest.raises(AWQInputError, match="neither at"):
        load_karpathy(js, tmp_path, ("test",))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(AWQInputError, match="not a Karpathy"):
        load_karpathy(bad, root, ("test",))
    with pytest.raises(AWQInputError, match="no images in split"):
        load_karpathy(js, root, ("val",))


def test_prompt_format(coco):
    js, root = coco
    demos = load_karpathy(js, root, TRAIN_SPLITS)
    prompt, paths = build_prompt(demos, 2, 2)
    assert prompt == (f"<image>Output:{demos[0].captions[0]}<|endofchunk|>"
                      f"<image>Output:{demos[1].captions[0]}<|endofchunk|><image>Output:")
    assert paths == [demos[0].path, demos[1].path]
    zero, zpaths = build_prompt(demos, 0, 2)
    assert zero == f"Output:{demos[0].captions[0]}<|endofchunk|>Output:{demos[1].captions[0]}<|endofchunk|><image>Output:"
    assert zpaths == []
    assert postprocess(' a "red" dog Output: more') == "a red dog"


class EchoRunner:
    """Answers with the caption of the demonstration before the query: deterministic, scoreable."""

    family, interleaved = "openflamingo", True

    def generate(self, images, prompts, **kw):
        out = []
        for p in prompts:
            chunks = p.split("<|endofchunk|>")
            out.append(chunks[-2].split("Output:")[-1] + "<|endofchunk|>" if len(chunks) > 1 else "nothing")
        return out


def test_evaluate_and_report_with_a_scripted_runner(coco):
    js, root = coco
    q, pool = load_karpathy(js, root, ("test",)), load_karpathy(js, root, TRAIN_SPLITS)
    cfg = CaptionConfig(shots=(0, 4), seeds=(1, 2), batch_size=2)
    seen = []
    res = evaluate_captioning(EchoRunner(), q, pool, cfg, "fp16", on_prediction=seen.append)
    assert len(seen) == 2 * 2 * 3 and set(res.scores) == {0, 4} and set(res.scores[4]) == {1, 2}
    worse = MethodResult("awq", {k: {s: v - 0.1 for s, v in d.items()} for k, d in res.scores.items()})
    table = report_table([res, worse], cfg.shots)
    assert "| AWQ |" in table and "Δ(4-shot) vs FP16" in table and "-10.00" in table
    js_out = results_json([res, worse], cfg, {"x": 1})
    assert js_out["methods"]["awq"]["delta_vs_fp16"] == pytest.approx(-0.1)
    json.dumps(js_out)
    with pytest.raises(AWQInputError, match="training images"):
        CaptionConfig(shots=(32,)).validate(len(pool))


def test_tiny_openflamingo_captions_end_to_end(flamingo, coco):
    js, root = coco
    q, pool = load_karpathy(js, root, ("test",), max_images=2), load_karpathy(js, root, TRAIN_SPLITS)
    cfg = CaptionConfig(shots=(0, 2), seeds=(0,), num_beams=2, max_new_tokens=4, batch_size=2)
    preds = []
    res = evaluate_captioning(flamingo, q, pool, cfg, "fp16", on_prediction=preds.append)
    assert len(preds) == 4 and all(isinstance(p["caption"], str) and "<image>" not in p["caption"] for p in preds)
    assert all(0.0 <= v for d in res.scores.values() for v in d.values())
