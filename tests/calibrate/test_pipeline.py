import copy

import pytest
import torch

from awq_ext.calibrate import SearchRecord, quantize_model
from awq_ext.calibrate.capture import capture_block_inputs, run_chunked
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.models import block_linears, get_blocks, get_spec
from awq_ext.quant import QuantSpec, fake_quantize
from tests.conftest import plant_outliers, tiny_llama, tiny_opt


def _cfg(method, bits=3, **kw):
    return QuantizeConfig(method=method, w_bit=bits, group_size=32, chunk_size=2, propagate="fp",
                          awq=AWQConfig(**kw))


@pytest.mark.parametrize("make", [tiny_llama, tiny_opt])
def test_awq_block_error_not_above_rtn_with_outliers(make, calib_ids):
    base = make()
    plant_outliers(base)
    rtn, awq = copy.deepcopy(base), copy.deepcopy(base)
    r = quantize_model(rtn, calib_ids, _cfg("rtn"), progress=False)
    a = quantize_model(awq, calib_ids, _cfg("awq", scale_mode="act"), progress=False)
    # RTN has no calibration pass, so measure both blocks' errors here on the same float inputs.
    spec = get_spec(base)
    inps, kw = capture_block_inputs(base, get_blocks(base, spec), calib_ids)
    for i, fb in enumerate(get_blocks(base, spec)):
        ref = run_chunked(fb, inps, kw, 2)
        err = {n: float((run_chunked(get_blocks(m, spec)[i], inps, kw, 2) - ref).pow(2).mean())
               for n, m in (("rtn", rtn), ("awq", awq))}
        assert err["awq"] <= err["rtn"] * 1.02, err
        inps = ref
    for b in a.blocks:  # the searched loss never exceeds RTN's loss (identity is a candidate)
        for g in b.groups:
            if "loss" in g:
                assert g["loss"] <= g["rtn_loss"]
    assert len(r.quantized) == len(a.quantized) == sum(len(block_linears(b)) for b in get_blocks(base, spec))


def test_rtn_through_pipeline_equals_fake_quantize(llama):
    ref = copy.deepcopy(llama)
    res = quantize_model(llama, None, _cfg("rtn", bits=4), progress=False)
    spec = QuantSpec(4, 32)
    for (n, m), (_, m0) in zip(llama.named_modules(), ref.named_modules()):
        if n.startswith("model.layers") and isinstance(m, torch.nn.Linear):
            assert torch.equal(m.weight, fake_quantize(m0.weight, spec))
            assert torch.equal(res.quantized[n].dequantize(), m.weight)
    assert torch.equal(llama.lm_head.weight, ref.lm_head.weight)  # head stays float


def test_record_replay_reproduces_weights(tmp_path, calib_ids):
    base = tiny_llama()
    plant_outliers(base)
    m1, m2 = copy.deepcopy(base), copy.deepcopy(base)
    res = quantize_model(m1, calib_ids, _cfg("awq"), progress=False)
    path = tmp_path / "search.safetensors"
    res.record.save(path)
    rec = SearchRecord.load(path)
    assert set(rec.scales) == set(res.record.scales) and set(rec.clips) == set(res.record.clips)
    quantize_model(m2, None, _cfg("awq"), record=rec, progress=False)  # no calibration data needed
    for (n, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.allclose(p1, p2, atol=1e-6), n


def test_record_load_rejects_garbage(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(AWQInputError, match="unreadable or truncated"):
        SearchRecord.load(p)


def test_nan_weight_refused_before_work(llama, calib_ids):
    with torch.no_grad():
        llama.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    with pytest.raises(AWQInputError, match=r"model\.layers\.1\.mlp\.down_proj.*NaN"):
        quantize_model(llama, calib_ids, _cfg("awq"), progress=False)


def test_nan_in_calibration_activations_refused(llama, calib_ids):
    with torch.no_grad():
        llama.model.embed_tokens.weight[calib_ids[0, 0]] = float("nan")
    with pytest.raises(AWQInputError, match="calibration activations contain NaN"):
        quantize_model(llama, calib_ids, _cfg("awq"), progress=False)


def test_group_not_dividing_k_refused(llama, calib_ids):
    cfg = QuantizeConfig(method="awq", w_bit=4, group_size=128)
    with pytest.raises(AWQInputError, match="not divisible by group_size 128"):
        quantize_model(llama, calib_ids, cfg, progress=False)


def test_awq_needs_calibration(llama):
    with pytest.raises(AWQInputError, match="needs calibration data"):
        quantize_model(llama, None, _cfg("awq"), progress=False)


def test_unknown_method(llama):
    with pytest.raises(AWQInputError, match="unknown method"):
        quantize_model(llama, None, QuantizeConfig(method="nope"), progress=False)


def test_quantized_propagation_reports_block_error(llama, calib_ids):
    cfg = QuantizeConfig(method="awq", w_bit=4, group_size=32, chunk_size=3)
    res = quantize_model(llama, calib_ids, cfg, progress=False)
    assert all(0 < b.rel_error < 1 for b in res.blocks)
