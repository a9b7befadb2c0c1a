"""Save and load real-quantized models as AWQ "GEMM" interchange checkpoints.

On disk (what transformers / vLLM / AutoAWQ read)::

    out_dir/
      config.json                       model config + quantization_config
      model.safetensors                 or model-0000i-of-0000n.safetensors + model.safetensors.index.json
      generation_config.json, tokenizer files (when available)

Each quantized linear ``<name>`` contributes ``<name>.qweight``, ``<name>.qzeros``, ``<name>.scales``
(+ ``<name>.g_idx`` for act-order, + ``<name>.bias``) in the layout of
:class:`awq_ext.pack.interchange.InterchangeGemmLayout`; every other tensor (embeddings, norms, the
head, biases) in the save dtype - float16 unless the model is bfloat16, as AutoAWQ stores them
(:func:`resolve_save_dtype`). ``quantization_config = {quant_method: "awq", bits: 4, group_size,
zero_point, version: "gemm", format: "gemm", modules_to_not_convert}``; ``desc_act: true`` is added
(our extension) when layers carry ``g_idx``. ``config.json`` says ``use_cache: true``.

Saves are atomic (:class:`awq_ext.io.shards.ShardWriter`): everything is written into a hidden
temporary directory next to ``out_dir`` and renamed into place only when complete, so an interrupted
save leaves nothing loadable at ``out_dir``. The streaming driver writes through the same writer,
block by block (:mod:`awq_ext.io.stream`).
Loads build the model skeleton with its parameters on the meta device (no float weights are ever
materialized for quantized linears) and validate every tensor's name, shape, dtype and finiteness
before it is used, naming the offending tensor and file on failure.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from awq_ext.errors import AWQInputError, CheckpointError
from awq_ext.models.experts import unfuse_experts
from awq_ext.io.shards import DEFAULT_MAX_SHARD_SIZE, INDEX_NAME, WEIGHTS_NAME, ShardWriter
from awq_ext.nn.wqlinear import WQLinear, set_backend, wq_linears
from awq_ext.pack.interchange import INTERCHANGE_GEMM
from awq_ext.quant.quantizer import SUPPORTED_GROUP_SIZES

CONFIG_NAME = "config.json"
QUANT_BUFFERS = ("qweight", "qzeros", "scales", "g_idx")
_QUANT_DTYPES = {"qweight": torch.int32, "qzeros": torch.int32, "scales": torch.float16, "g_idx": torch.int32}
_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SAVE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


# ============================================================================ save
def build_quant_config(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``quantization_config`` dict for ``model``, derived from its :class:`WQLinear` modules.

    ``extra`` may add keys; keys it shares with the derived config must agree with the modules.
    """
    layers = wq_linears(model)
    if not layers:
        raise AWQInputError(
            "save_quantized: the model has no WQLinear modules; quantize it and call "
            "awq_ext.nn.replace_linears(model, quantized) before saving"
        )
    for attr in ("group_size", "zero_point", "desc_act"):
        values = {getattr(m, attr) for m in layers.values()}
        if len(values) > 1:
            raise AWQInputError(
                f"save_quantized: WQLinear modules disagree on {attr} ({sorted(values, key=str)}); the "
                "interchange config holds a single value - quantize all layers with the same settings"
            )
    first = next(iter(layers.values()))
    not_converted = [name for name, m in model.named_modules() if type(m) is nn.Linear]
    qc: dict[str, Any] = {
        "quant_method": "awq",
        "bits": INTERCHANGE_GEMM.bits,
        "group_size": first.group_size,
        "zero_point": first.zero_point,
        "version": INTERCHANGE_GEMM.version,
        "format": INTERCHANGE_GEMM.version,  # GPTQModel reads "format", transformers/AutoAWQ "version"
        "modules_to_not_convert": not_converted or None,
    }
    if first.desc_act:
        qc["desc_act"] = True
    for key, value in (extra or {}).items():
        if key == "modules_to_not_convert":
            listed = list(value or [])
            clash = [n for n in listed if n in layers]
            if clash:
                raise AWQInputError(f"quant_config lists quantized modules in modules_to_not_convert: {clash}")
            qc[key] = sorted(set(listed) | set(not_converted)) or None
        elif key in qc and qc[key] != value:
            raise AWQInputError(
                f"quant_config[{key!r}] = {value!r} disagrees with the model's WQLinear modules ({qc[key]!r})"
            )
        else:
            qc[key] = value
    return qc


