"""Exception types raised on bad user input.

Each message names what is wrong and how to fix it; callers never need to parse a traceback
from deep inside torch to find out why a quantization job refused to run.
"""
from __future__ import annotations


class AWQInputError(ValueError):
    """An argument, tensor or file is not usable as given (shape, dtype, NaN, bit width...)."""


class CheckpointError(AWQInputError):
    """A saved quantized checkpoint is missing, truncated, corrupt or inconsistent with its config."""


class KernelUnavailableError(RuntimeError):
    """The CUDA extension is not built or cannot run here (no GPU, no compiler)."""


class OfflineError(RuntimeError):
    """A resource needs the network (hub model or dataset) and the hub is unreachable."""
