"""``--spec FILE.json``: a :class:`ModelSpec` for an architecture the registry does not know.

The file mirrors the dataclasses::

    {"name": "my_llama", "model_types": ["my_llama"], "blocks": "model.layers",
     "groups": [{"prev_op": "input_layernorm", "linears": ["self_attn.q_proj", ...],
                 "inspect": "self_attn", "inspect_kwargs": true}, ...],
     "clip_skip": [...], "keep_fp": ["lm_head"], "keep_float": [["mlp.gate", "router"]]}

Group keys: ``prev_op``, ``linears``, ``inspect`` (required), ``inspect_kwargs``, ``kind``, ``rows``,
``routers``, ``source``, ``when_absent``, ``when_present`` (see :class:`ScalingGroup`). Structure errors
name the file and key; :func:`check_spec_on_model` then refuses paths that exist in no block and
groups whose widths cannot match, naming the path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from awq_ext.errors import AWQInputError
from awq_ext.models.groups import bind_groups
from awq_ext.models.spec import ModelSpec, ScalingGroup, get_module, has_module

_SPEC_KEYS = {"name", "model_types", "blocks", "groups", "clip_skip", "keep_fp", "keep_float", "unscaled", "notes"}
_GROUP_KEYS = {"prev_op", "linears", "inspect", "inspect_kwargs", "kind", "rows", "routers", "source",
               "when_absent", "when_present"}
_GROUP_REQUIRED = ("prev_op", "linears", "inspect")


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AWQInputError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _pairs(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)
                                              for v in value):
        raise AWQInputError(f"{where} must be a list of [pattern, reason] pairs, got {value!r}")
    return tuple((a, b) for a, b in value)


def _group(raw: Any, where: str) -> ScalingGroup:
    if not isinstance(raw, dict):
        raise AWQInputError(f"{where} must be an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _GROUP_KEYS)
    if unknown:
        raise AWQInputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_GROUP_KEYS)}")
    missing = [k for k in _GROUP_REQUIRED if k not in raw]
    if missing:
        raise AWQInputError(f"{where}: missing key(s) {missing}")
    for k in ("prev_op", "inspect", "kind") + (("source",) if raw.get("source") is not None else ()):
        if k in raw and not isinstance(raw[k], str):
            raise AWQInputError(f"{where}.{k} must be a string, got {raw[k]!r}")
    if not isinstance(raw.get("inspect_kwargs", False), bool):
        raise AWQInputError(f"{where}.inspect_kwargs must be true or false")
    rows = raw.get("rows")
    if rows is not None and (not isinstance(rows, list) or len(rows) != 2 or not all(isinstance(r, int) for r in rows)):
        raise AWQInputError(f"{where}.rows must be [parts, part] (two integers), got {rows!r}")
    try:
        return ScalingGroup(
            prev_op=raw["prev_op"], linears=_strs(raw["linears"], f"{where}.linears"), inspect=raw["inspect"],
            inspect_kwargs=raw.get("inspect_kwargs", False), kind=raw.get("kind", "auto"),
            rows=None if rows is None else tuple(rows), routers=_strs(raw.get("routers", []), f"{where}.routers"),
            source=raw.get("source"), when_absent=_strs(raw.get("when_absent", []), f"{where}.when_absent"),
            when_present=_strs(raw.get("when_present", []), f"{where}.when_present"),
        )
    except AWQInputError as e:
        raise AWQInputError(f"{where}: {e}") from None


def spec_from_dict(raw: Any, where: str = "spec") -> ModelSpec:
    """Validate the structure of a spec given as plain data."""
    if not isinstance(raw, dict):
        raise AWQInputError(f"{where} must be a JSON object")
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise AWQInputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    for k in ("blocks", "groups"):
        if k not in raw:
            raise AWQInputError(f"{where}: missing key {k!r}")
    if not isinstance(raw["blocks"], str) or not raw["blocks"]:
        raise AWQInputError(f"{where}.blocks must be the dotted path of the decoder-block list, e.g. 'model.layers'")
    if not isinstance(raw["groups"], list):
        raise AWQInputError(f"{where}.groups must be a list of scaling groups (it may be empty)")
    return ModelSpec(
        name=str(raw.get("name", Path(where).stem)),
        model_types=_strs(raw.get("model_types", []), f"{where}.model_types"),
        blocks=raw["blocks"],
        groups=tuple(_group(g, f"{where}.groups[{i}]") for i, g in enumerate(raw["groups"])),
        clip_skip=_strs(raw.get("clip_skip", []), f"{where}.clip_skip"),
        keep_fp=_strs(raw.get("keep_fp", ["lm_head"]), f"{where}.keep_fp"),
        keep_float=_pairs(raw.get("keep_float", []), f"{where}.keep_float"),
        unscaled=_pairs(raw.get("unscaled", []), f"{where}.unscaled"),
        notes=str(raw.get("notes", "")),
    )


def load_spec_file(path: str | os.PathLike) -> ModelSpec:
    p = Path(path)
    if not p.is_file():
        raise AWQInputError(f"--spec {p}: no such file")
    try:
        raw = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AWQInputError(f"--spec {p} is not valid JSON: {e}") from None
    return spec_from_dict(raw, str(p))


def check_spec_on_model(model: nn.Module, spec: ModelSpec, strict_paths: bool = True) -> None:
    """Refuse a spec that does not describe ``model``: the block list must exist and every group must
    bind consistently (consumer widths agree, a norm's width matches its linears) in every block. With
    ``strict_paths`` (spec files), every path of every group must exist in at least one block - built-in
    specs list alternative layouts (Falcon's norms, DeepSeek's q_proj / q_a_proj) that a given model
    lacks by design."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if spec.model_types and model_type not in spec.model_types:
        raise AWQInputError(f"spec {spec.name!r} is for model_type(s) {list(spec.model_types)}, but the model is "
                            f"{model_type!r}")
    blocks = get_module(model, spec.blocks)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise AWQInputError(f"spec {spec.name!r}: blocks path {spec.blocks!r} is a {type(blocks).__name__}, not a "
                            "non-empty ModuleList of decoder blocks")
    for b in blocks:
        bind_groups(b, spec)  # raises on width mismatches that can never be exact
    if not strict_paths:
        return
    for gi, group in enumerate(spec.groups):
        for path in group.paths():
            concrete = path.replace("*", "0")
            if not any(has_module(b, concrete) for b in blocks):
                raise AWQInputError(f"spec {spec.name!r}: groups[{gi}] ({group.prev_op}) names module path "
                                    f"{path!r}, which no block of {spec.blocks!r} has; check the spelling against "
                                    f"model.{spec.blocks}[0]")
    for pat in spec.clip_skip:
        if "*" not in pat and not any(has_module(b, pat) for b in blocks):
            raise AWQInputError(f"spec {spec.name!r}: clip_skip path {pat!r} exists in no block")
