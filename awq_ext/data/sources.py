"""Text sources for calibration and evaluation.

``pydoc`` (offline default): Python's own ``pydoc_data.topics`` joined as Protocol P prescribes.
A path: any local UTF-8 text file. ``wikitext2`` / ``pileval``: Hugging Face datasets, only when the hub
is reachable (a clear :class:`OfflineError` otherwise).

A source yields one text for evaluation and one for calibration. For hub datasets these are distinct
splits; for single-text sources they are the same text, and :mod:`awq_ext.data.tokens` keeps the
calibration tokens after the evaluation windows so the two never share a token.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from awq_ext.errors import AWQInputError, OfflineError

# name -> (dataset path, config, eval split, calib split, text field)
HF_SOURCES: dict[str, tuple[str, str | None, str, str, str]] = {
    "wikitext2": ("wikitext", "wikitext-2-raw-v1", "test", "train", "text"),
    "pileval": ("mit-han-lab/pile-val-backup", None, "validation", "validation", "text"),
}


@dataclass(frozen=True)
class TextSource:
    name: str
    eval_text: str
    calib_text: str
    shared: bool  # eval and calib come from the same text: calibration must skip the eval tokens


def pydoc_text() -> str:
    import pydoc_data.topics as topics

    return "\n\n".join(topics.topics[k] for k in sorted(topics.topics))


def _hf_text(name: str) -> TextSource:
    path, config, eval_split, calib_split, field = HF_SOURCES[name]
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError as e:
        raise OfflineError(f"text source {name!r} needs the `datasets` package: pip install datasets") from e
    from datasets import load_dataset

    try:
        ev = load_dataset(path, config, split=eval_split)
        ca = ev if calib_split == eval_split else load_dataset(path, config, split=calib_split)
    except Exception as e:  # datasets raises many connection error types; all mean "not reachable"
        raise OfflineError(
            f"could not fetch dataset {path!r} for text source {name!r} ({type(e).__name__}: {e}); "
            "offline, use --eval pydoc / --calib pydoc or a local text file"
        ) from e
    ev_text = "\n\n".join(ev[field])
    ca_text = ev_text if ca is ev else "\n\n".join(ca[field])
    return TextSource(name, ev_text, ca_text, shared=ca is ev)


def load_source(name: str) -> TextSource:
    """Resolve ``pydoc``, a text-file path, or a hub dataset name."""
    if name == "pydoc":
        t = pydoc_text()
        return TextSource("pydoc", t, t, shared=True)
    p = Path(name).expanduser()
    if p.is_file():
        try:
            t = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise AWQInputError(f"text file {p} is not UTF-8: {e}") from e
        if not t.strip():
            raise AWQInputError(f"text file {p} is empty")
        return TextSource(str(p), t, t, shared=True)
    if name in HF_SOURCES:
        return _hf_text(name)
    raise AWQInputError(
        f"unknown text source {name!r}: use 'pydoc', a path to a text file, or one of {', '.join(HF_SOURCES)}"
    )
