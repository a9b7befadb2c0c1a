"""Mixture of experts: routing survives folding, starved experts take the RTN fallback, and fused 3-D
expert storage quantizes to the same codes as per-expert linears."""
import copy

import pytest
import torch
import torch.nn as nn

from awq_ext.calibrate import quantize_model
from awq_ext.calibrate.capture import capture_block_inputs
from awq_ext.calibrate.fold import fold_group
from awq_ext.calibrate.prepare import prepare_model
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.models import bind_groups, get_blocks, get_spec
from awq_ext.models.experts import ExpertList, unfuse_experts
from awq_ext.quant.quantizer import quantize_weight
from tests.models.tiny_archs import calib_ids, tiny_model

MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")


def _cfg() -> QuantizeConfig:
    return QuantizeConfig(method="awq", w_bit=4, group_size=64, device="cpu",
                          awq=AWQConfig(n_grid=6, clip_n_grid=6, clip_tokens=64))


@pytest.mark.parametrize("model_type", MOE_TYPES)
def test_router_logits_unchanged_by_folding(model_type):
    model = tiny_model(model_type)
    spec = get_spec(model)
    prepare_model(model, spec)
    blocks = get_blocks(model, spec)
    i = next(i for i, b in enumerate(blocks) if hasattr(b.mlp, "experts"))
    x, _ = capture_block_inputs(model, blocks, calib_ids())  # block 0's inputs stand in for block i's
    block = blocks[i]
    group = next(g for g, why in bind_groups(block, spec) if why is None and g.routers)
    with torch.no_grad():
        h = block.post_attention_layernorm(x).reshape(-1, x.shape[-1])
        before = [nn.functional.linear(h, block.get_submodule(r).weight) for r in group.routers]
        fold_group(block, group, torch.rand(x.shape[-1], generator=torch.Generator().manual_seed(2)) * 4 + 0.25)
        h = block.post_attention_layernorm(x).reshape(-1, x.shape[-1])
        after = [nn.functional.linear(h, block.get_submodule(r).weight) for r in group.routers]
    for b, a in zip(before, after):
        assert float((a - b).abs().max() / b.abs().max()) <= 1e-5
        if b.shape[-1] > 1:
            assert torch.equal(a.topk(2).indices, b.topk(2).indices)


def test_unfused_experts_compute_what_fused_ones_do():
    model = tiny_model("mixtral")
    ids = calib_ids()
    with torch.no_grad():
        ref = model(ids).logits
        unfuse_experts(model)
        assert isinstance(model.model.layers[0].mlp.experts, ExpertList)
        assert torch.equal(model(ids).logits, ref)


def test_starved_expert_takes_rtn_fallback_and_is_reported():
    # top-1 routing over 2 tokens: at most 2 of the 4 experts of a layer see any token.
    model = tiny_model("mixtral", num_experts_per_tok=1)
    ids = calib_ids(n=1, seqlen=2)
    prepare_model(model, get_spec(model))
    originals = {n: m.weight.detach().clone() for n, m in model.named_modules() if n.endswith("down_proj")}
    res = quantize_model(model, ids, _cfg(), progress=False)
    starved = [(b.index, g) for b in res.blocks for g in b.groups
               if "received 0 calibration tokens" in g.get("skipped", "")]
    assert starved, "the test needs an expert that gets no token"
    for idx, g in starved:
        prev = f"model.layers.{idx}.{g['prev_op']}"  # mlp.experts.{e}.up_proj
        down = prev.replace("up_proj", "down_proj")
        assert "RTN" in g["skipped"] and prev not in res.record.scales and down not in res.record.clips
        q = res.quantized[down]  # quantized, by plain RTN of the untouched weight
        codes, scales, zeros = quantize_weight(originals[down], _cfg().quant_spec(), down)
        assert torch.equal(q.q, codes) and torch.equal(q.scales, scales)
        assert torch.isfinite(q.scales).all()


def test_starved_expert_under_gptq_falls_back_to_rtn_and_is_reported():
    model = tiny_model("mixtral", num_experts_per_tok=1)
    res = quantize_model(model, calib_ids(n=1, seqlen=2), QuantizeConfig(method="gptq", group_size=64, device="cpu"),
                         progress=False)
    fallbacks = [g for b in res.blocks for g in b.groups if "fallback" in g]
    assert fallbacks and all("RTN instead of gptq" in g["fallback"] for g in fallbacks)
    assert all(torch.isfinite(q.scales).all() for q in res.quantized.values())


def _per_expert_copy(model):
    """The same model with experts stored as per-expert linears, built independently of unfuse."""
    out = copy.deepcopy(model)

    class Expert(nn.Module):
        def __init__(self, gu, down, act):
            super().__init__()
            i = gu.shape[0] // 2
            self.gate_proj, self.up_proj = nn.Linear(gu.shape[1], i, bias=False), nn.Linear(gu.shape[1], i, bias=False)
            self.down_proj, self.act_fn = nn.Linear(i, down.shape[0], bias=False), act
            with torch.no_grad():
                self.gate_proj.weight.copy_(gu[:i])
                self.up_proj.weight.copy_(gu[i:])
                self.down_proj.weight.copy_(down)

        def forward(self, x):
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    for layer in out.model.layers:
        fused = layer.mlp.experts
        layer.mlp.experts = ExpertList(Expert(fused.gate_up_proj[e], fused.down_proj[e], fused.act_fn)
                                       for e in range(fused.gate_up_proj.shape[0]))
    return out


def test_fused_and_per_expert_storage_give_the_same_codes():
    fused = tiny_model("mixtral")
    per_expert = _per_expert_copy(fused)
    ids = calib_ids()
    a = quantize_model(fused, ids, _cfg(), progress=False)
    b = quantize_model(per_expert, ids, _cfg(), progress=False)
    assert set(a.quantized) == set(b.quantized)
    assert any(".mlp.experts.3.down_proj" in n for n in a.quantized)
    for n in a.quantized:
        assert torch.equal(a.quantized[n].q, b.quantized[n].q), n
        assert torch.equal(a.quantized[n].scales, b.quantized[n].scales), n
