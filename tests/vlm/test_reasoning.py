"""Visual-reasoning report: answers side by side, markdown and self-contained HTML."""
from __future__ import annotations

import json

import pytest

from awq_ext.config import QuantizeConfig
from awq_ext.errors import AWQInputError
from vlm.quantize import quantize_language_tower
from vlm.reasoning import TEMPLATES, answer_all, load_questions, write_report
from vlm.synthetic import make_questions, make_synthetic_coco


def test_llava_answers_fp_and_rtn_side_by_side(llava, tmp_path):
    js, _ = make_synthetic_coco(tmp_path / "coco", n_train=1, n_test=2, size=32)
    questions = load_questions(make_questions(js, tmp_path / "q.json", n=2))
    fp = answer_all(llava, questions, TEMPLATES["llava"], max_new_tokens=4)
    quantize_language_tower(llava.model, None, QuantizeConfig(method="rtn", w_bit=4, group_size=32))
    rtn = answer_all(llava, questions, TEMPLATES["llava"], max_new_tokens=4)
    paths = write_report(questions, {"fp16": fp, "rtn": rtn}, tmp_path / "out", {"model": "tiny-llava"})
    data = json.loads(open(paths["json"]).read())
    assert [it["id"] for it in data["items"]] == ["q0", "q1"]
    assert all(set(it["answers"]) == {"fp16", "rtn"} for it in data["items"])
    md = open(paths["markdown"]).read()
    assert md.count("| ![q") == 2 and "| FP16 | RTN |" in md
    html = open(paths["html"]).read()
    assert html.count("data:image/png;base64,") == 2 and html.count("<tr>") == 3


def test_question_file_errors(tmp_path):
    p = tmp_path / "q.json"
    p.write_text(json.dumps([{"image": "missing.png", "question": "?"}]))
    with pytest.raises(AWQInputError, match="does not exist"):
        load_questions(p)
    p.write_text(json.dumps({"image": "x"}))
    with pytest.raises(AWQInputError, match="non-empty JSON list"):
        load_questions(p)
    with pytest.raises(AWQInputError, match="exactly one <image>"):
        answer_all(None, [], "no image {question}")
