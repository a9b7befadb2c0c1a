"""The one-buffer fake quantization the search and the streamed driver use is the textbook
``dequantize(quantize(w))`` bit for bit, and compacted codes keep their values."""
from __future__ import annotations

import pytest
import torch

from awq_ext.quant.quantizer import (
    QuantSpec, QuantizedWeight, compute_qparams, dequantize, fake_quantize_with, quantize, quantize_weight,
    scaled_fake_quant,
)

SPECS = [QuantSpec(4, 64, True), QuantSpec(3, 32, True), QuantSpec(8, 128, False), QuantSpec(2, 64, False)]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_fake_quantize_with_is_dequantize_of_quantize(spec: QuantSpec) -> None:
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(spec.bits)) * 0.05
    s, z = compute_qparams(w, spec)
    ref = dequantize(quantize(w, spec, s, z), spec, s, z)
    w0 = w.clone()
    assert torch.equal(fake_quantize_with(w, spec, s, z), ref)
    assert torch.equal(w, w0)  # the input is never written


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_scaled_fake_quantize_matches_the_formula(spec: QuantSpec) -> None:
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(40, 128, generator=gen) * 0.05
    scales = torch.rand(128, generator=gen) * 3 + 0.2
    ws = w * scales.view(1, -1)
    s, z = compute_qparams(ws, spec)
    ref = dequantize(quantize(ws, spec, s, z), spec, s, z) / scales.view(1, -1)
    w0 = w.clone()
    assert torch.equal(scaled_fake_quant(w, scales, spec), ref)
    wh = w.half()
    out = scaled_fake_quant(wh, scales, spec)  # keeps the weight's dtype
    assert out.dtype == torch.float16 and torch.equal(out, scaled_fake_quant(wh.float(), scales, spec).half())
    assert torch.equal(w, w0)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_compact_codes_keep_values(spec: QuantSpec) -> None:
    w = torch.randn(16, 128, generator=torch.Generator().manual_seed(3))
    q, s, z = quantize_weight(w, spec)
    qw = QuantizedWeight(q, s, z, spec)
    c = qw.compact()
    assert c.q.dtype == (torch.uint8 if spec.zero_point else torch.int8)
    assert torch.equal(c.q.to(torch.int32), q) and torch.equal(c.dequantize(), qw.dequantize())
