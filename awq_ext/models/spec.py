"""Model knowledge as data: where the decoder blocks are and which ops AWQ may scale.

One :class:`ModelSpec` per architecture; adding an architecture means adding one table entry in an
adapter module (or a ``--spec FILE.json``), never a new code path. Paths are dotted attribute names:
``blocks`` from the model root, everything else relative to one decoder block; ``""`` is the block
itself, and a ``*`` component stands for every index of a ``ModuleList`` (the experts of a MoE).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import torch.nn as nn

from awq_ext.errors import AWQInputError

# How a previous op takes 1/s (taught once in awq_ext.calibrate.fold):
#   "auto"   nn.Linear -> "linear", a module with a 1-D ``weight`` -> "norm"
#   "norm"   y = norm(x) * w (+ b): w, b <- w / s, b / s          (RMSNorm, LayerNorm)
#   "offset_norm"  y = norm(x) * (1 + w): w <- (1 + w) / s - 1    (Gemma 1/2/3)
#   "linear" every output row (and bias) of a Linear <- row / s
#   "rows"   one slice of a fused Linear's rows: the rows split into ``rows[0]`` equal parts, part
#            ``rows[1]`` takes 1/s (Phi-3 qkv_proj's v part, gate_up_proj's up half)
PREV_KINDS = ("auto", "norm", "offset_norm", "linear", "rows")


@dataclass(frozen=True)
class ScalingGroup:
    """``prev_op`` feeds every module in ``linears``; scaling their input channels by ``s`` is exact when
    ``prev_op``'s output is divided by ``s``. ``inspect`` is the module whose output the search compares
    (the smallest module that contains all of ``linears`` and their interaction, e.g. the attention;
    ``""`` = the whole block, for parallel blocks where one norm feeds attention and MLP).
    ``inspect_kwargs``: call ``inspect`` with the block's keyword inputs (rotary embeddings, masks).

    ``kind``/``rows``: how ``prev_op`` is folded (see ``PREV_KINDS``). ``routers``: float consumers of
    the same input (MoE routers, Qwen-MoE's shared-expert gate): their input columns take ``s`` so
    routing is unchanged; they are never quantized nor part of the search loss. ``source``: the module
    whose input is ``inspect``'s input and the activation statistics (default ``linears[0]``; the MoE
    block for expert groups, whose experts each see only their routed tokens). ``when_absent``: the
    group applies only in blocks that lack these modules (Falcon: one norm feeds both branches exactly
    when there is no ``post_attention_layernorm``).
    """

    prev_op: str
    linears: tuple[str, ...]
    inspect: str
    inspect_kwargs: bool = False
    kind: str = "auto"
    rows: tuple[int, int] | None = None
    routers: tuple[str, ...] = ()
    source: str | None = None
    when_absent: tuple[str, ...] = ()
    when_present: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in PREV_KINDS:
            raise AWQInputError(f"scaling group {self.prev_op!r}: unknown prev-op kind {self.kind!r}; "
                                f"choose one of {', '.join(PREV_KINDS)}")
        if (self.kind == "rows") != (self.rows is not None):
            raise AWQInputError(f"scaling group {self.prev_op!r}: kind 'rows' needs rows=[parts, part] (and "
                                "only it takes rows)")
        if self.rows is not None and not (len(self.rows) == 2 and 0 <= self.rows[1] < self.rows[0]):
            raise AWQInputError(f"scaling group {self.prev_op!r}: rows must be [parts, part] with 0 <= part < "
                                f"parts, got {list(self.rows)}")
        if not self.linears:
            raise AWQInputError(f"scaling group {self.prev_op!r} lists no linears")

    @property
    def input_name(self) -> str:
        """The module whose recorded input feeds ``inspect`` and the activation statistics."""
        return self.linears[0] if self.source is None else self.source

    def paths(self) -> tuple[str, ...]:
        return (self.prev_op, *self.linears, *self.routers, self.inspect,
                *(() if self.source is None else (self.source,)))


@dataclass(frozen=True)
class ModelSpec:
    """Where one architecture's decoder blocks are and how AWQ treats them.

    ``blocks``: dotted path of the ``nn.ModuleList`` of decoder blocks. ``groups``: scaling groups in
    forward order. A group whose ``prev_op`` output width differs from its linears' input width (GQA's
    v_proj -> o_proj, where each value head feeds several query heads) is skipped: no per-channel
    scale of v_proj's rows can be folded exactly. Groups whose modules are absent in a block (dense vs
    MoE layers) are skipped there and reported. ``clip_skip``: linears excluded from clip search
    (q/k: their errors pass through softmax, where the per-group output MSE the clip search minimises
    is a poor proxy - the reference skips them). ``keep_fp``: modules outside the blocks never
    quantized (written as ``modules_to_not_convert``). ``keep_float``: ``(pattern, reason)`` for block
    linears never quantized (routers, gates). ``unscaled``: ``(linears, reason)`` for block linears no
    group scales, with the reason (documentation and the README table).
    """

    name: str
    model_types: tuple[str, ...]
    blocks: str
    groups: tuple[ScalingGroup, ...]
    clip_skip: tuple[str, ...] = ()
    keep_fp: tuple[str, ...] = ("lm_head",)
    keep_float: tuple[tuple[str, str], ...] = ()
    unscaled: tuple[tuple[str, str], ...] = ()
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def kept_float_reason(self, name: str) -> str | None:
        """Why block linear ``name`` stays float, or ``None`` when it is quantized."""
        return next((why for pat, why in self.keep_float if fnmatchcase(name, pat)), None)

    def unscaled_reason(self, name: str) -> str | None:
        """Why no group scales block linear ``name`` (``unscaled`` entries are comma-separated patterns)."""
        return next((why for pats, why in self.unscaled
                     if any(fnmatchcase(name, p.strip()) for p in pats.split(","))), None)

    def clip_skipped(self, name: str) -> bool:
        return any(fnmatchcase(name, pat) for pat in self.clip_skip)


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Resolve a dotted path (``""`` is ``root``), with a clear error naming the missing part."""
    mod = root
    for part in path.split(".") if path else ():
        if getattr(mod, part, None) is None:  # configs switch some sub-modules off by setting them to None
            raise AWQInputError(
                f"module path {path!r}: {type(mod).__name__} has no attribute {part!r}; the model does not "
                "match its adapter spec (wrong model_type, or a transformers version with another layout)"
            )
        mod = getattr(mod, part)
    return mod


def has_module(root: nn.Module, path: str) -> bool:
    try:
        get_module(root, path)
    except AWQInputError:
        return False
    return True


def block_linears(block: nn.Module, spec: ModelSpec | None = None) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` in a block, by dotted name relative to the block; with ``spec``, without the
    ones it keeps float."""
    return {n: m for n, m in block.named_modules()
            if isinstance(m, nn.Linear) and (spec is None or spec.kept_float_reason(n) is None)}


def kept_float_linears(block: nn.Module, spec: ModelSpec) -> dict[str, str]:
    """Block linears ``spec`` keeps float, with the reason."""
    return {n: spec.kept_float_reason(n) for n, m in block.named_modules()
            if isinstance(m, nn.Linear) and spec.kept_float_reason(n) is not None}


def group_applies(block: nn.Module, group: ScalingGroup) -> bool:
    """False when the group cannot be scaled exactly in this block (absent modules, widths differ)."""
    from awq_ext.models.groups import skip_reason

    return skip_reason(block, group) is None
