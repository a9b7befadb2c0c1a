"""Shared driver of the paper's analysis experiments: one model load, pristine weights between runs.

A :class:`Runner` holds the model, its tokenizer, the tokenized texts and a copy of the float weights.
Each experiment row is ``restore() -> transform/quantize -> perplexity``; rows are cached on disk
(``<out>/cache/rows_<table>.json``, keyed by the full configuration) so an interrupted reproduction resumes
where it stopped, and AWQ search records are cached (``<out>/cache/records/``) so tables that share an
AWQ configuration (e.g. W3 g64 in Tables 2, 5, 8 and Figure 7) search it once and replay it after.
"""
from __future__ import annotations


import dataclasses
import hashlib
import json
import os
import time
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from awq_ext.calibrate import SearchRecord, get_method, quantize_model
from awq_ext.calibrate.methods import REFERENCE_GPTQ_OPTIONS
from awq_ext.calibrate.pipeline import QuantizationResult, needs_calibration
from awq_ext.config import AWQConfig, QuantizeConfig
from awq_ext.data import calib_blocks, calib_start, eval_windows
from awq_ext.errors import AWQInputError
from awq_ext.eval import perplexity
from awq_ext.jobs import TextCache, peak_rss_mb, write_json
from awq_ext.models import block_linears, get_blocks, get_spec


@dataclass
class RunSettings:
    """Data sizes shared by every row of a table (serialised with its results)."""

    n_samples: int = 16
    seqlen: int = 512
    calib: str = "pydoc"
    eval: str = "pydoc"
    max_windows: int | None = 16
    eval_seqlen: int = 1024
    chunk_size: int = 4
    # Calibration sequences in AWQ's scale-search loss (None = all): the CPU-time knob of the AWQ rows.
    loss_samples: int | None = None

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.seqlen < 2:
            raise AWQInputError(f"need n_samples >= 1 and seqlen >= 2, got {self.n_samples} x {self.seqlen}")
        if self.loss_samples is not None and self.loss_samples < 1:
            raise AWQInputError(f"loss_samples must be >= 1 (or None for all), got {self.loss_samples}")
        if self.max_windows is not None and self.max_windows < 1:
            raise AWQInputError(f"max_windows must be >= 1 (or None for all), got {self.max_windows}")


