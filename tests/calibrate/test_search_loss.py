"""The exact shortcuts of the scale search equal the direct computation."""
import copy

import pytest
import torch

from awq_ext.calibrate import quantize_model
from awq_ext.calibrate.search_loss import LinearGramLoss, ModuleOutputLoss, group_loss
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.quant import QuantSpec
from awq_ext.quant.awq import gram_output_sse, input_gram
from tests.conftest import plant_outliers, tiny_llama, tiny_opt


def test_gram_sse_equals_direct_output_error():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 96, generator=g, dtype=torch.float64)
    dw = torch.randn(40, 96, generator=g, dtype=torch.float64)
    direct = float((x.reshape(-1, 96) @ dw.t()).pow(2).sum())
    gram = float(gram_output_sse(dw, input_gram(x, chunk=37)))  # chunking must not change the sum
    assert abs(gram - direct) <= 1e-6 * direct


@pytest.mark.parametrize("bits,group", [(4, 32), (3, 64), (4, -1)])
def test_linear_gram_loss_equals_module_output_loss(bits, group):
    g = torch.Generator().manual_seed(bits)
    lin = torch.nn.Linear(128, 48, bias=True).double()
    x = torch.randn(4, 30, 128, generator=g, dtype=torch.float64)
    x[..., 5] *= 20
    spec = QuantSpec(bits, group)
    direct = ModuleOutputLoss(lin, [lin], x, {}, spec, chunk=3)
    gram = LinearGramLoss(lin, x, spec)
    w0 = lin.weight.data.clone()
    for _ in range(5):
        s = torch.rand(128, generator=g, dtype=torch.float64) + 0.3
        a, b = direct(s), gram(s)
        assert abs(a - b) <= 1e-6 * a
    direct.close()
    assert torch.equal(lin.weight.data, w0)  # the search leaves the module as it was


def test_group_loss_picks_gram_only_for_single_linear_inspect():
    lin = torch.nn.Linear(8, 8)
    mlp = torch.nn.Sequential(lin, torch.nn.ReLU())
    x = torch.randn(2, 5, 8)
    spec = QuantSpec(4, -1)
    assert isinstance(group_loss(lin, [lin], x, {}, spec, 2), LinearGramLoss)
    assert isinstance(group_loss(lin, [lin], x, {}, spec, 2, exact_shortcuts=False), ModuleOutputLoss)
    assert isinstance(group_loss(mlp, [lin], x, {}, spec, 2), ModuleOutputLoss)
    # fewer tokens (6) than input channels (8): the direct form is cheaper, so it is used
    assert isinstance(group_loss(lin, [lin], x[:, :3], {}, spec, 2), ModuleOutputLoss)


@pytest.mark.parametrize("make", [tiny_llama, tiny_opt])
def test_block_scales_identical_with_and_without_exact_shortcuts(make):
    base = make()
    plant_outliers(base)
    # 4 x 48 = 192 tokens > the widest input (128), so every single-linear group takes the Gram form
    calib_ids = torch.randint(0, 256, (4, 48), generator=torch.Generator().manual_seed(1))
    recs = []
    for exact in (True, False):
        m = copy.deepcopy(base)
        cfg = QuantizeConfig(method="awq", w_bit=3, group_size=32, chunk_size=2,
                             awq=AWQConfig(exact_shortcuts=exact))
        recs.append(quantize_model(m, calib_ids, cfg, progress=False).record)
    fast, direct = recs
    assert any(k.endswith(("mlp.up_proj", "fc1", "self_attn.v_proj")) for k in fast.scales)  # Gram groups ran
    assert list(fast.scales) == list(direct.scales)
    for k in fast.scales:
        assert fast.scales[k].alpha == direct.scales[k].alpha, k
        assert torch.equal(fast.scales[k].scales, direct.scales[k].scales), k
        assert fast.scales[k].loss == pytest.approx(direct.scales[k].loss, rel=1e-4)
    for k in fast.clips:
        assert torch.equal(fast.clips[k], direct.clips[k]), k


def test_recorded_reference_equals_recomputed_one():
    # The driver's calibration forward records the inspected module's float output per chunk; the loss
    # built on it equals the loss that recomputes it, and a mismatched recording is not used.
    from awq_ext.calibrate.driver import collect_inputs

    model = tiny_llama()
    block = model.model.layers[0]
    x = torch.randn(5, 16, 64)
    refs = {"mlp": []}
    feats, _ = collect_inputs(block, x, {"position_embeddings": model.model.rotary_emb(x, torch.arange(16)[None])},
                              ["mlp.gate_proj"], chunk=2, module_outputs=refs)
    assert len(refs["mlp"]) == 3  # 5 samples in chunks of 2
    mlp, lins, spec = block.mlp, [block.mlp.gate_proj, block.mlp.up_proj], QuantSpec(3, 32)
    xs = feats["mlp.gate_proj"]
    recorded = ModuleOutputLoss(mlp, lins, xs, {}, spec, 2, reference=refs["mlp"])
    fresh = ModuleOutputLoss(mlp, lins, xs, {}, spec, 2)
    assert all(a is b for a, b in zip(recorded.reference, refs["mlp"]))
    s = torch.rand(64) + 0.5
    assert recorded(s) == pytest.approx(fresh(s), rel=1e-6)
    other = ModuleOutputLoss(mlp, lins, xs[:, :8], {}, spec, 2, reference=refs["mlp"])  # shapes differ
    assert all(a is not b for a, b in zip(other.reference, refs["mlp"]))


def test_loss_inputs_per_token_groups_spread_over_all_samples():
    from awq_ext.calibrate.pipeline import loss_inputs
    from awq_ext.models.spec import ScalingGroup

    x = torch.arange(4 * 10 * 2, dtype=torch.float32).reshape(4, 10, 2)
    attn = ScalingGroup("ln", ("q", "k"), inspect="attn", inspect_kwargs=True)
    mlp = ScalingGroup("ln2", ("gate", "up"), inspect="mlp")
    down = ScalingGroup("up", ("down",), inspect="down")
    cfg = AWQConfig(loss_samples=2, loss_tokens=8)
    assert torch.equal(loss_inputs(x, attn, cfg), x[:2])  # attention keeps whole sequences
    sub = loss_inputs(x, mlp, cfg)
    assert sub.shape == (1, 8, 2)
    rows = sub[0, :, 0] / 2  # token index of each picked row
    assert rows[0] == 0 and rows[-1] == 39 and (rows[1:] > rows[:-1]).all()  # first to last sample, in order
    assert torch.equal(loss_inputs(x, down, cfg), x[:2])  # Gram groups: token count costs nothing
    assert torch.equal(loss_inputs(x, mlp, AWQConfig(loss_tokens=None)), x)
