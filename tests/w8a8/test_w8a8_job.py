"""run_w8a8: the job behind the CLI methods, same report fields as run_job."""
import pytest
import torch

from awq_ext.errors import AWQInputError
from awq_ext.jobs import JobOptions, TextCache, run_job
from awq_ext.w8a8 import config_from_options, run_w8a8
from tests.conftest import tiny_llama


class ByteTokenizer:
    """Stand-in tokenizer: one token per UTF-8 byte (vocab 256, as the tiny models)."""

    class _Out:
        def __init__(self, ids):
            self.input_ids = ids

    def __call__(self, text, return_tensors="pt"):
        return self._Out(torch.tensor([list(text.encode("utf-8"))], dtype=torch.long))


def _opts(**kw):
    base = dict(n_samples=2, seqlen=32, max_windows=2, eval_seqlen=64, progress=False)
    base.update(kw)
    return JobOptions(**base)


def test_report_has_run_job_fields():
    tok = ByteTokenizer()
    texts = TextCache(tok)
    fp = run_job(_opts(method="fp16"), tiny_llama(), tok, texts)
    out = run_w8a8(_opts(method="smoothquant", extra={"alpha": 0.3, "act_quant": "static"}), tiny_llama(), tok, texts)
    ref_keys = set(fp) | {"quantize_seconds", "peak_rss_mb_after_quantize", "blocks"}
    assert ref_keys <= set(out), ref_keys - set(out)
    assert out["bits"] == 8 and out["act_quant"] == "static" and out["alpha"] == 0.3
    assert out["bias_correction"] is False and out["mode"] == "w8a8"
    assert out["eval"]["token_range"] == fp["eval"]["token_range"]
    cal = out["calib"]["token_range"]
    assert cal[0] >= fp["eval"]["token_range"][1]  # calibration tokens are disjoint from evaluation
    assert out["ppl"] == pytest.approx(fp["ppl"], rel=0.05)


def test_weight_only_report_and_defaults():
    tok = ByteTokenizer()
    out = run_w8a8(_opts(method="aweq", w_bit=3, group_size=32, extra={"weight_only": True}), tiny_llama(), tok)
    assert out["mode"] == "weight-only" and out["bits"] == 3 and out["group_size"] == 32
    assert out["bias_correction"] is True and out["act_quant"] is None  # aweq defaults to bias correction
    assert out["label"] == "aweq+bc W3g32"


def test_option_errors():
    with pytest.raises(AWQInputError, match="unknown W8A8 options"):
        config_from_options(_opts(method="aweq", extra={"alhpa": 0.5}))
    with pytest.raises(AWQInputError, match="handles"):
        run_w8a8(_opts(method="awq"), tiny_llama(), ByteTokenizer())
    with pytest.raises(AWQInputError, match="--output"):
        run_w8a8(_opts(method="aweq", output="/tmp/x"), tiny_llama(), ByteTokenizer())
    assert config_from_options(_opts(method="aweq", extra={"bias_correction": False})).use_bias_correction is False
