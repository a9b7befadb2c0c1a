"""Evaluation: perplexity and per-layer error reports."""
from awq_ext.eval.perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
