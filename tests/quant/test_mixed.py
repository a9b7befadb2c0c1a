import pytest
import torch

from awq_ext.errors import AWQInputError
from awq_ext.quant import QuantSpec, fake_quantize
from awq_ext.quant.mixed import keep_fp_quantize, n_keep, select_channels


def test_keep_leaves_exactly_the_chosen_channels_untouched():
    w = torch.randn(32, 128)
    keep = torch.tensor([3, 40, 41, 127])
    r = keep_fp_quantize(w, keep, QuantSpec(3, 32))
    assert torch.equal(r.weight[:, keep], w[:, keep])
    others = torch.ones(128, dtype=torch.bool)
    others[keep] = False
    # every other channel is quantized: exactly the RTN of the weight with the kept channels zeroed
    masked = w.clone()
    masked[:, keep] = 0
    assert torch.equal(r.weight[:, others], fake_quantize(masked, QuantSpec(3, 32))[:, others])
    assert (r.weight[:, others] != w[:, others]).float().mean() > 0.5


def test_kept_outlier_no_longer_widens_its_group():
    w = torch.randn(16, 64) * 0.1
    w[:, 5] = 50.0  # an outlier column ruins RTN of its group...
    spec = QuantSpec(3, 32)
    keep = torch.tensor([5])
    r = keep_fp_quantize(w, keep, spec)
    rest = [i for i in range(32) if i != 5]
    err_keep = (r.weight[:, rest] - w[:, rest]).abs().mean()
    err_rtn = (fake_quantize(w, spec)[:, rest] - w[:, rest]).abs().mean()
    assert err_keep < 0.2 * err_rtn  # ...unless it is kept out of the group statistics


def test_selection_criteria():
    w = torch.randn(8, 100)
    w[:, 7] *= 10
    act = torch.rand(100)
    act[[11, 22]] = 5.0
    assert select_channels("activation", 0.02, w, act).tolist() == [11, 22]
    assert 7 in select_channels("weight", 0.01, w).tolist()
    r1 = select_channels("random", 0.03, w, seed=0, name="a")
    assert torch.equal(r1, select_channels("random", 0.03, w, seed=0, name="a"))
    assert not torch.equal(r1, select_channels("random", 0.03, w, seed=0, name="b"))
    assert r1.numel() == 3 and torch.equal(r1, r1.sort().values)


def test_n_keep_rule():
    assert n_keep(576, 0.001) == 1 and n_keep(576, 0.01) == 6 and n_keep(1536, 0.03) == 46 and n_keep(10, 0) == 0


def test_errors():
    w = torch.randn(4, 32)
    with pytest.raises(AWQInputError, match="criterion"):
        select_channels("largest", 0.01, w)
    with pytest.raises(AWQInputError, match="act_scale"):
        select_channels("activation", 0.1, w)
    with pytest.raises(AWQInputError, match="fraction"):
        n_keep(32, 1.5)
    with pytest.raises(AWQInputError, match="distinct"):
        keep_fp_quantize(w, torch.tensor([1, 1]), QuantSpec(4, 32))
    with pytest.raises(AWQInputError, match="distinct"):
        keep_fp_quantize(w, torch.tensor([32]), QuantSpec(4, 32))
