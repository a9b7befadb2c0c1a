"""Calibration pipeline: capture, per-block search, fold, quantize, propagate; records for replay."""
from awq_ext.calibrate.methods import METHODS, Method, get_method, register_method, register_quantizer
from awq_ext.calibrate.pipeline import BlockReport, QuantizationResult, quantize_model
from awq_ext.calibrate.records import ScaleEntry, SearchRecord

__all__ = [
    "METHODS", "Method", "get_method", "register_method", "register_quantizer", "BlockReport",
    "QuantizationResult", "quantize_model", "ScaleEntry", "SearchRecord",
]
