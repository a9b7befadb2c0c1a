"""--spec FILE.json: an architecture the registry does not know quantizes end to end; bad specs are
refused naming what is wrong; an unknown model_type without a spec is refused."""
import json

import pytest
import torch

from awq_ext.calibrate import quantize_model
from awq_ext.cli import build_parser
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.jobs import JobOptions, run_job
from awq_ext.models.spec_file import load_spec_file
from tests.conftest import tiny_llama
from tests.w8a8.test_w8a8_job import ByteTokenizer

LLAMA_SPEC = {
    "name": "my_llama", "model_types": ["my_llama"], "blocks": "model.layers",
    "groups": [
        {"prev_op": "input_layernorm", "linears": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
         "inspect": "self_attn", "inspect_kwargs": True},
        {"prev_op": "self_attn.v_proj", "linears": ["self_attn.o_proj"], "inspect": "self_attn.o_proj"},
        {"prev_op": "post_attention_layernorm", "linears": ["mlp.gate_proj", "mlp.up_proj"], "inspect": "mlp"},
        {"prev_op": "mlp.up_proj", "linears": ["mlp.down_proj"], "inspect": "mlp.down_proj"},
    ],
    "clip_skip": ["self_attn.q_proj", "self_attn.k_proj"],
}


def _renamed_llama():
    model = tiny_llama(kv_heads=4)
    model.config.model_type = "my_llama"
    return model


def _write(tmp_path, spec) -> str:
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return str(p)


def _cfg():
    return QuantizeConfig(method="awq", group_size=64, device="cpu", awq=AWQConfig(n_grid=6, clip_n_grid=6))


def test_unknown_model_type_without_spec_is_refused():
    with pytest.raises(AWQInputError, match=r"no adapter for model_type 'my_llama'; supported: .*llama.*--spec"):
        quantize_model(_renamed_llama(), torch.zeros(1, 8, dtype=torch.long), _cfg(), progress=False)


def test_renamed_llama_quantizes_end_to_end_with_a_spec_file(tmp_path, calib_ids):
    path = _write(tmp_path, LLAMA_SPEC)
    out = run_job(JobOptions(method="awq", spec=path, n_samples=2, seqlen=32, max_windows=2, eval_seqlen=64,
                             group_size=64, awq=AWQConfig(n_grid=6, clip_n_grid=6), progress=False),
                  _renamed_llama(), ByteTokenizer())
    assert out["spec"] == path and len(out["blocks"]) == 2 and out["ppl"] > 0
    assert all("alpha" in g for b in out["blocks"] for g in b["groups"])  # MHA: all four groups searched
    # the spec file reproduces the built-in LLaMA spec exactly
    from_file = quantize_model(_renamed_llama(), calib_ids, _cfg(), progress=False, spec=load_spec_file(path))
    builtin = quantize_model(tiny_llama(kv_heads=4), calib_ids, _cfg(), progress=False)
    assert set(from_file.quantized) == set(builtin.quantized)
    for n, q in builtin.quantized.items():
        assert torch.equal(from_file.quantized[n].q, q.q), n


@pytest.mark.parametrize("mutate,match", [
    (lambda s: s["groups"][1].update(linears=["self_attn.out_proj"]), r"'self_attn.out_proj', which no block"),
    (lambda s: s.update(blocks="model.blocks"), r"'model.blocks'.*no attribute 'blocks'"),
    (lambda s: s["groups"][2].update(linears=["mlp.down_proj"]), r"post_attention_layernorm.*width 64.*down_proj"),
    (lambda s: s["groups"][0].update(linears=["self_attn.q_proj", "mlp.down_proj"]), r"input widths differ"),
    (lambda s: s["groups"][0].update(kind="scaled"), r"groups\[0\].*unknown prev-op kind 'scaled'"),
    (lambda s: s["groups"][0].pop("inspect"), r"groups\[0\]: missing key\(s\) \['inspect'\]"),
    (lambda s: s.update(model_types=["other"]), r"for model_type\(s\) \['other'\], but the model is 'my_llama'"),
])
def test_bad_spec_is_refused_naming_the_problem(tmp_path, calib_ids, mutate, match):
    spec = json.loads(json.dumps(LLAMA_SPEC))
    mutate(spec)
    with pytest.raises(AWQInputError, match=match):
        quantize_model(_renamed_llama(), calib_ids, _cfg(), progress=False, spec=load_spec_file(_write(tmp_path, spec)))


def test_unreadable_spec_file(tmp_path):
    with pytest.raises(AWQInputError, match="no such file"):
        load_spec_file(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(AWQInputError, match="not valid JSON"):
        load_spec_file(tmp_path / "bad.json")


def test_cli_passes_spec_to_quantize_and_compare():
    p = build_parser()
    assert p.parse_args(["quantize", "--spec", "a.json"]).spec == "a.json"
    assert p.parse_args(["compare", "--spec", "a.json"]).spec == "a.json"
    assert p.parse_args(["eval", "--stream", "--spec", "a.json"]).spec == "a.json"  # the streamed float model

