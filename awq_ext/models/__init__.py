"""Architecture adapters: a registry of :class:`ModelSpec` tables keyed by ``config.model_type``."""
from __future__ import annotations

import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.models.llama import LLAMA
from awq_ext.models.mpt import MPT
from awq_ext.models.opt import OPT
from awq_ext.models.spec import ModelSpec, ScalingGroup, block_linears, get_module, group_applies

SPECS: dict[str, ModelSpec] = {t: s for s in (LLAMA, MPT, OPT) for t in s.model_types}


def register_spec(spec: ModelSpec) -> None:
    """Add an architecture (e.g. a VLM's language tower) to the registry."""
    for t in spec.model_types:
        SPECS[t] = spec


def get_spec(model: nn.Module) -> ModelSpec:
    """The spec for ``model.config.model_type``; a clear error lists the supported types."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SPECS:
        raise AWQInputError(
            f"no adapter for model_type {model_type!r}; supported: {', '.join(sorted(SPECS))}. "
            "Add a ModelSpec in awq_ext/models/ for a new architecture."
        )
    return SPECS[model_type]


def get_blocks(model: nn.Module, spec: ModelSpec) -> nn.ModuleList:
    return get_module(model, spec.blocks)


__all__ = [
    "ModelSpec", "ScalingGroup", "SPECS", "register_spec", "get_spec", "get_blocks", "get_module",
    "block_linears", "group_applies",
]