def resolve_save_dtype(model: nn.Module, save_dtype: torch.dtype | str | None) -> torch.dtype:
    """The dtype of the checkpoint's unquantized float tensors (embeddings, norms, head, biases).

    ``None`` (the default) is what AutoAWQ checkpoints hold: float16, unless the model computes in
    bfloat16 (then bfloat16: its embeddings may exceed float16's range). ``"float32"`` keeps full
    precision at twice the size.
    """
    if save_dtype is None:
        floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
        return torch.bfloat16 if torch.bfloat16 in floats else torch.float16
    if isinstance(save_dtype, str):
        if save_dtype not in SAVE_DTYPES:
            raise AWQInputError(f"save dtype {save_dtype!r} not supported; choose one of {', '.join(SAVE_DTYPES)}")
        return SAVE_DTYPES[save_dtype]
    if save_dtype not in SAVE_DTYPES.values():
        raise AWQInputError(f"save dtype {save_dtype} not supported; choose one of {', '.join(SAVE_DTYPES)}")
    return save_dtype


_CAST_CHUNK = 1 << 22  # elements cast (and checked) at a time: no full-size temporaries beside the result


def _storable(name: str, t: torch.Tensor, save_dtype: torch.dtype) -> torch.Tensor:
    src = t.detach().to("cpu")
    if not src.is_floating_point() or src.dtype == save_dtype:
        return src.contiguous()
    src = src.contiguous()
    cast = torch.empty(src.shape, dtype=save_dtype)
    flat_src, flat_cast = src.view(-1), cast.view(-1)
    for i in range(0, flat_src.numel(), _CAST_CHUNK):
        a, b = flat_src[i : i + _CAST_CHUNK], flat_cast[i : i + _CAST_CHUNK]
        b.copy_(a)
        if not bool(torch.isfinite(b).all()) and bool(torch.isfinite(a).all()):
            raise AWQInputError(f"{name}: values exceed the range of {save_dtype} (max |x| {float(a.abs().max()):.4g}); "
                                "save with --save-dtype bfloat16 or float32")
    return cast


def checkpoint_tensors(
    model: nn.Module, save_dtype: torch.dtype, *, exclude_prefix: str | None = None, skip: Collection[str] = ()
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, CPU tensor)`` in state-dict order as the checkpoint stores them: tied tensors once
    (safetensors refuses shared storage), packed buffers as they are, other floats in ``save_dtype``.

    ``exclude_prefix``: leave out the tensors under it (the streaming driver writes the decoder blocks
    itself, one at a time, and they are back on the meta device when the rest is written); ``skip``:
    names already written.
    """
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    tied_names = set(tied) | set(tied.values())
    packed = {f"{name}.{leaf}" for name in wq_linears(model) for leaf in QUANT_BUFFERS}
    seen: set[tuple] = set()
    owners: set[int] = set()
    for name, t in model.state_dict().items():
        if name in skip or (exclude_prefix is not None and name.startswith(exclude_prefix)):
            continue
        if t.is_meta:
            raise AWQInputError(f"save_quantized: {name} is on the meta device; materialize the model first")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)
        if key in seen and name in tied_names:
            continue  # a tie the config re-creates at load time (e.g. lm_head -> embed_tokens)
        seen.add(key)
        out = t.detach().to("cpu").contiguous() if name in packed else _storable(name, t, save_dtype)
        ptr = out.untyped_storage().data_ptr()
        if ptr in owners:  # anything still sharing storage (views, untracked ties) gets its own copy
            out = out.clone()
        owners.add(out.untyped_storage().data_ptr())
        yield name, out


def checkpoint_config(model: nn.Module, qc: dict[str, Any], save_dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` of the checkpoint: the model's config + ``quantization_config``, the stored dtype,
    and ``use_cache: true`` (calibration switches caching off; generation wants it back on)."""
    config = json.loads(model.config.to_json_string(use_diff=False))
    config["quantization_config"] = qc
    config["use_cache"] = True
    dtype_name = str(save_dtype).removeprefix("torch.")
    config["dtype"] = dtype_name
    if "torch_dtype" in config:
        config["torch_dtype"] = dtype_name
    if not config.get("architectures"):
        config["architectures"] = [type(model).__name__]
    if config.get("tie_word_embeddings"):
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if isinstance(output, WQLinear):
            # A quantized head has no float weight to tie to the embedding.
            config["tie_word_embeddings"] = False
    return config


