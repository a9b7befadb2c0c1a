"""A directory of safetensors shards written tensor by tensor, made visible atomically.

:class:`ShardWriter` is the one writer behind every checkpoint: :func:`awq_ext.io.save_quantized`
hands it a whole model's tensors, the streaming driver hands it one block's packed tensors at a time.
Host memory stays bounded by the largest tensor, not by a shard: each tensor's bytes go straight to
a payload file on disk, and only when a shard is full is its safetensors header written and the
payload appended behind it (the format puts the header, with every tensor's offsets, first).

Layout, as transformers expects: one shard is ``model.safetensors``; more are
``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json`` (``metadata.total_size``
and ``weight_map``). Tensors are assigned to shards greedily in the order they are added: a shard
is closed when the next tensor would take it past ``max_shard_size``.

Atomicity: everything is written into a hidden ``.<name>.partial-*`` directory next to the target and
renamed into place by :meth:`ShardWriter.commit`; an existing target (``overwrite=True``) is moved
aside first and restored if the rename fails, so an interrupted write never leaves a loadable
half-checkpoint behind.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from awq_ext.errors import AWQInputError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = "2GB"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
ST_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
_COPY_CHUNK = 64 * 2**20


def parse_size(size: int | str) -> int:
    """Bytes for ``2GB``, ``500MB``, ``1.5GiB`` or a plain byte count."""
    if isinstance(size, int):
        if size <= 0:
            raise AWQInputError(f"max_shard_size must be positive, got {size}")
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", size)
    if m is None or m.group(2).upper() not in _SIZE_UNITS:
        raise AWQInputError(f"max_shard_size {size!r} not understood; use e.g. 2GB, 500MB or a byte count")
    return max(1, int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]))


@dataclass
class _Entry:
    dtype: str
    shape: list[int]
    begin: int
    end: int


class _OpenShard:
    """One shard being filled: tensor bytes appended to a payload file, header kept in memory."""

    def __init__(self, payload: Path):
        self.payload = payload
        self.fh = open(payload, "wb")
        self.entries: dict[str, _Entry] = {}
        self.size = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        data = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self.fh.write(data.data)
        self.entries[name] = _Entry(ST_DTYPE_NAMES[t.dtype], list(t.shape), self.size, self.size + data.nbytes)
        self.size += data.nbytes


def finish_shard(shard: _OpenShard, path: Path) -> None:
    """Write the safetensors file ``path``: 8-byte header length, JSON header, then the payload."""
    shard.fh.close()
    header: dict = {"__metadata__": {"format": "pt"}}
    header.update({n: {"dtype": e.dtype, "shape": e.shape, "data_offsets": [e.begin, e.end]}
                   for n, e in shard.entries.items()})
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the payload starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as out, open(shard.payload, "rb") as src:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        shutil.copyfileobj(src, out, _COPY_CHUNK)
        out.flush()
        os.fsync(out.fileno())
    shard.payload.unlink()


class ShardWriter:
    """Collect tensors into safetensors shards under ``out_dir``; nothing is visible there until
    :meth:`commit`. Use as a context manager: leaving the block by an exception discards the work.

    ``staging`` is the hidden directory being written; put config and tokenizer files there before
    committing.
    """

    def __init__(self, out_dir: str | os.PathLike[str], max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
                 *, overwrite: bool = False):
        self.out = Path(out_dir).absolute()
        if self.out.exists() and not overwrite:
            raise AWQInputError(f"{self.out} already exists; pass overwrite=True or choose another --output")
        if self.out.exists() and not self.out.is_dir():
            raise AWQInputError(f"{self.out} exists and is not a directory")
        self.max_bytes = parse_size(max_shard_size)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        self._done: list[tuple[Path, list[str]]] = []  # finished shard files (provisional names), their tensors
        self._open: _OpenShard | None = None
        self._names: set[str] = set()
        self.total_size = 0
        self._closed = False

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Append one tensor (copied to the CPU and written to disk now)."""
        if self._closed:
            raise RuntimeError("ShardWriter.add after commit/abort")
        if name in self._names:
            raise AWQInputError(f"tensor {name} was written twice; each tensor belongs to exactly one block")
        if tensor.is_meta:
            raise AWQInputError(f"{name} is on the meta device; its weights were never loaded")
        if tensor.dtype not in ST_DTYPE_NAMES:
            raise AWQInputError(f"{name}: dtype {tensor.dtype} cannot be stored in safetensors")
        nbytes = tensor.numel() * tensor.element_size()
        if self._open is not None and self._open.entries and self._open.size + nbytes > self.max_bytes:
            self._close_shard()
        if self._open is None:
            self._open = _OpenShard(self.staging / f".payload-{len(self._done):05d}")
        self._open.add(name, tensor)
        self._names.add(name)
        self.total_size += nbytes

    def _close_shard(self) -> None:
        shard, self._open = self._open, None
        path = self.staging / f".shard-{len(self._done):05d}.safetensors"
        finish_shard(shard, path)
        self._done.append((path, list(shard.entries)))

    def commit(self) -> Path:
        """Close the last shard, name the shards, write the index, and move the directory into place."""
        if self._open is not None:
            self._close_shard()
        if not self._done:
            raise AWQInputError(f"nothing was written to {self.out}; the model holds no tensors")
        n = len(self._done)
        if n == 1:
            os.rename(self._done[0][0], self.staging / WEIGHTS_NAME)
        else:
            weight_map: dict[str, str] = {}
            for i, (path, names) in enumerate(self._done, start=1):
                fname = f"model-{i:05d}-of-{n:05d}.safetensors"
                os.rename(path, self.staging / fname)
                weight_map.update({name: fname for name in names})
            index = {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}
            (self.staging / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        _fsync_tree(self.staging)
        self._replace_target()
        self._closed = True
        return self.out

    def _replace_target(self) -> None:
        old: Path | None = None  # where a replaced checkpoint waits until the new one is in place
        try:
            if self.out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
                os.rename(self.out, old / "ckpt")
            os.rename(self.staging, self.out)
        except BaseException:
            # Also on KeyboardInterrupt: put a replaced checkpoint back before the staging dir goes.
            if old is not None and (old / "ckpt").exists() and not self.out.exists():
                os.rename(old / "ckpt", self.out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.out.parent)

    def abort(self) -> None:
        """Drop everything written so far (the target directory is untouched); a no-op after commit."""
        if self._closed:
            return
        if self._open is not None:
            self._open.fh.close()
            self._open = None
        shutil.rmtree(self.staging, ignore_errors=True)
        self._closed = True


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
