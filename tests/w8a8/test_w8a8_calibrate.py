"""W8A8 calibration flow on tiny Llama/OPT models built from transformers configs."""
import pytest
import torch
from torch import nn

from awq_ext.calibrate.capture import capture_block_inputs, run_chunked
from awq_ext.calibrate.driver import collect_inputs
from awq_ext.errors import AWQInputError
from awq_ext.models import block_linears, get_blocks, get_spec
from awq_ext.nn.w8a8 import W8A8Linear
from awq_ext.quant.quantizer import QuantSpec, compute_qparams
from awq_ext.w8a8 import W8A8Config, quantize_w8a8
from awq_ext.w8a8.calibrate import equalize_block
from tests.conftest import plant_outliers, tiny_llama, tiny_opt

MODELS = {"llama-gqa": tiny_llama, "llama-mha": lambda: tiny_llama(kv_heads=4), "opt": tiny_opt}


def _outlier_model(make):
    m = make()
    plant_outliers(m)
    return m


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
@pytest.mark.parametrize("cfg", [W8A8Config("smoothquant", alpha=0.3), W8A8Config("smoothquant", alpha=0.7),
                                 W8A8Config("aweq")], ids=["sq0.3", "sq0.7", "aweq"])
def test_equalization_is_exact_before_quantization(make, cfg, calib_ids):
    model = _outlier_model(make)
    spec = get_spec(model)
    blocks = get_blocks(model, spec)
    with torch.no_grad():
        ref_logits = model(calib_ids).logits
        inps, kw = capture_block_inputs(model, blocks, calib_ids)
        n_groups = 0
        for block in blocks:
            feats, before = collect_inputs(block, inps, kw, list(block_linears(block)), 2)
            scales = {}
            groups = equalize_block(block, spec, feats, cfg, "", scales)
            n_groups += len(scales)
            assert any(float(s.max() / s.min()) > 2 for s in scales.values())  # non-trivial factors
            after = run_chunked(block, inps, kw, 2)
            assert float((after - before).norm() / before.norm()) < 1e-5
            # the recorded inputs were updated to what the consumers now see
            feats2, _ = collect_inputs(block, inps, kw, list(block_linears(block)), 2)
            for name in feats:
                torch.testing.assert_close(feats2[name], feats[name], rtol=1e-4, atol=1e-5)
            assert len(groups) == len(spec.groups)
            inps = after
        logits = model(calib_ids).logits
    assert n_groups >= 2 * len(blocks)
    assert float((logits - ref_logits).norm() / ref_logits.norm()) < 1e-5


@pytest.mark.parametrize("make", [tiny_llama, tiny_opt], ids=["llama", "opt"])
@pytest.mark.parametrize("act", ["static", "dynamic"])
def test_w8a8_replaces_every_block_linear_and_keeps_head_float(make, act, calib_ids):
    model = make()
    with torch.no_grad():
        ref = model(calib_ids).logits
    res = quantize_w8a8(model, calib_ids, W8A8Config("aweq", act_quant=act), progress=False)
    blocks = get_blocks(model, get_spec(model))
    for block in blocks:
        assert not block_linears(block)  # no float nn.Linear left inside a block
        mods = [m for m in block.modules() if isinstance(m, W8A8Linear)]
        assert mods and all(m.act_mode == act and m.bias is not None for m in mods)  # bias correction on
    assert isinstance(model.lm_head, nn.Linear) and not isinstance(model.lm_head, W8A8Linear)
    with torch.no_grad():
        out = model(calib_ids).logits
    assert float((out - ref).norm() / ref.norm()) < 0.05
    assert len(res.blocks) == len(blocks) and all(b.rel_error < 0.01 for b in res.blocks)
    assert res.scales  # factors recorded for replay


def test_equalization_beats_rtn_with_activation_outliers(calib_ids):
    """Per-tensor static W8A8 on a model with outlier channels: moving the range into the weights helps."""
    errs = {}
    for cfg in (W8A8Config("w8a8-rtn", act_quant="static"), W8A8Config("smoothquant", 0.5, "static"),
                W8A8Config("aweq", act_quant="static", bias_correction=False)):
        model = _outlier_model(tiny_llama)
        with torch.no_grad():
            ref = model(calib_ids).logits
            quantize_w8a8(model, calib_ids, cfg, progress=False)
            errs[cfg.label()] = float((model(calib_ids).logits - ref).norm() / ref.norm())
    rtn = errs["w8a8-rtn W8A8-static"]
    assert errs["aweq W8A8-static"] < 0.7 * rtn, errs
    assert errs["smoothquant(a=0.5) W8A8-static"] < 0.7 * rtn, errs


def test_bias_correction_lowers_mean_block_error(calib_ids):
    """With bias correction, the quantized model's mean logit shift on the calibration data shrinks."""
    shifts = {}
    for bc in (False, True):
        model = _outlier_model(tiny_opt)
        with torch.no_grad():
            ref = model(calib_ids).logits
            quantize_w8a8(model, calib_ids, W8A8Config("aweq", act_quant="static", bias_correction=bc),
                          progress=False)
            shifts[bc] = float((model(calib_ids).logits - ref).reshape(-1, ref.shape[-1]).mean(0).abs().mean())
    assert shifts[True] < shifts[False], shifts


@pytest.mark.parametrize("bc", [False, True])
def test_weight_only_equalized_low_bit(bc, calib_ids):
    model = _outlier_model(tiny_llama)
    cfg = W8A8Config("aweq", weight_only=True, w_bit=3, group_size=32, bias_correction=bc)
    with torch.no_grad():
        ref = model(calib_ids).logits
        res = quantize_w8a8(model, calib_ids, cfg, progress=False)
        out = model(calib_ids).logits
    spec = QuantSpec(3, 32, True)
    for block in get_blocks(model, get_spec(model)):
        for name, lin in block_linears(block).items():
            w = lin.weight.data
            s, z = compute_qparams(w, spec)
            codes = w.reshape(w.shape[0], -1, 32) / s.unsqueeze(-1) + z.unsqueeze(-1)
            assert torch.allclose(codes, codes.round(), atol=1e-3), name  # weights lie on the 3-bit grid
            assert (lin.bias is not None) == bc
    assert float((out - ref).norm() / ref.norm()) < 0.5
    assert all(b.groups for b in res.blocks)


def test_gqa_skips_v_to_o(calib_ids):
    model = tiny_llama(kv_heads=2)
    res = quantize_w8a8(model, calib_ids, W8A8Config("smoothquant"), progress=False)
    skipped = [g for g in res.blocks[0].groups if "skipped" in g]
    assert [g["prev_op"] for g in skipped] == ["self_attn.v_proj"]


def test_errors(calib_ids):
    with pytest.raises(AWQInputError, match="unknown W8A8 method"):
        W8A8Config("gptq")
    with pytest.raises(AWQInputError, match="alpha"):
        W8A8Config("smoothquant", alpha=-0.1)
    with pytest.raises(AWQInputError, match="act-quant"):
        W8A8Config("aweq", act_quant="per-channel")
    with pytest.raises(AWQInputError, match="bit width"):
        W8A8Config("aweq", weight_only=True, w_bit=1)
    with pytest.raises(AWQInputError, match="token ids"):
        quantize_w8a8(tiny_llama(), None, W8A8Config(), progress=False)
    model = tiny_llama()
    quantize_w8a8(model, calib_ids, W8A8Config(), progress=False)
    with pytest.raises(AWQInputError, match="already quantized"):
        quantize_w8a8(model, calib_ids, W8A8Config(), progress=False)
