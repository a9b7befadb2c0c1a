"""Roofline arithmetic: bits per weight, bandwidth limit, bytes/flops, achieved rates, ratios."""
from __future__ import annotations

import math

import pytest
import torch

from awq_ext.bench.ceilings import (
    achieved_gbps,
    achieved_tflops,
    bandwidth_limit_ratio,
    bits_per_weight,
    gemm_bytes,
    gemm_flops,
    measure_ceilings,
    speedup,
)
from awq_ext.bench.timing import TimerConfig
from awq_ext.errors import AWQInputError


def test_bits_per_weight_and_the_376_limit():
    assert bits_per_weight(4, 128) == 4.25
    assert bits_per_weight(4, 64) == 4.5
    assert bits_per_weight(4, 32) == 5.0
    assert bits_per_weight(4, -1) == 4.0
    assert math.isclose(bandwidth_limit_ratio(4, 128), 16 / 4.25)
    assert f"{bandwidth_limit_ratio(4, 128):.2f}" == "3.76"
    with pytest.raises(AWQInputError):
        bits_per_weight(4, 0)


def test_gemm_bytes_and_flops():
    # 4096x11008 at M=1: weights dominate: 4.25 bits * N*K / 8 + (K + N) * 2 bytes of activations
    b = gemm_bytes(1, 11008, 4096, 4.25)
    assert b == 11008 * 4096 * 4.25 / 8 + (4096 + 11008) * 2
    assert gemm_bytes(1, 8, 8, 16) == 8 * 8 * 2 + (8 + 8) * 2
    assert gemm_flops(2, 3, 4) == 48
    with pytest.raises(AWQInputError):
        gemm_bytes(0, 8, 8, 4)


def test_achieved_rates_and_speedup():
    assert achieved_gbps(1e9, 1000.0) == pytest.approx(1.0)
    assert achieved_gbps(2e9, 1.0) == pytest.approx(2000.0)
    assert achieved_tflops(1e12, 1.0) == pytest.approx(1000.0)
    assert speedup(10.0, 2.5) == 4.0
    assert speedup(1.0, 2.0) == 0.5
    for bad in ((0.0, 1.0), (1.0, 0.0), (1.0, -1.0)):
        with pytest.raises(AWQInputError):
            speedup(*bad)
    with pytest.raises(AWQInputError):
        achieved_gbps(1.0, 0.0)


def test_measure_ceilings_on_cpu_gives_positive_finite_rates():
    c = measure_ceilings(torch.device("cpu"), torch.float32, TimerConfig(warmup=1, iters=3))
    assert c.copy_gbps > 0 and math.isfinite(c.copy_gbps)
    assert c.gemm_tflops > 0 and math.isfinite(c.gemm_tflops)
    assert c.to_dict()["gemm_dtype"] == "float32"