def write_metadata(directory: Path, model: nn.Module, tokenizer: Any, qc: dict[str, Any],
                   save_dtype: torch.dtype) -> None:
    """config.json, generation_config.json and the tokenizer files into ``directory``."""
    config = checkpoint_config(model, qc, save_dtype)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(str(directory))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))


def save_quantized(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    tokenizer: Any = None,
    quant_config: Mapping[str, Any] | None = None,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    save_dtype: torch.dtype | str | None = None,
) -> Path:
    """Write ``model`` (a transformers model whose quantized linears are :class:`WQLinear`) to ``out_dir``.

    Tensors go to safetensors, split into shards of at most ``max_shard_size`` (bytes, or a string
    such as ``"2GB"``) with ``model.safetensors.index.json`` when more than one is needed.
    Unquantized float tensors are stored in ``save_dtype`` (see :func:`resolve_save_dtype`; default
    float16 unless the model is bfloat16). ``quant_config`` adds keys to ``quantization_config``
    (see :func:`build_quant_config`). An existing ``out_dir`` is refused unless ``overwrite=True``;
    it is replaced only after the new checkpoint is complete. Returns the checkpoint directory.
    """
    if getattr(model, "config", None) is None:
        raise AWQInputError("save_quantized: the model has no .config; pass a transformers PreTrainedModel")
    qc = build_quant_config(model, quant_config)
    dtype = resolve_save_dtype(model, save_dtype)
    with ShardWriter(out_dir, max_shard_size, overwrite=overwrite) as writer:
        for name, t in checkpoint_tensors(model, dtype):
            writer.add(name, t)
        write_metadata(writer.staging, model, tokenizer, qc, dtype)
        return writer.commit()


# ============================================================================ load
@dataclass(frozen=True)
class _TensorInfo:
    file: Path
    shape: tuple[int, ...]
    dtype: str


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing {what}; is this a directory written by save_quantized?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({exc}); the file is corrupt") from None


