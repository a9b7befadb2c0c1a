"""Each prev-op kind of the fold, alone: exact in float32 (and bf16 for the offset norm)."""
import pytest
import torch
import torch.nn as nn

from awq_ext.calibrate.fold import fold_scales
from awq_ext.errors import AWQInputError
from awq_ext.models import bind_groups, get_blocks, get_spec
from tests.models.tiny_archs import tiny_model

torch.manual_seed(0)


def _scales(k: int) -> torch.Tensor:
    return torch.rand(k, generator=torch.Generator().manual_seed(5)) * 4 + 0.25


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


class OffsetRMSNorm(nn.Module):
    """y = rmsnorm(x) * (1 + w), computed in float32 like Gemma's."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(w)

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_offset_norm_fold(dtype, tol):
    k = 64
    # Gemma norm weights are large and negative (1 + w near 0 for some channels).
    w = torch.cat([torch.empty(k // 2).uniform_(-0.95, -0.5), torch.empty(k // 2).uniform_(2.0, 8.0)])
    w = w.to(dtype)
    norm, lin = OffsetRMSNorm(w.clone()), nn.Linear(k, 32).to(dtype)
    x = torch.randn(8, k).to(dtype)
    with torch.no_grad():
        ref = nn.functional.linear(norm(x).double(), lin.weight.double(), lin.bias.double())
        s = _scales(k)
        fold_scales(norm, [lin], s, kind="offset_norm")
        got = nn.functional.linear(norm(x).double(), lin.weight.double(), lin.bias.double())
        # the folded weight itself: (1 + w') == (1 + w) / s, to the dtype's resolution
        assert _rel(1 + norm.weight.double(), (1 + w.double()) / s.double()) < tol
    assert _rel(got, ref) < tol


def test_offset_norm_kind_differs_from_plain_norm():
    norm = OffsetRMSNorm(torch.full((8,), 0.5))
    fold_scales(norm, [nn.Linear(8, 8)], torch.full((8,), 2.0), kind="offset_norm")
    assert torch.allclose(norm.weight, torch.full((8,), -0.25))  # (1 + 0.5) / 2 - 1


def test_norm_with_bias_and_whole_linear_rows():
    k = 32
    ln, prev = nn.LayerNorm(k), nn.Linear(16, k)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(8, k)
    for mod, inp in ((ln, x), (prev, torch.randn(8, 16))):
        lin = nn.Linear(k, 24)
        with torch.no_grad():
            ref = lin(mod(inp))
            fold_scales(mod, [lin], _scales(k))
            assert _rel(lin(mod(inp)), ref) < 1e-6


@pytest.mark.parametrize("parts,part", [(3, 2), (2, 1)])
def test_row_slice_of_fused_linear(parts, part):
    k = 16
    fused, consumer = nn.Linear(32, parts * k), nn.Linear(k, 8)
    x = torch.randn(8, 32)
    with torch.no_grad():
        before = fused(x)
        ref = consumer(before[:, part * k:(part + 1) * k])
        fold_scales(fused, [consumer], _scales(k), kind="rows", rows=(parts, part))
        after = fused(x)
        got = consumer(after[:, part * k:(part + 1) * k])
    others = [i for i in range(parts) if i != part]
    for i in others:  # the other parts are untouched
        assert torch.equal(after[:, i * k:(i + 1) * k], before[:, i * k:(i + 1) * k])
    assert _rel(got, ref) < 1e-6


def test_row_slice_refuses_wrong_width():
    with pytest.raises(AWQInputError, match="cannot fold"):
        fold_scales(nn.Linear(8, 30), [nn.Linear(16, 4)], torch.ones(16), kind="rows", rows=(3, 2))


def test_router_columns_keep_logits():
    k = 32
    norm, expert, router = nn.LayerNorm(k), nn.Linear(k, 16), nn.Linear(k, 4, bias=False)
    x = torch.randn(8, k)
    with torch.no_grad():
        ref = router(norm(x))
        fold_scales(norm, [expert, router], _scales(k))
        assert _rel(router(norm(x)), ref) < 1e-6


def test_phi3_gqa_skips_the_v_rows_fold_and_says_why():
    model = tiny_model("phi3", num_key_value_heads=2)
    spec = get_spec(model)
    bound = dict((g.prev_op, why) for g, why in bind_groups(get_blocks(model, spec)[0], spec))
    assert "not 3 equal parts" in bound["self_attn.qkv_proj"]
    assert bound["mlp.gate_up_proj"] is None  # the up half still folds


def test_interleaved_qkv_is_not_scaled_and_listed_unscaled():
    for t, dense in (("gpt_neox", "attention.dense"), ("falcon", "self_attention.dense")):
        spec = get_spec(tiny_model(t))
        assert not any(dense in g.linears for g in spec.groups)
        assert any(dense in names for names, _ in spec.unscaled)
