"""Run ``open_flamingo`` 2.0.1 on current torch / transformers.

Two problems, two fixes, neither copying the package's code:

1. **Import.** ``import open_flamingo`` runs its package ``__init__``, which imports the model factory,
   which imports ``open_clip``, which imports ``torchvision`` at module level. Where no torchvision
   matching the installed torch can be had (e.g. a CPU-only local torch wheel: PyPI's torchvision
   is built against the CUDA torch and its ``_C`` extension fails to load), the Flamingo model
   classes themselves (``flamingo.py``, ``flamingo_lm.py``, ``helpers.py``) import fine - they only
   need torch, einops and einops-exts. :func:`open_flamingo_modules` imports the package normally when
   it can, and otherwise loads those files under a private package alias, without the factory.

2. **generate on transformers 5.** ``FlamingoLMMixin.forward(self, input_ids, attention_mask, **kw)``
   declares ``attention_mask`` as a required positional parameter; transformers 5's ``generate`` calls
   ``forward(**model_inputs)`` and may omit it (and calls it with every argument by keyword).
   :func:`flamingo_lm_class` builds the language model's class with a thin mixin in front whose
   ``forward`` takes both by keyword with ``None`` defaults and delegates to the original. It also
   passes Flamingo's ``past_key_values`` on under transformers 5's new name ``cache``.
"""
from __future__ import annotations

import importlib
import inspect
import importlib.util
import sys
import types
from dataclasses import dataclass
from functools import lru_cache

import torch.nn as nn

from awq_ext.errors import AWQInputError

_ALIAS = "_vlm_open_flamingo"  # private package name for the factory-free import route
_INSTALL_HINT = "install it with `bash scripts/install_vlm.sh` (open-flamingo is installed with --no-deps)"


@dataclass(frozen=True)
class OpenFlamingoModules:
    """The open_flamingo classes we use, from whichever import route worked."""

    Flamingo: type
    FlamingoLMMixin: type
    FlamingoLayer: type
    route: str  # "package" (import open_flamingo) or "alias" (model files only, no open_clip)


def _missing_optional(exc: ModuleNotFoundError) -> bool:
    # Only a missing open_clip / torchvision / timm justifies the alias route; anything else is a real bug.
    return (exc.name or "").split(".")[0] in ("open_clip", "torchvision", "timm")


@lru_cache(maxsize=1)
def open_flamingo_modules() -> OpenFlamingoModules:
    """Import the Flamingo model classes, falling back to the factory-free route (see module doc)."""
    spec = importlib.util.find_spec("open_flamingo")
    if spec is None or not spec.submodule_search_locations:
        raise AWQInputError(f"the PyPI package open-flamingo is not installed; {_INSTALL_HINT}")
    try:
        importlib.import_module("open_flamingo")
        base, route = "open_flamingo", "package"
    except ModuleNotFoundError as exc:
        if not _missing_optional(exc):
            raise
        if _ALIAS not in sys.modules:
            pkg = types.ModuleType(_ALIAS)
            pkg.__path__ = list(spec.submodule_search_locations)  # package with no __init__ code run
            sys.modules[_ALIAS] = pkg
        base, route = _ALIAS, "alias"
    try:
        flamingo = importlib.import_module(f"{base}.src.flamingo")
        flamingo_lm = importlib.import_module(f"{base}.src.flamingo_lm")
    except ModuleNotFoundError as exc:
        raise AWQInputError(f"open_flamingo's model code needs {exc.name!r}; {_INSTALL_HINT}") from exc
    return OpenFlamingoModules(flamingo.Flamingo, flamingo_lm.FlamingoLMMixin, flamingo_lm.FlamingoLayer, route)


def open_clip_available() -> bool:
    """Whether ``open_clip`` (and so torchvision) imports here."""
    try:
        importlib.import_module("open_clip")
    except ModuleNotFoundError as exc:
        if _missing_optional(exc):
            return False
        raise
    return True


@lru_cache(maxsize=None)
def _cache_keyword(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@lru_cache(maxsize=None)
def _compat_mixin(mixin: type) -> type:
    class KeywordForwardFlamingoLM(mixin):
        """``FlamingoLMMixin`` whose ``forward`` accepts ``input_ids`` / ``attention_mask`` by keyword."""

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            if input_ids is None:
                # The mixin finds image positions from the token ids; embeddings alone cannot carry them.
                raise AWQInputError("Flamingo's language model needs input_ids (inputs_embeds is not supported)")
            past = kwargs.pop("past_key_values", None)
            if past is not None:  # transformers 5 renamed it `cache` (the old name warns, later fails)
                kwargs[_cache_keyword(base_lm_class(self))] = past
            return mixin.forward(self, input_ids, attention_mask, **kwargs)

    return KeywordForwardFlamingoLM


def flamingo_lm_class(base_cls: type) -> type:
    """The class a plain HF causal LM of class ``base_cls`` takes when it becomes Flamingo's language model.

    Same shape as open_flamingo's own ``extend_instance`` (mixin first, so its ``forward`` wins, and the
    class keeps the base name so transformers' auto-class bookkeeping still recognises it).
    """
    mixin = _compat_mixin(open_flamingo_modules().FlamingoLMMixin)
    return type(base_cls.__name__, (mixin, base_cls), {})


def base_lm_class(lang_encoder: nn.Module) -> type:
    """The plain HF class under a Flamingo language model's mixin(s)."""
    mixin = open_flamingo_modules().FlamingoLMMixin
    if not isinstance(lang_encoder, mixin):
        raise AWQInputError(f"{type(lang_encoder).__name__} is not an open_flamingo language model (no FlamingoLMMixin)")
    for cls in type(lang_encoder).__mro__:
        if not issubclass(cls, mixin):
            return cls
    raise AWQInputError("could not find the base class under FlamingoLMMixin")  # unreachable for a real mixin


def patch_lang_encoder(lang_encoder: nn.Module) -> None:
    """Give an already-built Flamingo language model (e.g. from open_flamingo's own factory) the
    keyword-friendly ``forward``. Idempotent."""
    compat = _compat_mixin(open_flamingo_modules().FlamingoLMMixin)
    if isinstance(lang_encoder, compat):
        return
    lang_encoder.__class__ = flamingo_lm_class(base_lm_class(lang_encoder))
