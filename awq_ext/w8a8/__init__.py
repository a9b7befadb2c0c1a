"""W8A8 quantization (RTN, SmoothQuant, AWEQ + bias correction) and equalized ultra-low-bit weight-only."""
from awq_ext.w8a8.calibrate import W8A8BlockReport, W8A8Result, equalization_factors, quantize_w8a8
from awq_ext.w8a8.config import W8A8_METHODS, W8A8Config
from awq_ext.w8a8.job import config_from_options, run_w8a8

__all__ = [
    "W8A8BlockReport", "W8A8Result", "equalization_factors", "quantize_w8a8", "W8A8_METHODS", "W8A8Config",
    "config_from_options", "run_w8a8",
]
