"""Zero-shot accuracy through lm-eval on the live model, offline: a task defined on local files."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from awq_ext.errors import AWQInputError, OfflineError
from tests.conftest import tiny_llama

pytest.importorskip("lm_eval")
TASK = "awq_ext_tiny_mc"


def _bytes_to_unicode() -> dict[int, str]:
    # The byte -> printable-character map of byte-level BPE, so every byte is one token id = its value.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in out:
            out[b], extra = chr(256 + extra), extra + 1
    return out


@pytest.fixture(scope="module")
def byte_tokenizer():
    """A Hugging Face fast tokenizer with one token per byte (ids 0..255, the tiny models' vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    b2u = _bytes_to_unicode()
    tk = Tokenizer(models.BPE(vocab={c: b for b, c in b2u.items()}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=b2u[0], pad_token=b2u[0])


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    docs = [{"question": f"Item {i}: pick one.", "choices": ["red", "green light", "blue"], "answer": i % 3}
            for i in range(5)]
    (d / "data.jsonl").write_text("\n".join(json.dumps(x) for x in docs))
    (d / "tiny.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {d / 'data.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{question}}\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return d


@torch.no_grad()
def _loglikelihood(model, tok, context: str, continuation: str) -> float:
    ctx = tok(context).input_ids
    ids = torch.tensor([tok(context + continuation).input_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return float(sum(logp[p - 1, ids[0, p]] for p in range(len(ctx), ids.shape[1])))


def _check_scores(model, tok, result) -> list[float]:
    scores = []
    for s in result["samples"][TASK]:
        for (context, continuation), resp in zip(s["arguments"], s["filtered_resps"]):
            expect = _loglikelihood(model, tok, context, continuation)
            assert resp[0] == pytest.approx(expect, rel=1e-4, abs=1e-3)
            scores.append(resp[0])
    return scores


@pytest.mark.slow
def test_zero_shot_scores_the_live_quantized_model(byte_tokenizer, task_dir, monkeypatch):
    from awq_ext.calibrate import quantize_model
    from awq_ext.config import QuantizeConfig
    from awq_ext.eval.zeroshot import zero_shot

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model = tiny_llama(layers=1)
    before = zero_shot(model, byte_tokenizer, [TASK], include_path=task_dir, log_samples=True)
    float_scores = _check_scores(model, byte_tokenizer, before)
    acc = before["metrics"][TASK]["acc"]
    # acc is the share of documents whose highest-likelihood choice is the target.
    picks = [max(range(3), key=lambda j: float_scores[3 * i + j]) for i in range(5)]
    assert acc == pytest.approx(sum(p == i % 3 for i, p in enumerate(picks)) / 5)

    quantize_model(model, None, QuantizeConfig(method="rtn", w_bit=2, group_size=32))
    after = zero_shot(model, byte_tokenizer, [TASK], include_path=task_dir, log_samples=True, limit=5)
    quant_scores = _check_scores(model, byte_tokenizer, after)  # the quantized module, not a copy, was scored
    assert max(abs(a - b) for a, b in zip(float_scores, quant_scores)) > 1e-3


def test_zero_shot_refuses_unknown_task_and_missing_data(byte_tokenizer, task_dir, monkeypatch):
    from awq_ext.eval.zeroshot import check_tasks, zero_shot

    with pytest.raises(AWQInputError, match=r"unknown lm-eval task\(s\): awq_ext_tiny_mk \(did you mean awq_ext_tiny_mc"):
        check_tasks(["awq_ext_tiny_mk"], include_path=task_dir)
    with pytest.raises(AWQInputError, match="no zero-shot task"):
        check_tasks([" "])
    with pytest.raises(AWQInputError, match="task directory .* does not exist"):
        check_tasks([TASK], include_path=task_dir / "nope")
    assert check_tasks(f"{TASK}, ", include_path=task_dir)[0] == [TASK]  # one comma-separated string
    (task_dir / "data.jsonl").rename(task_dir / "moved.jsonl")  # the task's data is gone
    try:
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        with pytest.raises(OfflineError, match="could not load the data of task"):
            zero_shot(tiny_llama(layers=1), byte_tokenizer, [TASK], include_path=task_dir)
    finally:
        (task_dir / "moved.jsonl").rename(task_dir / "data.jsonl")


def test_zero_shot_without_lm_eval_says_how_to_install(monkeypatch):
    from awq_ext.eval import zeroshot

    zeroshot._task_manager.cache_clear()
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(AWQInputError, match=r"awq_ext\[eval\]"):
        zeroshot.check_tasks(["piqa"])
    zeroshot._task_manager.cache_clear()


def test_cli_refuses_unknown_task_before_loading(capsys):
    from awq_ext.cli import main

    assert main(["quantize", "--model", "/nonexistent", "--tasks", "piqaa"]) == 2
    err = capsys.readouterr().err
    assert "unknown lm-eval task(s): piqaa (did you mean piqa" in err
    assert main(["eval", "--tasks", "piqa", "--tasks-limit", "0"]) == 2
    assert "--tasks-limit must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_quantize_then_zero_shot_on_a_local_task(byte_tokenizer, task_dir, tmp_path, monkeypatch, capsys):
    from awq_ext.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = tmp_path / "tiny"
    tiny_llama(layers=1).save_pretrained(model_dir)
    byte_tokenizer.save_pretrained(model_dir)
    out = tmp_path / "res.json"
    assert main(["quantize", "--model", str(model_dir), "--method", "rtn", "--w-bit", "4", "--group-size", "32",
                 "--eval", "none", "--tasks", TASK, "--tasks-path", str(task_dir), "--no-progress",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert 0.0 <= res["zero_shot"][TASK]["acc"] <= 1.0 and "zero_shot_error" not in res
    assert f"{TASK}: acc " in capsys.readouterr().out
