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
