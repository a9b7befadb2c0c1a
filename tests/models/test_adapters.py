import pytest
import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.models import SPECS, block_linears, get_blocks, get_module, get_spec, group_applies
from tests.conftest import tiny_llama, tiny_opt


@pytest.mark.parametrize("make", [tiny_llama, tiny_opt])
def test_groups_cover_every_linear(make):
    model = make()
    spec = get_spec(model)
    for block in get_blocks(model, spec):
        covered = {n for g in spec.groups for n in g.linears}
        assert covered == set(block_linears(block)), "every block linear must belong to a scaling group"
        for g in spec.groups:
            prev = get_module(block, g.prev_op)
            assert isinstance(prev, nn.Linear) or prev.weight.dim() == 1
            get_module(block, g.inspect)
        assert set(spec.clip_skip) <= covered


def test_gqa_skips_v_to_o_only_when_widths_differ():
    gqa = tiny_llama(kv_heads=2)
    mha = tiny_llama(kv_heads=4)
    spec = get_spec(gqa)
    vo = next(g for g in spec.groups if g.prev_op == "self_attn.v_proj")
    assert not group_applies(get_blocks(gqa, spec)[0], vo)
    assert group_applies(get_blocks(mha, spec)[0], vo)


def test_llama_family_types_registered():
    for t in ("llama", "mistral", "qwen2", "opt"):
        assert t in SPECS


def test_unknown_model_type():
    class Fake(nn.Module):
        class config:
            model_type = "gpt_bogus"

    with pytest.raises(AWQInputError, match="no adapter for model_type 'gpt_bogus'"):
        get_spec(Fake())


def test_bad_path_names_missing_part():
    with pytest.raises(AWQInputError, match="no attribute 'nope'"):
        get_module(tiny_llama(), "model.nope.layers")
