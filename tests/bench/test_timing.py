"""Timing helpers: summaries, L2 rotation arithmetic, the wall-clock timer's loop, NVTX no-op on CPU."""
from __future__ import annotations

import pytest
import torch

from awq_ext.bench.timing import (
    CudaEventTimer,
    TimerConfig,
    WallClockTimer,
    l2_cache_bytes,
    make_timer,
    nvtx_range,
    rotation_copies,
    summarize,
)
from awq_ext.errors import AWQInputError


def test_summarize_median_and_percentiles():
    t = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert t.median_ms == 3.0 and t.min_ms == 1.0 and t.mean_ms == 3.0 and t.iters == 5
    assert t.p10_ms == 1.0 and t.p90_ms == 5.0
    assert summarize([1.0, 2.0]).median_ms == 1.5
    # the median ignores one huge outlier (a preempted iteration)
    assert summarize([1.0] * 9 + [1000.0]).median_ms == 1.0


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [-1.0]])
def test_summarize_rejects_bad_samples(bad):
    with pytest.raises(AWQInputError):
        summarize(bad)


def test_rotation_copies_exceed_two_l2():
    l2 = 50 << 20
    for nbytes in (1 << 20, 9 << 20, 33 << 20, 470 << 20):
        n = rotation_copies(nbytes, l2, max_copies=1000)
        assert n >= 2
        assert (n - 1) * nbytes >= 2 * l2 or n == 2  # the buffers read in between flush L2
    assert rotation_copies(1 << 20, l2, max_copies=8) == 8
    assert rotation_copies(1 << 20, l2, memory_budget_bytes=5 << 20) == 5
    assert rotation_copies(1 << 20, 0) == 1  # CPU: no L2 to defeat
    with pytest.raises(AWQInputError):
        rotation_copies(0, l2)


def test_l2_bytes_zero_on_cpu():
    assert l2_cache_bytes(torch.device("cpu")) == 0


def test_wall_clock_timer_cycles_argument_sets():
    seen: list[int] = []
    timer = WallClockTimer(TimerConfig(warmup=2, iters=7))
    t = timer.time("case", seen.append, [(0,), (1,), (2,)])
    assert seen == [0, 1] + [0, 1, 2, 0, 1, 2, 0]  # warm-up, then 7 timed calls rotating buffers
    assert t.iters == 7 and t.min_ms >= 0 and t.min_ms <= t.median_ms <= t.p90_ms


def test_wall_clock_timer_measures_sleep():
    import time

    t = WallClockTimer(TimerConfig(warmup=0, iters=3)).time("sleep", time.sleep, [(0.01,)])
    assert 9.0 <= t.median_ms < 200.0


def test_profile_once_means_one_warmup_and_one_timed_call():
    calls: list[int] = []
    cfg = TimerConfig(warmup=50, iters=500, profile_once=True)
    t = WallClockTimer(cfg).time("once", lambda: calls.append(1), [()])
    assert len(calls) == 2 and t.iters == 1


def test_timer_config_and_args_validation():
    with pytest.raises(AWQInputError):
        TimerConfig(iters=0)
    with pytest.raises(AWQInputError):
        WallClockTimer().time("x", print, [])


def test_make_timer_picks_by_device_and_nvtx_is_noop_on_cpu():
    assert isinstance(make_timer(torch.device("cpu")), WallClockTimer)
    with nvtx_range("anything", enabled=True):  # no CUDA: must not raise
        pass


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_event_timer_times_a_matmul():
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.float16)
    t = CudaEventTimer(TimerConfig(warmup=3, iters=20)).time("mm", torch.matmul, [(a, a)])
    assert 0 < t.median_ms < 100 and t.iters == 20
    assert l2_cache_bytes(torch.device("cuda")) > 0
