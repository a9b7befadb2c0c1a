"""Models larger than memory: a meta-device skeleton whose decoder blocks are read from disk one at a time.

The float model is never materialized whole. :func:`open_streamed` builds the model from its config
with every parameter on the meta device (accelerate's ``init_empty_weights``; buffers computed at
init, such as rotary frequencies, stay real), and a :class:`BlockStore` that

* loads the parameters outside the decoder blocks (embeddings, final norm, head) once;
* ``load_block(i, device)``: reads block ``i``'s tensors from a :class:`WeightSource` - safetensors
  shards through memory-mapped ``safe_open``, or a GGUF file tensor by tensor (the ``gguf`` package's
  dequantization and transformers' GGUF name table and tensor processors, exactly what
  ``from_pretrained(gguf_file=...)`` applies, so the weights are bit-identical) - onto the calibration
  device;
* ``release_block(i)``: moves the block back to the meta device, freeing its memory.

It is the :class:`awq_ext.calibrate.driver.BlockSource` of the streaming driver. The output side is
:class:`StreamingCheckpoint`, a driver observer that packs each finished block into the checkpoint's
shards (:class:`awq_ext.io.shards.ShardWriter`) as soon as it is quantized, and finalises the
checkpoint (remaining tensors, config, tokenizer, index) atomically.

Tensor names: a safetensors checkpoint names its tensors as the model's state dict does (with or
without the base-model prefix, e.g. OPT's ``decoder.*``) or as ``save_pretrained`` writes them (its
reverse conversion mapping: Mixtral's and Qwen-MoE's per-expert tensors, which transformers 5 fuses
into 3-D ``gate_up_proj``/``down_proj``). MoE experts are unfused on the meta device
(:func:`~awq_ext.models.experts.unfuse_experts`) before anything is read, so a block's experts arrive
as per-expert linears - read from per-expert tensors, or as slices of stored fused ones.
"""
from __future__ import annotations

import ctypes
import json
import mmap
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Collection
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from awq_ext.errors import AWQInputError, CheckpointError
from awq_ext.io.checkpoint import build_quant_config, checkpoint_tensors, write_metadata
from awq_ext.io.original_format import original_names
from awq_ext.io.shards import DEFAULT_MAX_SHARD_SIZE, INDEX_NAME, WEIGHTS_NAME, ShardWriter
from awq_ext.models import ModelSpec, get_blocks, get_spec
from awq_ext.models.experts import FusedLayout, Index, fused_layout, unfuse_experts
from awq_ext.nn.wqlinear import replace_linears