def _same_search(cfg: QuantizeConfig, n: int) -> QuantizeConfig:
    """A loss over at least all ``n`` sequences is the loss over all of them: one config, one record."""
    if cfg.awq.loss_samples is not None and cfg.awq.loss_samples >= n:
        return dataclasses.replace(cfg, awq=dataclasses.replace(cfg.awq, loss_samples=None))
    return cfg


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Runner:
    """Loads once; every experiment starts from the pristine float weights (:meth:`restore`)."""

    def __init__(self, model: nn.Module, tokenizer, model_label: str, out_dir: str | os.PathLike,
                 progress: bool = False, use_cache: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.model_label = model_label
        self.texts = TextCache(tokenizer)
        self.out = Path(out_dir)
        self.progress = progress
        self.use_cache = use_cache
        # Optional ``probe(runner) -> dict`` called on every computed row after the method is applied
        # (e.g. explain's held-out block errors), stored in the row under "probe".
        self.probe: Callable[["Runner"], dict] | None = None
        # Render tables from cached rows only; rows never computed are marked "not_run" (ppl None).
        self.cached_only = False
        # Float weights of every parameter and buffer, cloned once (~0.5 GB for SmolLM2 in fp32).
        self._pristine = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._act_means: dict[tuple, dict[str, torch.Tensor]] = {}
        # One cache file per table, so experiments may run in parallel processes without clobbering rows.
        self._rows: dict[str, dict[str, dict]] = {}
        if use_cache:
            for f in sorted((self.out / "cache").glob("rows_*.json")):
                self._rows[f.stem[len("rows_"):]] = json.loads(f.read_text())

    @classmethod
    def load(cls, model_name: str | None, out_dir: str | os.PathLike, **kw) -> "Runner":
        from awq_ext.models.loading import load_model, model_label

        model, tok = load_model(model_name)
        return cls(model, tok, model_label(model_name), out_dir, **kw)

    # -- state -------------------------------------------------------------------------------------
    @torch.no_grad()
    def restore(self) -> None:
        """Put the float weights back (undoes quantization, folded scales and clipping)."""
        self.model.load_state_dict(self._pristine, strict=True)

    # -- data --------------------------------------------------------------------------------------
    def eval_windows(self, source: str, s: RunSettings) -> torch.Tensor:
        win, _ = eval_windows(self.texts.ids(source, "eval"), s.eval_seqlen, s.max_windows)
        return win

    def calib_ids(self, s: RunSettings, source: str | None = None, n_samples: int | None = None) -> torch.Tensor:
        """Calibration blocks ``[n, seqlen]``, after the evaluation region whenever they share a text."""
        return self.calib_range(s, source, n_samples)[0]

    def calib_range(self, s: RunSettings, source: str | None = None, n_samples: int | None = None
                    ) -> tuple[torch.Tensor, int]:
        """``(ids, first token)``; see :mod:`awq_ext.data.tokens` for the disjointness rule."""
        src_name = source or s.calib
        src = self.texts.source(src_name)
        eval_src = self.texts.source(s.eval)
        eval_tokens = None if s.max_windows is None else s.max_windows * s.eval_seqlen
        if src.shared and eval_src.name == src.name and eval_tokens is None:
            eval_tokens = self.texts.ids(s.eval, "eval").numel()
        start = calib_start(src, eval_src, eval_tokens)
        ids, _ = calib_blocks(self.texts.ids(src_name, "calib"), n_samples or s.n_samples, s.seqlen, start)
        return ids, start

    def evaluate(self, s: RunSettings, source: str | None = None) -> dict[str, float]:
        t = time.time()
        r = perplexity(self.model, self.eval_windows(source or s.eval, s), progress=self.progress)
        return {"ppl": r.ppl, "mean_nll": r.mean_nll, "eval_tokens": r.n_tokens, "eval_seconds": time.time() - t}

    @torch.no_grad()
    def float_activation_means(self, s: RunSettings) -> dict[str, torch.Tensor]:
        """:meth:`activation_means` of the float model on ``s``'s calibration data, computed once per
        settings and only when a row first needs it."""
        key = astuple(s)
        if key not in self._act_means:
            self.restore()
            self._act_means[key] = self.activation_means(self.calib_ids(s), s.chunk_size)
        return self._act_means[key]

    def activation_means(self, calib: torch.Tensor, chunk: int = 4) -> dict[str, torch.Tensor]:
        """Mean |x| per input channel (float32 ``[K]``) of every block linear, on the float model.

        Full linear names (``model.layers.3.mlp.down_proj``). One streamed forward pass; only ``[K]``
        sums are kept, never the activations.
        """
        spec = get_spec(self.model)
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        hooks = []
        for i, block in enumerate(get_blocks(self.model, spec)):
            for n, lin in block_linears(block).items():
                full = f"{spec.blocks}.{i}.{n}"

                def hook(m, args, out, full=full):
                    x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
                    sums[full] = sums.get(full, 0) + x.abs().sum(0)
                    counts[full] = counts.get(full, 0) + x.shape[0]

                hooks.append(lin.register_forward_hook(hook))
        try:
            for i in range(0, calib.shape[0], chunk):
                self.model(input_ids=calib[i : i + chunk], use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        return {k: (v / counts[k]).cpu() for k, v in sums.items()}

    # -- quantization ------------------------------------------------------------------------------
    def record_path(self, cfg: QuantizeConfig, s: RunSettings, calib_source: str | None = None,
                    n_samples: int | None = None) -> Path | None:
        """Where the AWQ search of ``cfg`` on these calibration tokens is cached (None: no AWQ search).

        Same calibration tokens + same search config = same record, whatever the evaluation or the quantizer
        after it: AWQ+GPTQ replays the AWQ search (as the reference applies AWQ, then GPTQ).
        """
        if get_method(cfg.method).transform != "awq":
            return None
        calib_source = calib_source or s.calib
        n = n_samples or s.n_samples
        cfg = _same_search(cfg, n)
        start = self.calib_range(s, calib_source, n)[1]
        key = _key({"model": self.model_label, "cfg": {**cfg.to_dict(), "method": "awq", "extra": {}},
                    "calib": calib_source, "n": n, "seqlen": s.seqlen, "start": start})
        return self.out / "cache" / "records" / f"awq_{key}.safetensors"

    def quantize(self, cfg: QuantizeConfig, s: RunSettings, calib_source: str | None = None,
                 n_samples: int | None = None) -> tuple[QuantizationResult, dict[str, Any]]:
        """Quantize the (restored) model with ``cfg``; AWQ-only searches are cached and replayed."""
        calib_source = calib_source or s.calib
        n = n_samples or s.n_samples
        cfg = _same_search(cfg, n)
        info: dict[str, Any] = {"calib": calib_source, "n_samples": n, "seqlen": s.seqlen}
        record = None
        calib, start = (None, None) if cfg.method == "rtn" else self.calib_range(s, calib_source, n)
        info["calib_start"] = start
        rec_path = self.record_path(cfg, s, calib_source, n)
        if rec_path is not None:
            if self.use_cache and rec_path.is_file():
                record = SearchRecord.load(rec_path)
                info["replayed_record"] = rec_path.name
                info["search_seconds_original"] = json.loads(rec_path.with_suffix(".json").read_text())["seconds"]
        if record is not None and not needs_calibration(get_method(cfg.method), record):
            calib = None  # a replayed AWQ search + RTN needs no calibration pass
        t = time.time()
        res = quantize_model(self.model, calib, cfg, record=record, progress=self.progress)
        info["quantize_seconds"] = time.time() - t
        # Per-block relative output error on the calibration data (None for RTN, which runs no data).
        info["block_rel_error"] = [None if b.rel_error != b.rel_error else b.rel_error for b in res.blocks]
        if record is None and rec_path is not None and res.record is not None and cfg.method == "awq":
            res.record.save(rec_path)
            write_json({"seconds": res.seconds}, rec_path.with_suffix(".json"))
        return res, info

    # -- rows --------------------------------------------------------------------------------------
    def _save_rows(self, table: str) -> None:
        """Merge this process's rows of ``table`` into its cache file under a lock (other processes may
        be adding rows of the same table)."""
        import fcntl

        f = self.out / "cache" / f"rows_{table}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(f.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            disk = json.loads(f.read_text()) if f.is_file() else {}
            merged = {**disk, **self._rows[table]}
            self._rows[table] = merged
            write_json(merged, f)

    def _row_key(self, table: str, label: str, config: dict, s: RunSettings, sources: tuple[str, ...]) -> str:
        settings = asdict(s)
        if settings["loss_samples"] is None:  # keys of rows made before the field existed stay valid
            del settings["loss_samples"]
        return _key({"table": table, "label": label, "config": config, "settings": settings,
                     "model": self.model_label, "eval_sources": sources})

    def cached_row(self, table: str, label: str, config: dict[str, Any], s: RunSettings,
                   eval_sources: tuple[str, ...] | None = None) -> dict[str, Any] | None:
        """The stored row of another experiment, re-read from disk (it may run in another process)."""
        f = self.out / "cache" / f"rows_{table}.json"
        if not f.is_file():
            return None
        return json.loads(f.read_text()).get(self._row_key(table, label, config, s, eval_sources or (s.eval,)))

    def row(self, table: str, label: str, config: dict[str, Any], s: RunSettings,
            fn: Callable[[], dict[str, Any]], eval_sources: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Run one row (``restore`` -> ``fn()`` applies the method -> perplexity), or return it cached.

        ``fn`` returns extra facts (timings, counts); perplexity is measured on each of ``eval_sources``
        (default: ``s.eval``).
        """
        sources = eval_sources or (s.eval,)
        key = self._row_key(table, label, config, s, sources)
        table_rows = self._rows.setdefault(table, {})
        if self.use_cache:
            f = self.out / "cache" / f"rows_{table}.json"
            if key not in table_rows and f.is_file():  # another process may have added it meanwhile
                table_rows.update(json.loads(f.read_text()))
            if key in table_rows:
                return {**table_rows[key], "cached": True}
        if self.cached_only:
            return {"label": label, "config": config, "ppl": None, "not_run": True}
        self.restore()
        t = time.time()
        facts = fn()
        if self.probe is not None:  # measurements on the transformed model, before evaluation
            facts["probe"] = self.probe(self)
        row: dict[str, Any] = {"label": label, "config": config, **facts}
        evals = {src: self.evaluate(s, src) for src in sources}
        if len(sources) == 1:
            row.update(evals[sources[0]])
        else:
            row["eval"] = evals
        row["seconds"] = time.time() - t
        row["peak_rss_mb"] = peak_rss_mb()
        table_rows[key] = row
        if self.use_cache:
            self._save_rows(table)
        self.restore()
        return row


@dataclass
class TableResult:
    """One experiment's results: rows of facts, rendered as markdown + JSON."""

    name: str
    title: str
    paper: str  # the paper's finding, in one or two sentences
    settings: dict
    rows: list[dict]
    markdown_table: str
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def row_seconds(self) -> float:
        """Sum of the rows' own wall times (quantize + evaluate), whether computed now or cached."""
        return float(sum(r.get("seconds", 0.0) or 0.0 for r in self.rows))

    def write(self, out_dir: str | os.PathLike) -> dict[str, str]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        write_json({**asdict(self), "row_seconds": self.row_seconds(), "meta": meta}, out / f"{self.name}.json")
        lines = [f"# {self.title}", "", f"**Paper:** {self.paper}", "", self.markdown_table, ""]
        s = self.settings
        lines.append(f"Settings: {json.dumps(s, default=str)}. Compute time of its rows {self.row_seconds():.0f} s "
                     f"(each row's own time is in the JSON; this run took {self.seconds:.0f} s, cached rows are "
                     "not recomputed).")
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        (out / f"{self.name}.md").write_text("\n".join(lines) + "\n")
        return {"markdown": str(out / f"{self.name}.md"), "json": str(out / f"{self.name}.json")}


def search_seconds(row: dict) -> float | None:
    """A row's quantize/search wall time. For a replayed AWQ search: the time of the search that made it,
    plus, for AWQ+GPTQ, the row's own GPTQ pass (for AWQ alone the row's own time is just the replay)."""
    if row.get("not_run"):
        return None
    if "search_seconds_original" not in row:
        return row.get("quantize_seconds")
    own = row.get("quantize_seconds", 0.0) if row.get("config", {}).get("method") == "awq+gptq" else 0.0
    return row["search_seconds_original"] + own


def fmt_seconds(row: dict) -> str:
    """:func:`search_seconds` for a table cell ("-" for a row not run)."""
    sec = search_seconds(row)
    return "-" if sec is None else f"{sec:.0f}"


def fmt_ppl(x: float | None) -> str:
    if x is None:
        return "-"
    if x != x:
        return "nan"
    if x >= 1e4:
        return f"{x:.3g}"
    return f"{x:.2f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def quant_cfg(method: str, bits: int, group: int, s: RunSettings, awq: AWQConfig | None = None,
              extra: dict | None = None) -> QuantizeConfig:
    # The paper's analyses (and their committed rows) score the scale search on every calibration token:
    # the faster default loss of the MLP groups (loss_tokens) is the subject of benchmarks/results/search_speed.
    awq = dataclasses.replace(awq or AWQConfig(), loss_tokens=None)
    if s.loss_samples is not None:
        awq = dataclasses.replace(awq, loss_samples=s.loss_samples)
    # ... and their GPTQ rows are the paper's baseline, the reference GPTQ (min-max ranges), not the CLI default.
    base = REFERENCE_GPTQ_OPTIONS if get_method(method).quantizer.startswith("gptq") else {}
    return QuantizeConfig(method=method, w_bit=bits, group_size=group, awq=awq,
                          chunk_size=s.chunk_size, extra={**base, **(extra or {})})
