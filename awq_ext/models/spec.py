"""Model knowledge as data: where the decoder blocks are and which ops AWQ may scale.

One :class:`ModelSpec` per architecture; adding an architecture means adding one table entry in an
adapter module, never a new code path. Paths are dotted attribute names: ``blocks`` from the model
root, everything else relative to one decoder block.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from awq_ext.errors import AWQInputError


@dataclass(frozen=True)
class ScalingGroup:
    """``prev_op`` feeds every module in ``linears``; scaling their input channels by ``s`` is exact when
    ``prev_op``'s output is divided by ``s``. ``inspect`` is the module whose output the search compares
    (the smallest module that contains all of ``linears`` and their interaction, e.g. the attention).
    ``inspect_kwargs``: call ``inspect`` with the block's keyword inputs (rotary embeddings, masks)."""

    prev_op: str
    linears: tuple[str, ...]
    inspect: str
    inspect_kwargs: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """Where one architecture's decoder blocks are and how AWQ treats them.

    ``blocks``: dotted path of the ``nn.ModuleList`` of decoder blocks. ``groups``: scaling groups in
    forward order. A group whose ``prev_op`` output width differs from its linears' input width (GQA's
    v_proj -> o_proj, where each value head feeds several query heads) is skipped: no per-channel
    scale of v_proj's rows can be folded exactly. ``clip_skip``: linears excluded from clip search
    (q/k: their errors pass through softmax, where the per-group output MSE the clip search minimises
    is a poor proxy - the reference skips them). ``keep_fp``: modules outside the blocks never
    quantized (written as ``modules_to_not_convert``).
    """

    name: str
    model_types: tuple[str, ...]
    blocks: str
    groups: tuple[ScalingGroup, ...]
    clip_skip: tuple[str, ...] = ()
    keep_fp: tuple[str, ...] = ("lm_head",)
    notes: str = ""
    extra: dict = field(default_factory=dict)


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path, with a clear error naming the missing part."""
    mod = root
    for part in path.split("."):
        if not hasattr(mod, part):
            raise AWQInputError(
                f"module path {path!r}: {type(mod).__name__} has no attribute {part!r}; the model does not "
                "match its adapter spec (wrong model_type, or a transformers version with another layout)"
            )
        mod = getattr(mod, part)
    return mod


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` in a block, by dotted name relative to the block."""
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def group_applies(block: nn.Module, group: ScalingGroup) -> bool:
    """False when the group cannot be scaled exactly in this block (output/input widths differ)."""
    prev = get_module(block, group.prev_op)
    width = prev.out_features if isinstance(prev, nn.Linear) else prev.weight.shape[0]
    return all(get_module(block, n).in_features == width for n in group.linears)
