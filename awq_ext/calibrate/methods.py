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
from awq_ext.quant.gptq import HESSIAN_DTYPES, HessianCache, gptq_quantize, hessian_from_inputs
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, quantize_weight


class WeightQuantizer(Protocol):
    def __call__(self, linear: nn.Linear, inputs: torch.Tensor | None, spec: QuantSpec, options: dict,
                 name: str, hessians: HessianCache | None = None) -> QuantizedWeight: ...


@dataclass(frozen=True)
class Method:
    name: str
    transform: str | None  # "awq" or None
    quantizer: str  # key of QUANTIZERS
    description: str
    needs_calibration: bool = True


def rtn_quantizer(linear: nn.Linear, inputs: torch.Tensor | None, spec: QuantSpec, options: dict,
                  name: str, hessians: HessianCache | None = None) -> QuantizedWeight:
    q, s, z = quantize_weight(linear.weight.data, spec, name)
    return QuantizedWeight(q, s, z, spec)


# observer "mse": at W3 g64 on SmolLM2 it took GPTQ-R from 20.34 to 16.48 ppl on Protocol P
# (benchmarks/results/gptq/README.md); dynamic groups keep GPTQ-R's g_idx export.
GPTQ_OPTION_DEFAULTS = {"damp": 0.01, "block_size": 128, "act_order": False, "static_groups": False,
                        "observer": "mse", "hessian_dtype": "float64"}
# The reference GPTQ (Frantar et al.): min-max group ranges, the paper's baseline in the analyses.
REFERENCE_GPTQ_OPTIONS = {"observer": "minmax"}


def _gptq_options(options: dict, name: str) -> dict:
    unknown = set(options) - set(GPTQ_OPTION_DEFAULTS)
    if unknown:
        raise AWQInputError(f"{name}: unknown GPTQ option(s) {sorted(unknown)}; known: {sorted(GPTQ_OPTION_DEFAULTS)}")
    o = {**GPTQ_OPTION_DEFAULTS, **options}
    if o["hessian_dtype"] not in HESSIAN_DTYPES:
        raise AWQInputError(f"{name}: GPTQ hessian_dtype must be one of {sorted(HESSIAN_DTYPES)}, "
                            f"got {o['hessian_dtype']!r}")
    return o


def gptq_quantizer(linear: nn.Linear, inputs: torch.Tensor | None, spec: QuantSpec, options: dict,
                   name: str, hessians: HessianCache | None = None) -> QuantizedWeight:
    """GPTQ on ``linear`` with its calibration inputs ``[n, seqlen, K]``; options from ``cfg.extra``
    (defaults in :data:`GPTQ_OPTION_DEFAULTS`): ``damp``, ``block_size``, ``act_order``, ``static_groups``,
    ``observer`` (``minmax`` | ``mse``), ``hessian_dtype`` (``float64`` | ``float32``).

    ``hessians``: the caller's cache, so linears handed the same input tensor share one Hessian.
    """
    if inputs is None:
        raise AWQInputError(f"{name}: GPTQ needs the layer's calibration inputs; pass calibration data")
    o = _gptq_options(options, name)
    dtype = HESSIAN_DTYPES[o["hessian_dtype"]]
    h = hessians.get(inputs, dtype) if hessians is not None else hessian_from_inputs(inputs, dtype)
    return gptq_quantize(linear.weight.data, h, spec, damp=float(o["damp"]), block_size=int(o["block_size"]),
                         act_order=bool(o["act_order"]), static_groups=bool(o["static_groups"]),
                         observer=str(o["observer"]), name=name).quantized


def gptq_r_quantizer(linear: nn.Linear, inputs: torch.Tensor | None, spec: QuantSpec, options: dict,
                     name: str, hessians: HessianCache | None = None) -> QuantizedWeight:
    """GPTQ-R: GPTQ with act-order (descending Hessian diagonal); exports ``g_idx`` unless static groups."""
    return gptq_quantizer(linear, inputs, spec, {**options, "act_order": True}, name, hessians)


QUANTIZERS: dict[str, Callable[..., QuantizedWeight]] = {
    "rtn": rtn_quantizer, "gptq": gptq_quantizer, "gptq-r": gptq_r_quantizer,
}
QUANTIZER_NEEDS_INPUTS: dict[str, bool] = {"rtn": False, "gptq": True, "gptq-r": True}

METHODS: dict[str, Method] = {
    "rtn": Method("rtn", None, "rtn", "round-to-nearest, group-wise (baseline)", needs_calibration=False),
    "awq": Method("awq", "awq", "rtn", "AWQ: activation-aware scale search + clip search, then RTN"),
    "gptq": Method("gptq", None, "gptq", "GPTQ: Hessian-based error feedback, channels in natural order"),
    "gptq-r": Method("gptq-r", None, "gptq-r", "GPTQ-R: GPTQ with act-order (exports g_idx)"),
    "awq+gptq": Method("awq+gptq", "awq", "gptq", "AWQ scale + clip search, then GPTQ on the scaled weights"),
    "awq+gptq-r": Method("awq+gptq-r", "awq", "gptq-r", "AWQ scale + clip search, then GPTQ-R (act-order)"),
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
