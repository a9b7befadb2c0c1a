"""Checkpoints: atomic, validated save/load of AWQ "GEMM" interchange checkpoints."""
from awq_ext.io.checkpoint import (
    SizeReport,
    build_quant_config,
    checkpoint_size_report,
    load_quantized,
    model_size_report,
    read_quant_config,
    save_quantized,
)

__all__ = [
    "SizeReport",
    "build_quant_config",
    "checkpoint_size_report",
    "load_quantized",
    "model_size_report",
    "read_quant_config",
    "save_quantized",
]
