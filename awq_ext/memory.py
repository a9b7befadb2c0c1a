"""Memory accounting for every job's JSON: peak host RSS and peak accelerator memory of this process."""
from __future__ import annotations

import platform
import resource

import torch


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux, B on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if platform.system() == "Darwin" else r / 1024


def peak_device_mb() -> float | None:
    """Peak memory allocated by torch on the CUDA devices of this process, in MiB; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    return sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())) / 2**20


def memory_peaks() -> dict[str, float | None]:
    """``{"peak_rss_mb", "peak_device_mb"}`` as reported in every JSON."""
    return {"peak_rss_mb": peak_rss_mb(), "peak_device_mb": peak_device_mb()}
