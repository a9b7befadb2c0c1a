"""Pure tensor math: quantizers and the searches built on them. Knows no model names."""
from awq_ext.quant.quantizer import (
    QuantizedWeight,
    QuantSpec,
    check_weight,
    compute_qparams,
    dequantize,
    fake_quantize,
    quantize,
    quantize_weight,
)

__all__ = [
    "QuantizedWeight",
    "QuantSpec",
    "check_weight",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "quantize",
    "quantize_weight",
]
