"""Architecture adapters: a registry of :class:`ModelSpec` tables keyed by ``config.model_type``."""
from __future__ import annotations

import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.models.deepseek import DEEPSEEK
from awq_ext.models.gemma import GEMMA, GEMMA2
from awq_ext.models.gpt2_like import GPT_NEOX, STARCODER2
from awq_ext.models.groups import bind_groups
from awq_ext.models.llama import LLAMA
from awq_ext.models.moe import MIXTRAL, QWEN2_MOE, QWEN3_MOE
from awq_ext.models.mpt import MPT
from awq_ext.models.opt import OPT
from awq_ext.models.parallel import COHERE, FALCON, GPTJ
from awq_ext.models.phi import PHI, PHI3
from awq_ext.models.post_norm import OLMO2
from awq_ext.models.spec import (
    ModelSpec,
    ScalingGroup,
    block_linears,
    get_module,
    group_applies,
    kept_float_linears,
)

BUILTIN_SPECS = (LLAMA, GEMMA, GEMMA2, PHI3, PHI, MIXTRAL, QWEN2_MOE, QWEN3_MOE, DEEPSEEK, OLMO2, COHERE, GPTJ,
                 FALCON, GPT_NEOX, STARCODER2, MPT, OPT)
SPECS: dict[str, ModelSpec] = {t: s for s in BUILTIN_SPECS for t in s.model_types}


def register_spec(spec: ModelSpec) -> None:
    """Add an architecture (e.g. a VLM's language tower) to the registry."""
    for t in spec.model_types:
        SPECS[t] = spec


def get_spec(model: nn.Module, spec: ModelSpec | None = None) -> ModelSpec:
    """``spec`` when given (a ``--spec FILE.json``), else the registry's spec for
    ``model.config.model_type``; an unknown type is refused with the supported list."""
    if spec is not None:
        return spec
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SPECS:
        raise AWQInputError(
            f"no adapter for model_type {model_type!r}; supported: {', '.join(sorted(SPECS))}. For another "
            "architecture pass --spec FILE.json (see README 'Supported architectures'), or add a ModelSpec in "
            "awq_ext/models/."
        )
    return SPECS[model_type]


def get_blocks(model: nn.Module, spec: ModelSpec) -> nn.ModuleList:
    blocks = get_module(model, spec.blocks)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise AWQInputError(f"spec {spec.name!r}: {spec.blocks!r} is a {type(blocks).__name__}, not a non-empty "
                            "ModuleList of decoder blocks")
    return blocks


__all__ = [
    "ModelSpec", "ScalingGroup", "SPECS", "BUILTIN_SPECS", "register_spec", "get_spec", "get_blocks", "get_module",
    "block_linears", "group_applies", "bind_groups", "kept_float_linears",
]
