"""The scripts end to end on tiny local checkpoints written by make_tiny_assets (as a user would run them)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("einops_exts")

from vlm.scripts import caption_coco, make_tiny_assets, visual_reasoning  # noqa: E402

FAST = ["--group-size", "32", "--n-samples", "2", "--seqlen", "32", "--n-grid", "3", "--clip-n-grid", "3",
        "--dtype", "float32", "--device", "cpu"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    assert make_tiny_assets.main([str(out), "--n-train", "6", "--n-test", "2"]) == 0
    return out


def test_caption_cli_fp16_vs_awq(assets, tmp_path):
    of = assets / "openflamingo"
    rc = caption_coco.main(["--family", "openflamingo", "--lang-encoder", str(of / "lm"),
                            "--vision-encoder", f"hf-clip:{of / 'vision'}", "--checkpoint", str(of / "checkpoint.pt"),
                            "--cross-attn-every-n-layers", "1", "--karpathy", str(assets / "coco/karpathy_synth.json"),
                            "--images", str(assets / "coco"), "--shots", "2", "--seeds", "3",
                            "--methods", "fp16", "awq", "--max-new-tokens", "3", "--num-beams", "2",
                            "--out", str(tmp_path), *FAST])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["methods"]) == {"fp16", "awq"} and res["delta_shots"] == 2
    assert res["methods"]["awq"]["quantization"]["quantized_linears"] == 14
    assert res["methods"]["fp16"]["quantization"] is None
    preds = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * 1 * 2
    assert "| AWQ |" in (tmp_path / "results.md").read_text()


def test_reasoning_cli_llava(assets, tmp_path):
    rc = visual_reasoning.main(["--family", "llava", "--llava", str(assets / "llava"), "--questions",
                                str(assets / "questions.json"), "--methods", "rtn", "--max-new-tokens", "3",
                                "--out", str(tmp_path), *FAST])
    assert rc == 0
    items = json.loads((tmp_path / "answers.json").read_text())["items"]
    assert len(items) == 2 and all(set(i["answers"]) == {"rtn"} for i in items)


def test_caption_cli_reports_bad_input(assets, tmp_path, capsys):
    rc = caption_coco.main(["--family", "llava", "--llava", str(assets / "llava"), "--karpathy", "x.json",
                            "--images", str(tmp_path), "--out", str(tmp_path)])
    assert rc == 2 and "few-shot COCO captioning" in capsys.readouterr().err
