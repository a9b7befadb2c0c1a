"""Quantized modules: WQLinear (4-bit weights, interchange layout), W8A8Linear (INT8 x INT8), surgery helpers."""
from awq_ext.nn.w8a8 import W8A8Linear
from awq_ext.nn.wqlinear import BACKENDS, WQLinear, replace_linears, set_backend, wq_linears

__all__ = ["BACKENDS", "W8A8Linear", "WQLinear", "replace_linears", "set_backend", "wq_linears"]
