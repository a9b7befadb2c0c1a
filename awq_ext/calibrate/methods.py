"""Quantization methods = an optional weight transform (searched per block) + a weight quantizer.

``rtn``: no transform, round-to-nearest. ``awq``: AWQ scale + clip search, then round-to-nearest.
Other modules register more quantizers (e.g. GPTQ, which needs the layer's calibration inputs) and
methods that combine them; the calibration pipeline looks both up here by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, quantize_weight


class WeightQuantizer(Protocol):
    def __call__(self, linear: nn.Linear, inputs: torch.Tensor | None, spec: QuantSpec, options: dict,
                 name: str) -> QuantizedWeight: ...


@dataclass(frozen=True)
class Method:
    name: str
    transform: str | None  # "awq" or None
    quantizer: str  # key of QUANTIZERS
    description: str
    needs_calibration: bool = True


def rtn_quantizer(linear: nn.Linear, inputs: torch.Tensor | None, spec: QuantSpec, options: dict,
                  name: str) -> QuantizedWeight:
    q, s, z = quantize_weight(linear.weight.data, spec, name)
    return QuantizedWeight(q, s, z, spec)


QUANTIZERS: dict[str, Callable[..., QuantizedWeight]] = {"rtn": rtn_quantizer}
QUANTIZER_NEEDS_INPUTS: dict[str, bool] = {"rtn": False}

METHODS: dict[str, Method] = {
    "rtn": Method("rtn", None, "rtn", "round-to-nearest, group-wise (baseline)", needs_calibration=False),
    "awq": Method("awq", "awq", "rtn", "AWQ: activation-aware scale search + clip search, then RTN"),
}


def register_quantizer(name: str, fn: Callable[..., QuantizedWeight], needs_inputs: bool) -> None:
    QUANTIZERS[name] = fn
    QUANTIZER_NEEDS_INPUTS[name] = needs_inputs


def register_method(method: Method) -> None:
    METHODS[method.name] = method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise AWQInputError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]
