"""Where a VLM keeps its language tower, and what stays in floating point: a data table.

A VLM adapter = the LM spec of its language tower (looked up in ``awq_ext.models`` by the tower's own
``config.model_type``) + the path to that tower + the modules kept in float. Each family lists the
attribute layouts it may have (transformers moved LLaVA's language model in 4.52); the first layout
whose paths all resolve on the given model wins. No model is recognised by a class-name substring.

* **LLaVA** (transformers ``LlavaForConditionalGeneration``): tower = the text model, either the bare
  base model at ``model.language_model`` (transformers >= 4.52) or the causal LM at ``language_model``
  (older). Vision tower, multi-modal projector and ``lm_head`` stay float.
* **Gemma 3** (``Gemma3ForConditionalGeneration``): tower = the ``gemma3_text`` base model at
  ``model.language_model`` (same layout as LLaVA's); SigLIP vision tower, projector and head stay float.
* **OpenFlamingo** (``open_flamingo.Flamingo``): tower = ``lang_encoder`` (an HF causal LM with
  open_flamingo's mixin). Its decoder-layer list holds ``FlamingoLayer`` wrappers, each with the
  original block at ``decoder_layer`` and an optional gated cross-attention block beside it; the
  original blocks are also listed at ``lang_encoder.old_decoder_blocks``. Quantization runs on a
  text-only view in which the list holds the original blocks (see :mod:`vlm.quantize`), so the gated
  cross-attention, perceiver and vision encoder are never seen by the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.models import SPECS, ModelSpec
from awq_ext.models.spec import get_module



@dataclass(frozen=True)
class TowerLayout:
    """One attribute layout of a VLM family.

    ``tower``: dotted path from the VLM root to the language model. ``strip``: prefix removed from the
    LM spec's ``blocks`` path when the tower is a bare base model rather than a causal LM (LLaMA's
    ``model.layers`` -> ``layers``). ``block_inner``: path inside each entry of the tower's block list
    to the original decoder block (``decoder_layer`` for Flamingo's wrappers, else empty).
    ``keep_fp``: modules (paths from the VLM root) never quantized; all must exist for the layout
    to match. ``text_only_view``: the view :mod:`vlm.quantize` must open before calibrating.
    """

    tower: str
    keep_fp: tuple[str, ...]
    strip: str = ""
    block_inner: str = ""
    text_only_view: str | None = None


@dataclass(frozen=True)
class VLMAdapter:
    name: str
    layouts: tuple[TowerLayout, ...]
    notes: str = ""


ADAPTERS: dict[str, VLMAdapter] = {
    "llava": VLMAdapter(
        "llava",
        (
            TowerLayout("model.language_model", ("model.vision_tower", "model.multi_modal_projector", "lm_head"),
                        strip="model."),
            TowerLayout("language_model", ("vision_tower", "multi_modal_projector", "language_model.lm_head")),
        ),
        notes="transformers LlavaForConditionalGeneration; config.model_type 'llava'",
    ),
    "gemma3": VLMAdapter(
        "gemma3",
        (TowerLayout("model.language_model", ("model.vision_tower", "model.multi_modal_projector", "lm_head"),
                     strip="model."),),
        notes="transformers Gemma3ForConditionalGeneration; its tower is a gemma3_text model",
    ),
    "openflamingo": VLMAdapter(
        "openflamingo",
        (
            TowerLayout("lang_encoder", ("vision_encoder", "perceiver", "lang_encoder.gated_cross_attn_layers"),
                        block_inner="decoder_layer", text_only_view="flamingo"),
        ),
        notes="open_flamingo.Flamingo; has no config, so pass family='openflamingo' or let the "
              "layout (lang_encoder + perceiver) decide",
    ),
}


@dataclass(frozen=True)
class ResolvedTower:
    """A VLM's language tower as the calibration pipeline needs it.

    ``blocks``: path of the decoder-block list relative to ``module`` (inside the text-only view for
    Flamingo). ``spec``: the LM spec with ``blocks`` rewritten to that path.
    """

    family: str
    layout: TowerLayout
    path: str
    module: nn.Module
    spec: ModelSpec
    blocks: str

    def vlm_name(self, block_relative: str) -> str:
        """Full VLM path of a module given as ``<blocks>.<i>.<rest>`` relative to the tower."""
        head = self.blocks + "."
        if not block_relative.startswith(head):
            raise AWQInputError(f"{block_relative!r} is not under the tower's block list {self.blocks!r}")
        idx, _, rest = block_relative[len(head):].partition(".")
        inner = f"{self.layout.block_inner}." if self.layout.block_inner else ""
        return f"{self.path}.{self.blocks}.{idx}.{inner}{rest}"


def _has_path(root: nn.Module, path: str) -> bool:
    try:
        get_module(root, path)
    except AWQInputError:
        return False
    return True


def family_of(model: nn.Module) -> str:
    """The adapter family: ``config.model_type`` when it names one, else the one layout that matches."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in ADAPTERS:
        return model_type
    matches = [name for name, a in ADAPTERS.items()
               if any(_has_path(model, lay.tower) and all(_has_path(model, k) for k in lay.keep_fp)
                      for lay in a.layouts)]
    if len(matches) != 1:
        raise AWQInputError(
            f"cannot tell which VLM family {type(model).__name__} (model_type {model_type!r}) is; known: "
            f"{', '.join(sorted(ADAPTERS))}. Pass family=... explicitly, or add a VLMAdapter in vlm/adapters.py"
        )
    return matches[0]


def resolve_tower(model: nn.Module, family: str | None = None) -> ResolvedTower:
    """Find the language tower of ``model`` and the LM spec that describes its blocks."""
    family = family or family_of(model)
    if family not in ADAPTERS:
        raise AWQInputError(f"unknown VLM family {family!r}; known: {', '.join(sorted(ADAPTERS))}")
    adapter = ADAPTERS[family]
    tried = []
    for layout in adapter.layouts:
        missing = [p for p in (layout.tower, *layout.keep_fp) if not _has_path(model, p)]
        if missing:
            tried.append(f"{layout.tower} (missing {', '.join(missing)})")
            continue
        tower = get_module(model, layout.tower)
        model_type = getattr(getattr(tower, "config", None), "model_type", None)
        if model_type not in SPECS:
            raise AWQInputError(
                f"the {family} language tower at {layout.tower!r} has model_type {model_type!r}, which has no "
                f"LM spec; supported: {', '.join(sorted(SPECS))}. Add a ModelSpec for it first."
            )
        lm = SPECS[model_type]
        if layout.strip and not lm.blocks.startswith(layout.strip):
            raise AWQInputError(f"LM spec {lm.name!r} blocks path {lm.blocks!r} does not start with "
                                f"{layout.strip!r}; this layout cannot host a {lm.name} tower")
        blocks = lm.blocks[len(layout.strip):]
        if not _has_path(tower, blocks):
            tried.append(f"{layout.tower} (no block list {blocks!r})")
            continue
        return ResolvedTower(family, layout, layout.tower, tower, replace(lm, blocks=blocks), blocks)
    raise AWQInputError(f"no {family} layout matches {type(model).__name__}; tried: {'; '.join(tried)}")


def keep_fp_modules(model: nn.Module, family: str | None = None) -> list[str]:
    """Paths of the modules that stay in float (for ``modules_to_not_convert`` and reports)."""
    return list(resolve_tower(model, family).layout.keep_fp)
