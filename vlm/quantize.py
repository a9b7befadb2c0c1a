"""Quantize only a VLM's language tower with awq_ext's calibration pipeline (text-only calibration).

``awq_ext.calibrate.quantize_model`` finds a model's spec from ``model.config.model_type`` and its
blocks from the spec's path. A VLM's language tower is wrapped in a small :class:`TowerView` whose
``config.model_type`` names a derived spec (the LM spec with ``blocks`` rewritten to the tower's
layout, registered once); the pipeline runs on the view unchanged, feeding calibration text through
the tower alone, as the AWQ paper does for VLMs. Nothing outside the tower's decoder blocks is passed
to the pipeline, and :func:`quantize_language_tower` checks afterwards that no parameter outside those
blocks was touched.

OpenFlamingo needs one more step: its decoder-layer list holds ``FlamingoLayer`` wrappers (original
block + gated cross-attention). :func:`flamingo_text_only` temporarily puts the original blocks back
in the list and gives the language model its plain HF class (undoing the mixin), so the pipeline sees
a plain causal LM; both are restored on exit, also on error.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Iterator

import torch
import torch.nn as nn

from awq_ext.calibrate import QuantizationResult, SearchRecord, quantize_model
from awq_ext.config import QuantizeConfig
from awq_ext.data import calib_blocks, calib_start, load_source, tokenize
from awq_ext.errors import AWQInputError
from awq_ext.models import SPECS, block_linears, register_spec
from awq_ext.models.spec import get_module
from vlm.adapters import ResolvedTower, resolve_tower
from vlm.compat import base_lm_class

FLOAT = "fp16"  # the unquantized baseline's method name (the model as loaded)
_VIEW_ROOT = "tower"


class TowerView(nn.Module):
    """A language tower seen as a model with its own spec: ``forward`` passes straight through.

    ``config.model_type`` is the derived spec's key, so ``awq_ext.models.get_spec`` finds it.
    """

    def __init__(self, tower: nn.Module, model_type: str):
        super().__init__()
        self.tower = tower
        self.config = SimpleNamespace(model_type=model_type)

    def forward(self, **kwargs):
        return self.tower(**kwargs)


def view_spec_key(tower: ResolvedTower) -> str:
    """Register (once) and return the derived spec for ``tower`` seen through a :class:`TowerView`."""
    key = f"vlm-tower/{tower.spec.name}/{tower.blocks}"
    if key not in SPECS:
        register_spec(replace(tower.spec, name=key, model_types=(key,), blocks=f"{_VIEW_ROOT}.{tower.blocks}",
                              keep_fp=()))
    return key


@contextmanager
def flamingo_text_only(lang_encoder: nn.Module, blocks: str) -> Iterator[None]:
    """Within the block, ``lang_encoder`` is the plain HF causal LM it was before Flamingo wrapped it."""
    attr = getattr(lang_encoder, "decoder_layers_attr_name", None)
    if attr != blocks:
        raise AWQInputError(f"the Flamingo language model keeps its decoder layers at {attr!r}, but its LM spec "
                            f"says {blocks!r}; build the model with decoder_layers_attr_name={blocks!r}")
    wrapped = get_module(lang_encoder, blocks)
    originals = lang_encoder.old_decoder_blocks
    if len(wrapped) != len(originals) or any(w.decoder_layer is not o for w, o in zip(wrapped, originals)):
        raise AWQInputError("lang_encoder.old_decoder_blocks are not the blocks inside its FlamingoLayers "
                            "(was the model wrapped for FSDP?); quantize an unwrapped model")
    flamingo_cls = type(lang_encoder)
    parent_path, _, leaf = blocks.rpartition(".")
    parent = get_module(lang_encoder, parent_path) if parent_path else lang_encoder
    setattr(parent, leaf, originals)
    lang_encoder.__class__ = base_lm_class(lang_encoder)
    try:
        yield
    finally:
        lang_encoder.__class__ = flamingo_cls
        setattr(parent, leaf, wrapped)


def _view_context(tower: ResolvedTower):
    if tower.layout.text_only_view == "flamingo":
        return flamingo_text_only(tower.module, tower.blocks)
    if tower.layout.text_only_view is None:
        return nullcontext()
    raise AWQInputError(f"unknown text-only view {tower.layout.text_only_view!r} in the adapter table")


def _block_param_ids(tower: ResolvedTower) -> set[int]:
    ids: set[int] = set()
    for entry in get_module(tower.module, tower.blocks):
        block = get_module(entry, tower.layout.block_inner) if tower.layout.block_inner else entry
        ids.update(id(p) for p in block.parameters())
    return ids


def _fingerprint(model: nn.Module, skip: set[int]) -> dict[str, tuple[int, int]]:
    # (storage address, in-place version counter): any in-place write bumps the counter and any
    # `.data =` replacement moves the storage, so equal fingerprints mean the tensor was not touched.
    out = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(t) not in skip:
            out[name] = (t.data_ptr(), t._version)
    return out


@dataclass
class TowerQuantization:
    """What :func:`quantize_language_tower` did. ``quantized`` keys are full VLM module paths."""

    family: str
    tower: str
    lm_spec: str
    method: str
    quantized: dict = field(default_factory=dict)
    kept_fp: list[str] = field(default_factory=list)
    result: QuantizationResult | None = None

    def summary(self) -> dict:
        r = self.result
        return {
            "family": self.family, "language_tower": self.tower, "lm_spec": self.lm_spec, "method": self.method,
            "quantized_linears": len(self.quantized), "kept_fp": self.kept_fp,
            "seconds": None if r is None else r.seconds,
            "block_rel_error": None if r is None else [b.rel_error for b in r.blocks],
        }


@torch.no_grad()
def quantize_language_tower(
    model: nn.Module,
    calib_ids: torch.Tensor | None,
    cfg: QuantizeConfig,
    family: str | None = None,
    record: SearchRecord | None = None,
    progress: bool = False,
) -> TowerQuantization:
    """Quantize the decoder-block linears of ``model``'s language tower in place (RTN or AWQ).

    ``calib_ids``: ``[n_samples, seqlen]`` token ids of plain text (needed by AWQ; RTN ignores it).
    The vision side, projector / perceiver / cross-attention, embeddings and LM head are left exactly
    as they were (checked). Search records are keyed by paths inside the tower view
    (``tower.<blocks>.<i>...``) and replay through this function with ``record=``.
    """
    tower = resolve_tower(model, family)
    n_blocks = len(get_module(tower.module, tower.blocks))
    if n_blocks == 0:
        raise AWQInputError(f"the language tower at {tower.path!r} has no decoder blocks")
    block_ids = _block_param_ids(tower)
    before = _fingerprint(model, block_ids)
    key = view_spec_key(tower)
    view = TowerView(tower.module, key)
    with _view_context(tower):
        result = quantize_model(view, calib_ids, cfg, record=record, progress=progress)
    after = _fingerprint(model, block_ids)
    changed = sorted(n for n in before if after.get(n) != before[n])
    if changed:
        raise RuntimeError(f"quantizing the language tower modified parameters outside its blocks: {changed[:5]}")
    head = _VIEW_ROOT + "."
    quantized = {tower.vlm_name(name[len(head):]): qw for name, qw in result.quantized.items()}
    return TowerQuantization(tower.family, tower.path, tower.spec.name, cfg.method, quantized,
                             list(tower.layout.keep_fp), result)


def tower_linears(model: nn.Module, family: str | None = None) -> dict[str, nn.Linear]:
    """Every linear inside the language tower's decoder blocks, by full VLM path (what gets quantized)."""
    tower = resolve_tower(model, family)
    out = {}
    for i, entry in enumerate(get_module(tower.module, tower.blocks)):
        block = get_module(entry, tower.layout.block_inner) if tower.layout.block_inner else entry
        for name, lin in block_linears(block).items():
            out[tower.vlm_name(f"{tower.blocks}.{i}.{name}")] = lin
    return out


def text_calibration(tokenizer, n_samples: int, seqlen: int, source: str = "pydoc") -> torch.Tensor:
    """``[n_samples, seqlen]`` token ids of plain text for the language tower (no images).

    ``source``: an ``awq_ext.data`` source name (``pydoc`` offline; ``pileval`` etc. when online) or a
    local text file. Uses the source's calibration part, disjoint from its evaluation part.
    """
    src = load_source(source)
    ids = tokenize(src.calib_text, tokenizer)
    # A text shared with perplexity evaluation keeps its protocol evaluation region out of calibration.
    blocks, _ = calib_blocks(ids, n_samples, seqlen, calib_start(src, None, None))
    return blocks
