"""Timers for the benchmarks: CUDA events on a GPU, wall clock on CPU, one interface.

Both timers call ``fn(*args)`` once per iteration, cycling through ``arg_sets`` so that consecutive calls
read different weight buffers: with enough copies (see :func:`rotation_copies`) every call streams its
weights from DRAM instead of hitting a warm L2, which is what a real decode step sees (each linear's
weights are touched once per token). Summaries use the median, which shrugs off the odd preempted
iteration; min/mean/p10/p90 are kept for the JSON.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from awq_ext.errors import AWQInputError

# Rotate through at least this many L2-sizes of weight bytes: after one pass the buffer read
# NEXT has certainly been evicted by the (copies-1) buffers read in between.
_L2_MULTIPLE = 2.0


@dataclass(frozen=True)
class Timing:
    """Summary of one timed case, all in milliseconds per call."""

    median_ms: float
    mean_ms: float
    min_ms: float
    p10_ms: float
    p90_ms: float
    iters: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(samples_ms: Sequence[float]) -> Timing:
    """Median/mean/min/p10/p90 of per-call times (ms). Raises on an empty or non-finite sample list."""
    if len(samples_ms) == 0:
        raise AWQInputError("no timing samples: run at least one iteration (--iters >= 1)")
    xs = sorted(float(s) for s in samples_ms)
    if not all(math.isfinite(x) and x >= 0 for x in xs):
        raise AWQInputError(f"timing samples must be finite and >= 0, got {xs[:5]}...")

    def pct(p: float) -> float:
        # nearest-rank on the sorted list; exact enough for a report, no numpy needed
        return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]

    return Timing(
        median_ms=statistics.median(xs),
        mean_ms=statistics.fmean(xs),
        min_ms=xs[0],
        p10_ms=pct(0.10),
        p90_ms=pct(0.90),
        iters=len(xs),
    )


def l2_cache_bytes(device: torch.device | str | int | None = None) -> int:
    """The GPU's L2 size in bytes (0 on CPU; the CPU timer does not need rotation to be meaningful)."""
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda":
        if dev is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        else:
            return 0
    return int(torch.cuda.get_device_properties(dev).L2_cache_size)


