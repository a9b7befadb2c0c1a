"""Whole-model helpers for the salient-channel experiments (Tables 1, 2, 8): keep or scale channels.

Both act on the decoder-block linears of the runner's model in place and use activation statistics
from the float model on the calibration set (:meth:`Runner.activation_means`), as the paper does.
"""
from __future__ import annotations

from typing import Any

import torch

from awq_ext.calibrate.fold import fold_scales
from awq_ext.models import block_linears, get_blocks, get_module, get_spec, group_applies
from awq_ext.quant.mixed import keep_fp_quantize, select_channels
from awq_ext.quant.quantizer import QuantSpec, fake_quantize


@torch.no_grad()
def keep_salient(model, act: dict[str, torch.Tensor], spec: QuantSpec, criterion: str, frac: float,
                 seed: int = 0) -> dict[str, Any]:
    """RTN every block linear except a fraction of its input channels kept in float; returns counts."""
    mspec = get_spec(model)
    kept, total = 0, 0
    for i, block in enumerate(get_blocks(model, mspec)):
        for n, lin in block_linears(block).items():
            full = f"{mspec.blocks}.{i}.{n}"
            idx = select_channels(criterion, frac, lin.weight.data, act.get(full), seed=seed, name=full)
            lin.weight.data = keep_fp_quantize(lin.weight.data, idx, spec, full).weight
            kept += idx.numel() * lin.out_features
            total += lin.weight.numel()
    return {"kept_weights": kept, "total_weights": total, "kept_fraction": kept / total}


@torch.no_grad()
def scale_salient(model, act: dict[str, torch.Tensor], spec: QuantSpec, factor: float,
                  frac: float = 0.01) -> dict[str, Any]:
    """Heuristic scaling (Table 2): multiply the salient ``frac`` input channels (by mean |x|) by ``factor``.

    For every scaling group of the adapter the scale is folded exactly (previous op divided, consumers
    multiplied, as AWQ does), then every linear is RTN-quantized. Linears outside an applicable group
    (o_proj under GQA) are plain RTN, exactly as AWQ leaves them unscaled.
    """
    mspec = get_spec(model)
    scaled = 0
    for i, block in enumerate(get_blocks(model, mspec)):
        prefix = f"{mspec.blocks}.{i}."
        for g in mspec.groups:
            if not group_applies(block, g):
                continue
            linears = [get_module(block, n) for n in g.linears]
            a = act[prefix + g.linears[0]]
            idx = select_channels("activation", frac, linears[0].weight.data, a, name=prefix + g.linears[0])
            s = torch.ones_like(a)
            s[idx] = factor
            fold_scales(get_module(block, g.prev_op), linears, s)
            scaled += idx.numel()
        for lin in block_linears(block).values():
            lin.weight.data = fake_quantize(lin.weight.data, spec)
    return {"scaled_channels": scaled}


@torch.no_grad()
def rtn_all(model, spec: QuantSpec) -> dict[str, Any]:
    """Round-to-nearest every decoder-block linear in place (the baseline column of the tables)."""
    n = 0
    for block in get_blocks(model, get_spec(model)):
        for lin in block_linears(block).values():
            lin.weight.data = fake_quantize(lin.weight.data, spec)
            n += 1
    return {"linears": n}
