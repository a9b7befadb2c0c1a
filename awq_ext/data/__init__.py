"""Calibration and evaluation text: sources and disjoint token windows."""
from awq_ext.data.sources import HF_SOURCES, TextSource, load_source, pydoc_text
from awq_ext.data.tokens import TokenRange, calib_blocks, calib_start, eval_windows, tokenize

__all__ = [
    "HF_SOURCES", "TextSource", "load_source", "pydoc_text", "TokenRange", "calib_blocks", "calib_start",
    "eval_windows", "tokenize",
]
