"""The AWQ paper's analysis experiments (Tables 1, 2, 3-5, 7, 8, Figure 7), one module each.

All share :class:`awq_ext.analysis.runner.Runner` (one model load, pristine weights between rows) and
are run by ``python -m awq_ext.reproduce``.
"""
from awq_ext.analysis.runner import Runner, RunSettings, TableResult

__all__ = ["Runner", "RunSettings", "TableResult"]