def read_quant_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``quantization_config`` of the checkpoint at ``path``."""
    cfg_path = Path(path) / CONFIG_NAME
    cfg = _read_json(cfg_path, CONFIG_NAME)
    return _validate_quant_config(cfg.get("quantization_config") if isinstance(cfg, dict) else None, cfg_path)


def _validate_quant_config(qc: Any, where: Path) -> dict[str, Any]:
    if not isinstance(qc, dict):
        raise CheckpointError(
            f"{where}: no quantization_config; this is not a quantized checkpoint (load a float model "
            "with transformers instead)"
        )
    if str(qc.get("quant_method", "")).lower() != "awq":
        raise CheckpointError(
            f"{where}: quantization_config.quant_method is {qc.get('quant_method')!r}, expected 'awq'"
        )
    for key in ("version", "format"):
        if str(qc.get(key, INTERCHANGE_GEMM.version)).lower() != INTERCHANGE_GEMM.version:
            raise CheckpointError(
                f"{where}: quantization_config.{key} is {qc.get(key)!r}; only the 'gemm' interchange layout "
                "can be loaded"
            )
    if "version" not in qc:
        raise CheckpointError(f"{where}: quantization_config has no version; expected 'gemm'")
    bits = qc.get("bits", qc.get("w_bit"))
    if bits != INTERCHANGE_GEMM.bits:
        raise CheckpointError(f"{where}: quantization_config.bits is {bits!r}; only 4-bit checkpoints can be loaded")
    group_size = qc.get("group_size", qc.get("q_group_size"))
    if group_size not in SUPPORTED_GROUP_SIZES or isinstance(group_size, bool):
        raise CheckpointError(
            f"{where}: quantization_config.group_size is {group_size!r}; expected one of {SUPPORTED_GROUP_SIZES}"
        )
    zero_point = qc.get("zero_point", True)
    desc_act = qc.get("desc_act", False)
    for key, value in (("zero_point", zero_point), ("desc_act", desc_act)):
        if not isinstance(value, bool):
            raise CheckpointError(f"{where}: quantization_config.{key} must be true or false, got {value!r}")
    skip = qc.get("modules_to_not_convert") or []
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise CheckpointError(f"{where}: quantization_config.modules_to_not_convert must be a list of names")
    return {**qc, "bits": bits, "group_size": group_size, "zero_point": zero_point, "desc_act": desc_act,
            "modules_to_not_convert": skip}


def _weight_files(ckpt: Path) -> tuple[list[Path], dict[str, str] | None]:
    index_path = ckpt / INDEX_NAME
    if index_path.exists():
        index = _read_json(index_path, INDEX_NAME)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path}: has no weight_map; the index is corrupt")
        files = sorted({ckpt / str(f) for f in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{f}: shard listed in {INDEX_NAME} is missing")
        return files, weight_map
    single = ckpt / WEIGHTS_NAME
    if not single.is_file():
        raise CheckpointError(f"{ckpt}: neither {WEIGHTS_NAME} nor {INDEX_NAME} found")
    return [single], None


def _scan_headers(files: list[Path], weight_map: dict[str, str] | None) -> dict[str, _TensorInfo]:
    """Tensor names, shapes and dtypes from the safetensors headers (no data is read)."""
    info: dict[str, _TensorInfo] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    sl = fh.get_slice(key)
                    if key in info:
                        raise CheckpointError(f"{f}: tensor {key} is also stored in {info[key].file.name}")
                    info[key] = _TensorInfo(f, tuple(sl.get_shape()), sl.get_dtype())
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{f}: cannot read the safetensors header ({exc}); the file is truncated or corrupt - re-save it"
            ) from None
    if weight_map is not None:
        for key, fname in weight_map.items():
            if key not in info:
                raise CheckpointError(f"{INDEX_NAME} lists tensor {key} in {fname}, but no shard holds it")
            if info[key].file.name != fname:
                raise CheckpointError(
                    f"{INDEX_NAME} places tensor {key} in {fname}, but it is stored in {info[key].file.name}"
                )
        stray = sorted(set(info) - set(weight_map))
        if stray:
            raise CheckpointError(f"tensors {stray[:5]} are in shards but not in {INDEX_NAME}; the index is stale")
    return info


def _build_skeleton(cfg: dict[str, Any], ckpt: Path, model_cls: Any) -> nn.Module:
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    try:
        config_class = CONFIG_MAPPING[model_type]
    except KeyError:
        raise CheckpointError(
            f"{ckpt / CONFIG_NAME}: model_type {model_type!r} is unknown to this transformers version"
        ) from None
    plain = {k: v for k, v in cfg.items() if k != "quantization_config"}
    try:
        config = config_class.from_dict(plain)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt / CONFIG_NAME}: invalid {model_type} config ({exc})") from None
    # Parameters on meta; buffers computed at init (rotary inv_freq) stay real.
    with init_empty_weights(include_buffers=False):
        return (model_cls or AutoModelForCausalLM).from_config(config)


def _skipped(name: str, patterns: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") or name.endswith("." + p) for p in patterns)


def _install_wqlinears(
    model: nn.Module, info: dict[str, _TensorInfo], qc: dict[str, Any], ckpt: Path
) -> dict[str, WQLinear]:
    prefixes = sorted({k[: -len(".qweight")] for k in info if k.endswith(".qweight")})
    if not prefixes:
        raise CheckpointError(f"{ckpt}: no *.qweight tensors; the checkpoint holds no quantized layers")
    layers: dict[str, WQLinear] = {}
    for name in prefixes:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            module = None
        if not isinstance(module, nn.Linear):
            raise CheckpointError(
                f"{info[name + '.qweight'].file.name}: tensor {name}.qweight has no nn.Linear {name!r} in the "
                "model built from config.json; the config does not match the weights"
            )
        if _skipped(name, qc["modules_to_not_convert"]):
            raise CheckpointError(
                f"{ckpt / CONFIG_NAME}: {name} is listed in modules_to_not_convert but stored quantized"
            )
        try:
            layer = WQLinear(
                module.in_features,
                module.out_features,
                qc["group_size"],
                bias=module.bias is not None,
                zero_point=qc["zero_point"],
                desc_act=qc["desc_act"],
                device="meta",
            )
        except AWQInputError as exc:
            raise CheckpointError(f"{ckpt / CONFIG_NAME}: layer {name} cannot hold this config: {exc}") from None
        model.set_submodule(name, layer)
        layers[name] = layer
    return layers


def _check_tensor(
    key: str, ti: _TensorInfo, expected: torch.Tensor, layers: dict[str, WQLinear], qc: dict[str, Any]
) -> None:
    owner, _, leaf = key.rpartition(".")
    quantized = owner in layers and leaf in QUANT_BUFFERS
    if ti.shape != tuple(expected.shape):
        hint = ""
        if quantized:
            m = layers[owner]
            hint = (
                f" for in_features {m.in_features}, out_features {m.out_features}, group_size "
                f"{qc['group_size']} (from config.json)"
            )
        raise CheckpointError(
            f"{ti.file.name}: tensor {key} has shape {list(ti.shape)}, expected {list(expected.shape)}{hint}; "
            "config.json does not match the weights"
        )
    got = _ST_DTYPES.get(ti.dtype)
    if quantized or not expected.is_floating_point():
        want = _QUANT_DTYPES[leaf] if quantized else expected.dtype
        if got != want:
            raise CheckpointError(f"{ti.file.name}: tensor {key} has dtype {ti.dtype}, expected {want}")
    elif got is None or not got.is_floating_point:
        raise CheckpointError(f"{ti.file.name}: tensor {key} has dtype {ti.dtype}, expected a floating-point dtype")


def _read_tensors(
    info: dict[str, _TensorInfo], layers: dict[str, WQLinear], dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for key, ti in info.items():
        by_file.setdefault(ti.file, []).append(key)
    for f, keys in by_file.items():
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in keys:
                    state[key] = fh.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{f}: cannot read tensor data ({exc}); the file is corrupt - re-save it") from None
        for key in keys:
            t = state[key]
            owner, _, leaf = key.rpartition(".")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{f.name}: tensor {key} holds NaN or Inf; the checkpoint is corrupt")
            if owner in layers and leaf == "g_idx" and t.numel():
                n_groups = layers[owner].scales.shape[0]
                if int(t.min()) < 0 or int(t.max()) >= n_groups:
                    raise CheckpointError(f"{f.name}: tensor {key} has group indices outside [0, {n_groups - 1}]")
            if dtype is not None and t.is_floating_point() and not (owner in layers and leaf in QUANT_BUFFERS):
                state[key] = t.to(dtype)
    return state


def load_quantized(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    *,
    backend: str = "auto",
    model_cls: Any = None,
) -> nn.Module:
    """Load a checkpoint written by :func:`save_quantized` (or any AWQ GEMM checkpoint).

    The skeleton is built from ``config.json`` by ``model_cls.from_config`` (default
    ``transformers.AutoModelForCausalLM``) with parameters on the meta device; every linear that has
    a ``<name>.qweight`` tensor becomes a :class:`WQLinear`; all tensors are checked against the
    skeleton before loading. ``dtype`` casts the unquantized float tensors (embeddings, norms,
    biases, unconverted linears); ``scales`` always stay float16. Raises :class:`CheckpointError`
    naming the offending file and tensor.
    """
    ckpt = Path(path)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: not a directory; pass the --output directory of a quantize run")
    cfg = _read_json(ckpt / CONFIG_NAME, CONFIG_NAME)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{ckpt / CONFIG_NAME}: expected a JSON object")
    qc = _validate_quant_config(cfg.get("quantization_config"), ckpt / CONFIG_NAME)
    files, weight_map = _weight_files(ckpt)
    info = _scan_headers(files, weight_map)

    model = _build_skeleton(cfg, ckpt, model_cls)
    if not any(k.endswith(".gate_up_proj") for k in info):
        unfuse_experts(model)  # quantized experts are stored per expert (experts.{e}.gate_proj.qweight ...)
    layers = _install_wqlinears(model, info, qc, ckpt)
    expected = model.state_dict(keep_vars=True)
    tied = getattr(model, "all_tied_weights_keys", None) or {}

    missing = [k for k in expected if k not in info and not (k in tied and tied[k] in info)]
    if missing:
        raise CheckpointError(
            f"{ckpt}: missing tensor(s) {missing[:8]}{' ...' if len(missing) > 8 else ''} that config.json "
            f"({cfg.get('model_type')}, {len(layers)} quantized linears) requires"
        )
    unexpected = sorted(set(info) - set(expected))
    if unexpected:
        where = info[unexpected[0]].file.name
        raise CheckpointError(
            f"{where}: unexpected tensor(s) {unexpected[:8]} not in the model built from config.json; the config "
            "does not match the weights"
        )
    for key, ti in info.items():
        _check_tensor(key, ti, expected[key], layers, qc)

    state = _read_tensors(info, layers, dtype)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise CheckpointError(f"{ckpt}: tensors {result.unexpected_keys[:8]} were not used by the model")
    if result.missing_keys:
        model.tie_weights()
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{ckpt}: tensors {still_meta[:8]} were not found in the checkpoint nor tied")
    model.to(device)
    set_backend(model, backend)
    return model.eval()


# ============================================================================ size
@dataclass(frozen=True)
class SizeReport:
    """On-disk footprint of a quantized checkpoint, split into quantized linears and the rest."""

    file_bytes: int  # safetensors files as stored (headers included)
    quantized_weights: int  # number of weight elements held as 4-bit codes (sum of K * N)
    quantized_bytes: int  # qweight + qzeros + scales (+ g_idx) payload
    other_elements: int  # elements of every other tensor (embeddings, head, norms, biases)
    other_bytes: int

    @property
    def bits_per_quantized_weight(self) -> float:
        """Payload bits per quantized weight; 4 + (16 + 4) / G for 4-bit codes, fp16 scales, 4-bit zeros."""
        return 8 * self.quantized_bytes / self.quantized_weights if self.quantized_weights else math.nan

    def summary(self) -> str:
        mib = 2**20
        return (
            f"checkpoint {self.file_bytes / mib:.2f} MiB: {self.quantized_weights:,} quantized weights in "
            f"{self.quantized_bytes / mib:.2f} MiB ({self.bits_per_quantized_weight:.3f} bits/weight), "
            f"{self.other_elements:,} unquantized values in {self.other_bytes / mib:.2f} MiB"
        )


def _size_from_entries(entries: list[tuple[str, tuple[int, ...], int]], file_bytes: int) -> SizeReport:
    """``entries``: (tensor name, shape, bytes per element)."""
    quantized_owners = {name[: -len(".qweight")] for name, _, _ in entries if name.endswith(".qweight")}
    q_weights = q_bytes = o_elems = o_bytes = 0
    for name, shape, esize in entries:
        owner, _, leaf = name.rpartition(".")
        numel = math.prod(shape)
        if owner in quantized_owners and leaf in QUANT_BUFFERS:
            q_bytes += numel * esize
            if leaf == "qweight":
                q_weights += numel * INTERCHANGE_GEMM.pack_factor
        else:
            o_elems += numel
            o_bytes += numel * esize
    return SizeReport(file_bytes, q_weights, q_bytes, o_elems, o_bytes)


def checkpoint_size_report(path: str | os.PathLike[str]) -> SizeReport:
    """Size report of a saved checkpoint, read from the safetensors headers only."""
    ckpt = Path(path)
    files, weight_map = _weight_files(ckpt)
    info = _scan_headers(files, weight_map)
    entries = []
    for name, ti in info.items():
        dt = _ST_DTYPES.get(ti.dtype)
        esize = dt.itemsize if dt is not None else 1
        entries.append((name, ti.shape, esize))
    return _size_from_entries(entries, sum(f.stat().st_size for f in files))


def model_size_report(model: nn.Module, save_dtype: torch.dtype | str | None = None) -> SizeReport:
    """Size report of an in-memory model as :func:`save_quantized` would store it (``file_bytes`` = payload)."""
    dtype = resolve_save_dtype(model, save_dtype)
    entries = [(n, tuple(t.shape), t.element_size()) for n, t in checkpoint_tensors(model, dtype)]
    total = sum(math.prod(s) * e for _, s, e in entries)
    return _size_from_entries(entries, total)

