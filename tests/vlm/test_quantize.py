"""Only the language tower is quantized: vision / projector / perceiver / cross-attention stay bit-identical."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import QuantSpec, quantize_weight
from vlm.adapters import family_of, resolve_tower
from vlm.quantize import flamingo_text_only, quantize_language_tower, tower_linears

FAST_AWQ = QuantizeConfig(method="awq", w_bit=4, group_size=32, awq=AWQConfig(n_grid=3, clip_n_grid=3))


def _calib(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))


def _check_only_tower_changed(model, before, tq, fp_prefixes):
    lin = tower_linears(model)
    assert set(tq.quantized) == set(lin) and lin, "every language-tower linear is quantized, nothing else"
    block_param_ids = {id(p) for m in lin.values() for p in m.parameters()}
    # everything outside the decoder blocks' linears and norms is bit-identical
    for name, p in model.named_parameters(remove_duplicate=False):
        if any(name.startswith(f) for f in fp_prefixes):
            assert torch.equal(p, before[name]), f"{name} changed"
    changed_linears = 0
    for name, m in lin.items():
        qw = tq.quantized[name]
        # the weight now holds exactly the dequantized 4-bit codes (re-quantizing is a fixed point)
        assert torch.equal(m.weight.data, qw.dequantize().to(m.weight.dtype)), name
        q, _, _ = quantize_weight(m.weight.data, QuantSpec(4, 32, True), name)
        assert int(q.max()) <= 15 and int(q.min()) >= 0
        changed_linears += not torch.equal(m.weight, before[_first_name(model, m.weight)])
    assert changed_linears == len(lin)
    assert block_param_ids


def _first_name(model, t):
    return next(n for n, p in model.named_parameters(remove_duplicate=False) if p is t)


def test_openflamingo_awq_quantizes_language_tower_only(flamingo):
    model = flamingo.model
    before = {n: p.detach().clone() for n, p in model.named_parameters(remove_duplicate=False)}
    cls = type(model.lang_encoder)
    assert family_of(model) == "openflamingo"
    tq = quantize_language_tower(model, _calib(len(flamingo.tokenizer)), FAST_AWQ)
    assert tq.tower == "lang_encoder" and tq.lm_spec.endswith("llama")
    assert len(tq.quantized) == 2 * 7
    _check_only_tower_changed(model, before, tq, ("vision_encoder.", "perceiver.", "lang_encoder.gated_cross_attn_layers.",
                                                  "lang_encoder.model.embed_tokens.", "lang_encoder.lm_head."))
    # cross-attention parameters (reached through the FlamingoLayers too) are untouched
    xattn = [n for n in before if ".gated_cross_attn_layer." in n]
    assert xattn and all(torch.equal(dict(model.named_parameters(remove_duplicate=False))[n], before[n]) for n in xattn)
    # the wrapper structure and the compat class are back after the text-only view
    assert type(model.lang_encoder) is cls
    assert all(hasattr(layer, "gated_cross_attn_layer") for layer in model.lang_encoder.model.layers)
    img = Image.new("RGB", (40, 40), (200, 20, 20))
    out = flamingo.generate([[img]], ["<image>Output:"], max_new_tokens=3, num_beams=2)
    assert len(out) == 1 and isinstance(out[0], str)


def test_llava_rtn_quantizes_language_tower_only(llava):
    model = llava.model
    before = {n: p.detach().clone() for n, p in model.named_parameters(remove_duplicate=False)}
    tower = resolve_tower(model)
    assert tower.path == "model.language_model" and tower.blocks == "layers"
    tq = quantize_language_tower(model, None, QuantizeConfig(method="rtn", w_bit=4, group_size=32))
    _check_only_tower_changed(model, before, tq, ("model.vision_tower.", "model.multi_modal_projector.", "lm_head.",
                                                  "model.language_model.embed_tokens.", "model.language_model.norm."))
    # RTN folds nothing: the norms inside the blocks are unchanged as well
    norms = [n for n in before if "layernorm" in n]
    assert all(torch.equal(dict(model.named_parameters())[n], before[n]) for n in norms)


def test_text_only_view_restores_on_error(flamingo):
    lm = flamingo.model.lang_encoder
    cls, layers = type(lm), lm.model.layers
    with pytest.raises(RuntimeError, match="boom"):
        with flamingo_text_only(lm, "model.layers"):
            assert lm.model.layers is lm.old_decoder_blocks and type(lm) is not cls
            raise RuntimeError("boom")
    assert type(lm) is cls and lm.model.layers is layers
    with pytest.raises(AWQInputError, match="decoder layers at"):
        with flamingo_text_only(lm, "transformer.blocks"):
            pass


def test_unknown_family_and_layout_errors(llava):
    with pytest.raises(AWQInputError, match="unknown VLM family"):
        resolve_tower(llava.model, "blip")
    with pytest.raises(AWQInputError, match="no openflamingo layout"):
        resolve_tower(llava.model, "openflamingo")
    with pytest.raises(AWQInputError, match="cannot tell"):
        family_of(torch.nn.Linear(2, 2))


def test_mpt_spec_quantizes_a_tiny_mpt():
    from transformers import MptConfig, MptForCausalLM

    from awq_ext.calibrate import quantize_model

    torch.manual_seed(0)
    m = MptForCausalLM(MptConfig(d_model=64, n_heads=4, n_layers=1, expansion_ratio=2, vocab_size=128,
                                 max_seq_len=64)).eval()
    ref_in = torch.randint(0, 128, (1, 16))
    res = quantize_model(m, _calib(128), FAST_AWQ, progress=False)
    assert set(res.quantized) == {f"transformer.blocks.0.{n}" for n in ("attn.Wqkv", "attn.out_proj", "ffn.up_proj",
                                                                       "ffn.down_proj")}
    assert [g["prev_op"] for g in res.blocks[0].groups] == ["norm_1", "norm_2"]
    assert torch.isfinite(m(ref_in).logits).all()