def trim_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``; elsewhere nothing to do).

    A block's tensors below glibc's mmap threshold live on the heap; freed, their pages stay resident
    and count in the process's RSS until trimmed, so without this each block's peak would sit on top of
    the previous block's leftovers.
    """
    libc = ctypes.CDLL(None)  # the process's own symbols: libc's on Linux
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


_CAST_BYTES = 16 << 20  # source bytes per step of a casting read
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (glibc malloc.h)


def map_large_allocations(threshold: int = 1 << 20) -> None:
    """Serve every allocation of ``threshold`` bytes or more by its own memory map (glibc ``mallopt``;
    elsewhere nothing to do).

    glibc raises its mmap threshold (up to 32 MiB) each time a mapped chunk is freed, so a block's
    tensors of a few MiB end up on the heap, whose freed pages stay resident: measured on a 1-layer
    TinyLlama-shape model, the heap held ~350 MiB of free pages at the peak. A fixed threshold returns
    each such tensor's memory the moment it is freed. Process-wide: for jobs that stream blocks.
    """
    libc = ctypes.CDLL(None)
    if hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))


class WeightSource(Protocol):
    """Tensors of a model by stored name, read one at a time. Files are mapped only while ``read``
    runs: pages of a memory map count in the process's resident set for as long as the map lives, so a
    map kept open would grow to the whole checkpoint."""

    def names(self) -> set[str]: ...

    def read(self, name: str, dtype: torch.dtype | None = None, index: Index = ()) -> torch.Tensor:
        """The stored tensor ``name``, or its part ``tensor[index]``; floats cast to ``dtype`` when given."""
        ...


class SafetensorsSource:
    """``model.safetensors`` or an indexed set of shards; each tensor is read through the file's
    memory map, so only the tensors asked for are ever resident."""

    def __init__(self, directory: str | Path):
        d = Path(directory)
        index = d / INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index}: not a valid safetensors index ({exc})") from None
            self._file = {name: d / f for name, f in weight_map.items()}
        elif (d / WEIGHTS_NAME).is_file():
            with safe_open(str(d / WEIGHTS_NAME), framework="pt") as fh:
                self._file = {name: d / WEIGHTS_NAME for name in fh.keys()}
        else:
            raise AWQInputError(f"{d}: neither {WEIGHTS_NAME} nor {INDEX_NAME}; streaming reads safetensors "
                                "checkpoints (or pass a .gguf file)")
        for f in set(self._file.values()):
            if not f.is_file():
                raise CheckpointError(f"{f}: shard listed in {INDEX_NAME} is missing")

    def names(self) -> set[str]:
        return set(self._file)

    def read(self, name: str, dtype: torch.dtype | None = None, index: Index = ()) -> torch.Tensor:
        f = self._file[name]
        try:
            return self._read_one(f, name, dtype, index)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{f}: cannot read tensor {name} ({exc}); the file is truncated or corrupt") from None

    @staticmethod
    def _read_one(f: Path, name: str, dtype: torch.dtype | None, index: Index) -> torch.Tensor:
        with safe_open(str(f), framework="pt") as fh:
            # A part (one expert of a fused tensor) is read alone, as a copy: never the whole tensor.
            t = fh.get_slice(name)[index] if index else fh.get_tensor(name)
            if dtype is None or not t.is_floating_point() or t.dtype == dtype or t.dim() == 0:
                return t
            if index:
                return t.to(dtype)
            rows, shape = t.shape[0], t.shape
        # A cast reads the source a few MiB at a time, the file mapped only meanwhile: the mapped pages of
        # a whole float32 embedding or head would otherwise be resident beside its cast copy.
        out = torch.empty(shape, dtype=dtype)
        step = max(1, _CAST_BYTES // max(1, out[0].numel() * 4))
        for r0 in range(0, rows, step):
            with safe_open(str(f), framework="pt") as fh:
                out[r0 : r0 + step].copy_(fh.get_slice(name)[r0 : r0 + step])
        return out


class GGUFSource:
    """A GGUF file read tensor by tensor: ``gguf.dequantize`` on the memory-mapped block data, then
    the architecture's transformers tensor processor (e.g. LLaMA's q/k head un-permutation)."""

    def __init__(self, path: str | Path, skeleton: nn.Module):
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map, load_gguf_checkpoint, read_field,
        )

        self.path = Path(path)
        self._reader = GGUFReader(str(self.path))
        self._parsed = load_gguf_checkpoint(str(self.path), return_tensors=False)
        arch = read_field(self._reader, "general.architecture")[0]
        self._processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=self._parsed["config"])
        self._mapping = get_gguf_hf_weights_map(skeleton, self._processor)
        self._tensors = {self._mapping[t.name]: t for t in self._reader.tensors if t.name in self._mapping}

    def names(self) -> set[str]:
        return set(self._tensors)

    def read(self, name: str, dtype: torch.dtype | None = None, index: Index = ()) -> torch.Tensor:
        """A part is cut from the whole dequantized tensor (the gguf package dequantizes whole tensors)."""
        from gguf import dequantize

        t = self._tensors[name]
        res = self._processor.process(weights=dequantize(t.data, t.tensor_type), name=t.name,
                                      tensor_key_mapping=self._mapping, parsed_parameters=self._parsed)
        if res.name != t.name:
            raise AWQInputError(f"{self.path}: GGUF tensor {t.name} is renamed to {res.name} by transformers' "
                                "processor for this architecture; streaming does not support such tensors - "
                                "quantize without --stream")
        out = torch.from_numpy(np.copy(res.weights))
        out = out[index].clone() if index else out
        # The reader maps the whole file for its lifetime: drop the pages just read from our resident set
        # (they stay in the page cache; reading them again refaults them).
        mm = getattr(self._reader.data, "_mmap", None)
        if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)
        return out.to(dtype) if dtype is not None and out.is_floating_point() else out


@dataclass(frozen=True)
class StoredPart:
    """Where a parameter is in the checkpoint: the stored tensor, and the part of it (``()``: all)."""

    name: str
    index: Index = ()


class BlockStore:
    """The decoder blocks of a meta-device skeleton, materialized one at a time from ``source``.

    ``dtype``: the float dtype the weights are cast to (the in-memory path's ``load_model`` dtype).
    ``fused``: where the skeleton's per-expert linears were in its fused experts before
    :func:`~awq_ext.models.experts.unfuse_experts` (a checkpoint may store either layout).

    A parameter is read from the tensor of its own name (with or without the base-model prefix), else
    from its expert's slice of a stored fused tensor, else from where transformers' ``save_pretrained``
    puts it (:mod:`awq_ext.io.original_format`: e.g. Mixtral's ``block_sparse_moe.experts.{e}.w1``).
    """

    resident = False

    def __init__(self, model: nn.Module, spec: ModelSpec, source: WeightSource, dtype: torch.dtype = torch.float32,
                 fused: FusedLayout | None = None):
        self.model, self.spec, self.source, self.dtype = model, spec, source, dtype
        self.fused = fused if fused is not None else FusedLayout({}, {})
        self._shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}  # meta tensors: no memory
        # Free the embeddings/head while the blocks run (set when nothing needs them before the end, i.e.
        # no layer-by-layer evaluation); :meth:`load_globals` brings them back for the checkpoint's tail.
        self.release_globals_after_capture = False
        self.blocks = get_blocks(model, spec)
        self.prefix = spec.blocks + "."
        self._available = source.names()
        base = getattr(model, "base_model_prefix", "") or ""
        self._strip = base + "." if base else ""
        # Every block's tensors are located now, block by block (a reverse-mapping probe is one block's
        # size): a checkpoint that lacks some is refused before calibration starts, not hours into it.
        self._block_parts = [self._locate([f"{self.prefix}{i}.{n}" for n in b.state_dict()], f"{self.prefix}{i}.")
                             for i, b in enumerate(self.blocks)]

    def _lookup(self, name: str) -> str | None:
        if name in self._available:
            return name
        if self._strip and name.startswith(self._strip) and name[len(self._strip):] in self._available:
            return name[len(self._strip):]  # checkpoints saved from the base model (OPT's decoder.*)
        return None

    def _locate(self, names: list[str], scope: str = "") -> dict[str, StoredPart]:
        """Where each parameter is stored (see the class docstring); all found, or an error naming the rest
        and the stored tensors under ``scope`` (the block's prefix) that none of them was found in."""
        found: dict[str, StoredPart] = {}
        for n in names:
            own = self._lookup(n)
            fused, index = self.fused.parts.get(n, (None, ()))
            fused_stored = self._lookup(fused) if fused is not None else None
            if own is not None:
                found[n] = StoredPart(own)
            elif fused_stored is not None:
                found[n] = StoredPart(fused_stored, index)
        rest = [n for n in names if n not in found]
        if rest:
            found.update(self._locate_original(rest))
        missing = [n for n in names if n not in found]
        if missing:
            raise self._missing_error(missing, scope, self._unclaimed(scope, {p.name for p in found.values()}))
        return found

    def _locate_original(self, names: list[str]) -> dict[str, StoredPart]:
        wanted = {n: self.fused.parts.get(n, (n, ())) for n in names}
        shapes = {p: self.fused.shapes[p] if p in self.fused.shapes else self._shapes[p] for p, _ in wanted.values()}
        original = original_names(self.model, shapes, wanted)
        return {n: StoredPart(s) for n, o in original.items() if (s := self._lookup(o)) is not None}

    def _unclaimed(self, scope: str, claimed: set[str]) -> list[str]:
        if not scope:
            return []
        scopes = (scope, scope[len(self._strip):]) if self._strip and scope.startswith(self._strip) else (scope,)
        return sorted(a for a in self._available if a.startswith(scopes) and a not in claimed)

    def _missing_error(self, missing: list[str], scope: str, unclaimed: list[str]) -> AWQInputError:
        fused = sorted({self.fused.parts[n][0] for n in missing if n in self.fused.parts})
        as_slices = f", nor as expert slices of {fused[:2]}" if fused else ""
        more = " ..." if len(unclaimed) > 4 else ""
        left = (f"; stored under {scope!r} and matched to nothing: {unclaimed[:4]}{more}" if unclaimed
                else f"; the checkpoint holds e.g. {sorted(self._available)[:3]}")
        return AWQInputError(
            f"{len(missing)} tensor(s) {missing[:4]}{' ...' if len(missing) > 4 else ''} are not in the checkpoint: "
            f"neither under these names{as_slices}, nor where transformers' save_pretrained writes them for "
            f"model_type {getattr(self.model.config, 'model_type', None)!r}{left}. Streaming reads checkpoints in "
            "save_pretrained's layout or with the model's own state-dict names; quantize without --stream "
            "(from_pretrained converts other layouts), or re-save the model with save_pretrained"
        )

    def _read(self, parts: dict[str, StoredPart], device: torch.device | str,
              dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for n, part in parts.items():  # one tensor at a time (the source casts floats), never a whole set
            t = self.source.read(part.name, dtype or self.dtype, part.index)
            out[n] = t.to(device)
            del t
        return out

    def load_globals(self, device: torch.device | str = "cpu", *, dtype: torch.dtype | None = None,
                     skip: Collection[str] = ()) -> None:
        """Load every parameter and buffer outside the decoder blocks (but ``skip``) and re-tie tied
        weights. ``dtype``: cast floats to it instead of the store's dtype (the checkpoint's tail is
        read straight into its save dtype)."""
        tied = getattr(self.model, "all_tied_weights_keys", None) or {}
        # A tied tensor absent from the checkpoint is re-tied below (e.g. lm_head -> embed_tokens).
        names = [n for n in self.model.state_dict() if not n.startswith(self.prefix) and n not in skip
                 and not (n in tied and not self._has(n))]
        state = self._read(self._locate(names), device, dtype)
        result = self.model.load_state_dict(state, strict=False, assign=True)
        if result.unexpected_keys:
            raise AWQInputError(f"tensors {result.unexpected_keys[:5]} do not belong to the model")
        self.model.tie_weights()
        skipped = set(skip) | {k for k, v in tied.items() if v in skip}
        left = [n for n, p in self.model.named_parameters()
                if p.is_meta and not n.startswith(self.prefix) and n not in skipped]
        if left:
            raise AWQInputError(f"parameters {left[:5]} were found neither in the checkpoint nor tied")

    def release_globals(self) -> None:
        """Move every parameter outside the decoder blocks back to the meta device."""
        for name, module in self.model.named_modules():
            if name == self.spec.blocks or name.startswith(self.prefix):
                continue
            for leaf, p in list(module.named_parameters(recurse=False)):
                module.register_parameter(leaf, nn.Parameter(p.to("meta"), requires_grad=False))
        trim_heap()

    def tail_keys(self) -> set[str]:
        """State-dict names after the first block (final norm, head): not needed to reach block 0."""
        keys = list(self.model.state_dict())
        first = next((i for i, k in enumerate(keys) if k.startswith(self.prefix)), len(keys))
        return set(keys[first:])

    def after_capture(self) -> None:
        if self.release_globals_after_capture:
            self.release_globals()

    def _has(self, name: str) -> bool:
        return self._lookup(name) is not None

    def load_block(self, index: int, device: torch.device) -> nn.Module:
        block = self.blocks[index]
        prefix = f"{self.prefix}{index}."
        local = list(block.state_dict())
        full = self._read(self._block_parts[index], device)
        block.load_state_dict({n: full.pop(prefix + n) for n in local}, strict=True, assign=True)
        return block

    def release_block(self, index: int) -> None:
        self.blocks[index].to("meta")
        trim_heap()

    def materialized_blocks(self) -> list[int]:
        """Indices of the blocks holding real (non-meta) parameters right now."""
        return [i for i, b in enumerate(self.blocks) if any(not p.is_meta for p in b.parameters())]


@dataclass
class StreamedModel:
    model: nn.Module
    tokenizer: Any
    store: BlockStore
    source_kind: str  # "safetensors" | "gguf"


def open_streamed(name: str | None, dtype: torch.dtype = torch.float32, *, head_only: bool = False,
                  spec: ModelSpec | None = None) -> StreamedModel:
    """A meta skeleton of the float model at ``name`` (a local directory of safetensors or a .gguf file;
    None = the offline SmolLM2 GGUF), its tokenizer, and the :class:`BlockStore` that fills it.
    ``spec``: the architecture spec (a ``--spec FILE.json``); default: the registry's for the model type.
    The parameters outside the decoder blocks are loaded (``head_only``: only those before the blocks,
    i.e. what reaching block 0 needs; the rest is read when the checkpoint is completed); the blocks
    stay on the meta device."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from awq_ext.models.loading import resolve_model_source

    src, kwargs = resolve_model_source(name)
    if not Path(src).exists():
        raise AWQInputError(f"--stream reads a local directory or .gguf file; {src!r} is neither")
    config = AutoConfig.from_pretrained(src, local_files_only=True, **kwargs)
    config.use_cache = False
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    try:
        model.generation_config = GenerationConfig.from_pretrained(src, local_files_only=True, **kwargs)
    except OSError:
        pass  # no generation_config.json: the one derived from the config stays
    gguf = kwargs.get("gguf_file")
    # GGUF's name table is transformers' own, built on the model's own (fused-experts) layout.
    source: WeightSource = GGUFSource(Path(src) / gguf, model) if gguf else SafetensorsSource(src)
    fused = fused_layout(model)
    unfuse_experts(model)  # per-expert linears on the meta device, as calibration and the checkpoint want them
    store = BlockStore(model, get_spec(model, spec), source, dtype, fused)
    store.load_globals("cpu", skip=store.tail_keys() if head_only else ())
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True, **kwargs)
    return StreamedModel(model, tokenizer, store, "gguf" if gguf else "safetensors")


class StreamingCheckpoint:
    """Driver observer writing an AWQ interchange checkpoint block by block.

    Each finished block's linears are packed (:func:`awq_ext.nn.replace_linears` with the codes the
    step left in ``ctx.outputs``) and its tensors appended to the shards; the tensors that precede the
    blocks in the state dict (embeddings) are written first and the rest (final norm, head) by
    :meth:`commit`, so the shards hold the tensors in the same order - and the same bytes - as
    :func:`awq_ext.io.save_quantized` writes for the in-memory model.
    """

    def __init__(self, out_dir: str | Path, model: nn.Module, spec: ModelSpec, save_dtype: torch.dtype,
                 max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE, *, overwrite: bool = False):
        self.model, self.save_dtype = model, save_dtype
        self.prefix = spec.blocks + "."
        self.writer = ShardWriter(out_dir, max_shard_size, overwrite=overwrite)
        keys = list(model.state_dict())
        first = next((i for i, k in enumerate(keys) if k.startswith(self.prefix)), len(keys))
        self._written: set[str] = set()
        for name, t in checkpoint_tensors(model, save_dtype, exclude_prefix=self.prefix, skip=set(keys[first:])):
            self._add(name, t)

    def _add(self, name: str, t: torch.Tensor) -> None:
        self.writer.add(name, t)
        self._written.add(name)

    def after_block(self, ctx) -> None:
        names = [n for n in ctx.outputs if n.startswith(ctx.prefix)]
        if not names:
            raise AWQInputError(f"{ctx.prefix.rstrip('.')}: the method left no 4-bit codes to write; streaming "
                                "checkpoints hold weight-only 4-bit methods")
        for n in names:  # one linear at a time, dropping its int32 codes once packed
            replace_linears(self.model, {n: ctx.outputs.pop(n)})
        for name, t in checkpoint_tensors(ctx.block, self.save_dtype):
            self._add(ctx.prefix + name, t)

    def commit(self, tokenizer: Any = None, quant_config: dict | None = None, *,
               reload: BlockStore | None = None) -> Path:
        """Write the remaining tensors, config.json, generation config and tokenizer; move into place.

        ``reload``: the store released the tensors outside the blocks during calibration; read the ones
        still to write (final norm, head) back, straight into the save dtype.
        """
        tied = getattr(self.model, "all_tied_weights_keys", None) or {}
        skip = self._written | {k for k, v in tied.items() if v in self._written}
        if reload is not None:
            reload.load_globals("cpu", dtype=self.save_dtype, skip=skip)
        for name, t in checkpoint_tensors(self.model, self.save_dtype, exclude_prefix=self.prefix, skip=skip):
            self._add(name, t)
        qc = build_quant_config(self.model, quant_config)
        write_metadata(self.writer.staging, self.model, tokenizer, qc, self.save_dtype)
        return self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()
