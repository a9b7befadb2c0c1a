"""Search results as data: scales and clips keyed by full module name, replayable on a fresh model.

Stored as one safetensors file: tensors ``scale/<prev_op path>`` ([K] float32) and ``clip/<linear path>``
([N, K/G] float32), and a JSON metadata entry with the configuration and each scale's consumers and
search statistics. Search once, then quantize many copies (or other bit widths of the same transform).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from awq_ext.errors import AWQInputError

_FORMAT = "awq_ext.search_record/1"


@dataclass
class ScaleEntry:
    prev_op: str
    linears: list[str]
    scales: torch.Tensor
    alpha: float = 0.0
    beta: float = 0.0
    loss: float = float("nan")
    identity_loss: float = float("nan")
    kind: str = "auto"  # prev-op kind (awq_ext.models.spec.PREV_KINDS) and, for "rows", [parts, part]
    rows: list[int] | None = None
    routers: list[str] = field(default_factory=list)  # float consumers folded alongside (MoE routers)


@dataclass
class SearchRecord:
    config: dict = field(default_factory=dict)
    scales: dict[str, ScaleEntry] = field(default_factory=dict)  # key: prev_op full path
    clips: dict[str, torch.Tensor] = field(default_factory=dict)  # key: linear full path

    def for_block(self, prefix: str) -> tuple[list[ScaleEntry], dict[str, torch.Tensor]]:
        """Entries whose modules live under ``prefix`` (e.g. ``model.layers.3.``), in insertion order."""
        sc = [e for k, e in self.scales.items() if k.startswith(prefix)]
        cl = {k: v for k, v in self.clips.items() if k.startswith(prefix)}
        return sc, cl

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file in the same directory, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"scale/{k}": e.scales.detach().float().contiguous().cpu() for k, e in self.scales.items()}
        tensors.update({f"clip/{k}": v.detach().float().contiguous().cpu() for k, v in self.clips.items()})
        entries = {k: {kk: vv for kk, vv in asdict(e).items() if kk != "scales"} for k, e in self.scales.items()}
        meta = {"format": _FORMAT, "config": json.dumps(self.config), "entries": json.dumps(entries)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SearchRecord":
        path = Path(path)
        if not path.is_file():
            raise AWQInputError(f"search record {path} does not exist")
        try:
            tensors = load_file(str(path))
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise AWQInputError(f"search record {path} is unreadable or truncated: {e}") from e
        if meta.get("format") != _FORMAT:
            raise AWQInputError(f"{path} is not an awq_ext search record (format {meta.get('format')!r})")
        entries = json.loads(meta["entries"])
        rec = cls(config=json.loads(meta["config"]))
        for k, e in entries.items():
            key = f"scale/{k}"
            if key not in tensors:
                raise AWQInputError(f"search record {path} lacks tensor {key}")
            rec.scales[k] = ScaleEntry(scales=tensors[key], **e)
        rec.clips = {k[len("clip/"):]: v for k, v in tensors.items() if k.startswith("clip/")}
        return rec
