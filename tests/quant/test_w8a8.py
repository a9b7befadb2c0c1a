"""W8A8 math: INT8 quantizers, SmoothQuant/AWEQ factors, bias correction."""
import pytest
import torch

from awq_ext.errors import AWQInputError
from awq_ext.quant.w8a8 import (
    activation_means,
    aweq_factors,
    channel_absmax,
    dequantize_weight_int8,
    expected_output_shift,
    fake_quantize_act,
    quantize_act_per_tensor,
    quantize_act_per_token,
    quantize_weight_int8,
    smoothquant_factors,
    static_act_scale,
    weight_channel_absmax,
)


def test_weight_int8_per_channel_error_bound():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 40, generator=g) * torch.logspace(-2, 1, 24).unsqueeze(1)
    q, s = quantize_weight_int8(w)
    assert q.dtype == torch.int8 and s.shape == (24,)
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127
    assert (q.abs().amax(dim=1) == 127).all()  # every row's max lands on the grid's end
    err = (dequantize_weight_int8(q, s) - w).abs()
    assert (err <= s.unsqueeze(1) / 2 + 1e-7).all()


def test_weight_int8_rejects_bad_input():
    with pytest.raises(AWQInputError, match="out_features, in_features"):
        quantize_weight_int8(torch.ones(3))
    with pytest.raises(AWQInputError, match="NaN"):
        quantize_weight_int8(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(AWQInputError, match="floating-point"):
        quantize_weight_int8(torch.ones(2, 2, dtype=torch.int32))


def test_per_token_activation_quantization():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 16, generator=g) * torch.arange(1, 11).float().view(2, 5, 1)
    q, s = quantize_act_per_token(x)
    assert q.shape == x.shape and s.shape == (2, 5, 1)
    assert (q.abs().amax(dim=-1) == 127).all()
    assert ((q.float() * s - x).abs() <= s / 2 + 1e-6).all()
    # an all-zero token stays zero instead of dividing by zero
    q0, _ = quantize_act_per_token(torch.zeros(1, 8))
    assert (q0 == 0).all()


def test_static_activation_quantization_clamps_out_of_range():
    s = static_act_scale(2.0)
    assert s.shape == () and float(s) == pytest.approx(2.0 / 127)
    x = torch.tensor([0.0, 1.0, -2.0, 10.0, -10.0])
    q = quantize_act_per_tensor(x, s)
    assert q.tolist()[3:] == [127, -127]
    assert fake_quantize_act(x, "static", s)[3] == pytest.approx(2.0)
    with pytest.raises(AWQInputError, match="calibrated scale"):
        fake_quantize_act(x, "static")
    with pytest.raises(AWQInputError, match="unknown activation"):
        fake_quantize_act(x, "per-channel")
    with pytest.raises(AWQInputError, match="finite"):
        static_act_scale(float("inf"))


def test_smoothquant_factors_formula_and_limits():
    xm = torch.tensor([10.0, 1.0, 0.5])
    wm = torch.tensor([0.2, 0.4, 1.0])
    for a in (0.0, 0.3, 0.5, 1.0):
        torch.testing.assert_close(smoothquant_factors(xm, wm, a), xm.pow(a) / wm.pow(1 - a))
    with pytest.raises(AWQInputError, match="alpha"):
        smoothquant_factors(xm, wm, 1.5)
    with pytest.raises(AWQInputError, match="\\[K\\]"):
        smoothquant_factors(xm, wm[:2], 0.5)
    # dead channels get finite, positive factors
    s = smoothquant_factors(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), 0.5)
    assert torch.isfinite(s).all() and (s > 0).all()


