"""Quantized modules: WQLinear (4-bit weights, interchange layout) and model surgery helpers."""
from awq_ext.nn.wqlinear import BACKENDS, WQLinear, replace_linears, set_backend, wq_linears

__all__ = ["BACKENDS", "WQLinear", "replace_linears", "set_backend", "wq_linears"]
