"""Bring a model into the form calibration expects, before any block is touched.

* **float32**: calibration runs in float32 whatever the load dtype - Gemma's activations overflow
  float16 and bf16 rounding would swamp the search's loss differences. A model in another float dtype
  is converted in place (and stays float32 afterwards; the checkpoint stores fp16 scales as always).
* **per-expert linears**: transformers 5's fused 3-D MoE experts become one ``nn.Linear`` per expert
  projection (:mod:`awq_ext.models.experts`).
* **spec check**: every block binds the spec's groups consistently (see
  :func:`awq_ext.models.spec_file.check_spec_on_model`), before hours of work start.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from awq_ext.models.experts import unfuse_experts
from awq_ext.models.spec import ModelSpec
from awq_ext.models.spec_file import check_spec_on_model

CALIBRATION_DTYPE = torch.float32


def prepare_model(model: nn.Module, spec: ModelSpec, strict_paths: bool = False) -> list[str]:
    """Convert ``model`` in place for calibration; returns what was changed (for reports)."""
    notes: list[str] = []
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if dtypes - {CALIBRATION_DTYPE}:
        model.to(CALIBRATION_DTYPE)
        notes.append(f"converted from {sorted(str(d) for d in dtypes)} to float32 for calibration")
    fused = unfuse_experts(model)
    if fused:
        notes.append(f"unfused {len(fused)} fused-expert modules into per-expert linears")
    check_spec_on_model(model, spec, strict_paths=strict_paths)
    return notes