def test_aweq_balances_both_ranges():
    g = torch.Generator().manual_seed(2)
    xm = torch.rand(32, generator=g) * 50 + 0.01
    wm = torch.rand(32, generator=g) + 0.01
    s = aweq_factors(xm, wm)
    # after folding, each channel's activation range equals its weight range
    torch.testing.assert_close(xm / s, wm * s)
    torch.testing.assert_close(xm / s, (xm * wm).sqrt())
    # the documented identity: AWEQ's factor is SmoothQuant's at alpha = 0.5
    torch.testing.assert_close(s, smoothquant_factors(xm, wm, 0.5))


def test_channel_ranges():
    x = torch.tensor([[[1.0, -3.0], [2.0, 0.5]]])
    assert channel_absmax(x).tolist() == [2.0, 3.0]
    w = weight_channel_absmax([torch.tensor([[1.0, -4.0]]), torch.tensor([[-5.0, 2.0]])])
    assert w.tolist() == [5.0, 4.0]
    with pytest.raises(AWQInputError, match="in_features"):
        weight_channel_absmax([torch.ones(2, 3), torch.ones(2, 4)])


def _skewed_inputs(n: int, k: int, seed: int) -> torch.Tensor:
    # Positive, heavily skewed activations (post-ReLU/SiLU-like) with a few outlier channels: the
    # per-tensor INT8 grid is set by the outliers, so small channels round systematically (biased).
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g).exp() * 0.05
    x[:, :3] *= 400.0
    return x


def test_bias_correction_removes_mean_output_error_on_held_out_data():
    k, n = 64, 32
    g = torch.Generator().manual_seed(3)
    w = torch.randn(n, k, generator=g) * 0.1 + 0.05  # non-zero-mean rows: a bias in x becomes a bias in y
    calib, held = _skewed_inputs(4096, k, 10), _skewed_inputs(4096, k, 11)
    s = static_act_scale(channel_absmax(calib).max())
    qw, ws = quantize_weight_int8(w)
    w_hat = dequantize_weight_int8(qw, ws)

    def quant(x):
        return fake_quantize_act(x, "static", s)

    mx, mq = activation_means(calib, quant)
    corr = expected_output_shift(w, w_hat, mx, mq)

    def mean_err(x, bias):
        return (quant(x) @ w_hat.t() + bias - x @ w.t()).mean(dim=0)

    zero = torch.zeros(n)
    # exact on the calibration data (linearity)
    assert mean_err(calib, -corr).abs().max() < 1e-5 * mean_err(calib, zero).abs().max() + 1e-7
    before = mean_err(held, zero).abs().mean()
    after = mean_err(held, -corr).abs().mean()
    assert before > 1e-4  # the setup really has a systematic error to remove
    assert after < 0.1 * before


def test_expected_shift_equals_mean_of_actual_error():
    g = torch.Generator().manual_seed(4)
    w, w_hat = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    x = torch.randn(100, 10, generator=g) + 1.0
    xq = x + 0.01 * torch.randn(100, 10, generator=g)
    direct = (xq @ w_hat.t() - x @ w.t()).mean(dim=0)
    torch.testing.assert_close(expected_output_shift(w, w_hat, x.mean(0), xq.mean(0)), direct, rtol=1e-4, atol=1e-5)


def test_activation_means_chunks_and_weight_only():
    x = torch.arange(30.0).view(3, 5, 2)
    mx, mq = activation_means(x, None, chunk_tokens=4)
    torch.testing.assert_close(mx, x.reshape(-1, 2).mean(0))
    torch.testing.assert_close(mq, mx)
    _, mq2 = activation_means(x, lambda c: c * 2, chunk_tokens=4)
    torch.testing.assert_close(mq2, 2 * mx)
    with pytest.raises(AWQInputError, match="at least one"):
        activation_means(torch.zeros(0, 4), None)


def test_expected_shift_rejects_shape_mismatch():
    with pytest.raises(AWQInputError, match="matching"):
        expected_output_shift(torch.ones(2, 3), torch.ones(3, 2), torch.ones(3), torch.ones(3))
    with pytest.raises(AWQInputError, match="means must be"):
        expected_output_shift(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2), torch.ones(3))
