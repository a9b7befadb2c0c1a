"""Folding scales without quantizing must leave every block's output unchanged, for every spec."""
import pytest
import torch

from awq_ext.calibrate.capture import capture_block_inputs, run_chunked
from awq_ext.calibrate.fold import fold_scales
from awq_ext.errors import AWQInputError
from awq_ext.models import get_blocks, get_module, get_spec, group_applies
from tests.conftest import tiny_llama, tiny_opt


@pytest.mark.parametrize("make", [tiny_llama, lambda: tiny_llama(kv_heads=4), tiny_opt])
def test_folding_is_exact(make, calib_ids):
    model = make()
    spec = get_spec(model)
    blocks = get_blocks(model, spec)
    inps, kw = capture_block_inputs(model, blocks, calib_ids)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for block in blocks:
            before = run_chunked(block, inps, kw, 2)
            for grp in spec.groups:
                if not group_applies(block, grp):
                    continue
                linears = [get_module(block, n) for n in grp.linears]
                s = torch.rand(linears[0].in_features, generator=g) * 4 + 0.25
                fold_scales(get_module(block, grp.prev_op), linears, s)
            after = run_chunked(block, inps, kw, 2)
            rel = (after - before).norm() / before.norm()
            assert rel < 1e-5
            inps = after
    # and the whole model's logits too
    ids = calib_ids[:1]
    assert torch.isfinite(model(ids).logits).all()


def test_fold_rejects_width_mismatch():
    model = tiny_llama()
    block = get_blocks(model, get_spec(model))[0]
    with pytest.raises(AWQInputError, match="cannot fold"):
        fold_scales(block.input_layernorm, [block.self_attn.q_proj], torch.ones(10))


def test_fold_rejects_unknown_prev_op():
    with pytest.raises(AWQInputError, match="don't know how to fold"):
        fold_scales(torch.nn.ReLU(), [torch.nn.Linear(4, 4)], torch.ones(4))