def rotation_copies(bytes_per_copy: int, l2_bytes: int, max_copies: int = 64,
                    memory_budget_bytes: int | None = None) -> int:
    """How many copies of a weight buffer to cycle through so each call misses L2.

    ``ceil(2 * L2 / bytes) + 1`` copies, at least 2 when there is an L2 at all (a buffer larger than L2 still
    leaves its tail cached for the next call), capped by ``max_copies`` and by ``memory_budget_bytes``.
    """
    if bytes_per_copy <= 0:
        raise AWQInputError(f"bytes_per_copy must be > 0, got {bytes_per_copy}")
    if l2_bytes <= 0:
        return 1
    n = max(2, math.ceil(_L2_MULTIPLE * l2_bytes / bytes_per_copy) + 1)
    if memory_budget_bytes is not None:
        n = min(n, max(1, memory_budget_bytes // bytes_per_copy))
    return max(1, min(n, max_copies))


@contextlib.contextmanager
def nvtx_range(name: str, enabled: bool) -> Iterator[None]:
    """An NVTX range (visible in nsys/ncu) when ``enabled`` and CUDA is present; otherwise nothing."""
    if not (enabled and torch.cuda.is_available()):
        yield
        return
    torch.cuda.nvtx.range_push(name)
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()


@dataclass
class TimerConfig:
    """Iteration counts; ``profile_once`` means one warm-up call (JIT/autotune) and exactly one timed call."""

    warmup: int = 10
    iters: int = 100
    nvtx: bool = False
    profile_once: bool = False
    # CUDA only: park the stream behind a sleep kernel so the timed calls are all queued before the GPU
    # reaches them; per-call events then measure device time, not Python launch latency (~5-20 us/call).
    queue_ahead: bool = True

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.iters < 1:
            raise AWQInputError(f"need --warmup >= 0 and --iters >= 1, got {self.warmup} and {self.iters}")
        if self.profile_once:
            self.warmup, self.iters = 1, 1


class _BaseTimer:
    """Shared loop: warm-up outside the timed NVTX range, then ``iters`` timed calls cycling ``arg_sets``."""

    kind = "base"

    def __init__(self, config: TimerConfig | None = None) -> None:
        self.config = config or TimerConfig()

    def time(self, name: str, fn: Callable[..., Any], arg_sets: Sequence[tuple]) -> Timing:
        if len(arg_sets) == 0:
            raise AWQInputError(f"{name}: arg_sets is empty; pass at least one tuple of arguments")
        cfg = self.config
        host = []
        with nvtx_range(f"warmup:{name}", cfg.nvtx):
            for i in range(cfg.warmup):
                t0 = time.perf_counter()
                fn(*arg_sets[i % len(arg_sets)])
                host.append(time.perf_counter() - t0)
        # Median host seconds per call (launch cost on CUDA; the first call's JIT/autotune is an outlier),
        # used to size the queue-ahead sleep.
        self.host_s_per_call = statistics.median(host) if host else 1e-4
        self._sync()
        return summarize(self._timed_loop(name, fn, arg_sets))

    def _sync(self) -> None:
        raise NotImplementedError

    def _timed_loop(self, name: str, fn: Callable[..., Any], arg_sets: Sequence[tuple]) -> list[float]:
        raise NotImplementedError


class CudaEventTimer(_BaseTimer):
    """Per-call CUDA-event timing on the current stream (device time, not host launch time)."""

    kind = "cuda-events"
    # Calls queued behind one sleep: well under the driver's launch-queue depth (~1000 entries).
    _CHUNK = 200
    # Upper bound of GPU clocks (Hz) to turn the wanted sleep time into cycles; oversleeping is harmless.
    _CLOCK_HZ = 2.0e9
    _MAX_SLEEP_S = 0.5

    def _sync(self) -> None:
        torch.cuda.synchronize()

    def _timed_loop(self, name: str, fn: Callable[..., Any], arg_sets: Sequence[tuple]) -> list[float]:
        out: list[float] = []
        done = 0
        with nvtx_range(name, self.config.nvtx):
            while done < self.config.iters:
                n = min(self._CHUNK, self.config.iters - done)
                starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
                ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
                if self.config.queue_ahead and hasattr(torch.cuda, "_sleep"):
                    wanted_s = min(self._MAX_SLEEP_S, 2.0 * n * getattr(self, "host_s_per_call", 1e-4) + 1e-3)
                    torch.cuda._sleep(int(wanted_s * self._CLOCK_HZ))
                for i in range(n):
                    starts[i].record()
                    fn(*arg_sets[(done + i) % len(arg_sets)])
                    ends[i].record()
                torch.cuda.synchronize()
                out.extend(s.elapsed_time(e) for s, e in zip(starts, ends))
                done += n
        return out


class WallClockTimer(_BaseTimer):
    """``time.perf_counter`` per call; used on CPU (synchronous) - same interface as the CUDA timer."""

    kind = "wall-clock"

    def _sync(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def _timed_loop(self, name: str, fn: Callable[..., Any], arg_sets: Sequence[tuple]) -> list[float]:
        out = []
        with nvtx_range(name, self.config.nvtx):
            for i in range(self.config.iters):
                t0 = time.perf_counter()
                fn(*arg_sets[i % len(arg_sets)])
                self._sync()
                out.append((time.perf_counter() - t0) * 1e3)
        return out


def make_timer(device: torch.device, config: TimerConfig | None = None) -> _BaseTimer:
    """CUDA-event timer for a CUDA device, wall-clock timer otherwise."""
    return CudaEventTimer(config) if device.type == "cuda" else WallClockTimer(config)
