"""A second offline text, of another domain than pydoc, for Figure 7's calibration/eval domain swap.

``licenses``: the license texts shipped inside the installed Python distributions (``importlib.metadata``
files named LICENSE / LICENCE / COPYING / NOTICE), i.e. legal English rather than Python documentation.
Built deterministically: distributions sorted by name, files by path; paragraphs (blank-line separated,
whitespace-normalised) are kept only the first time they occur, so the many copies of the MIT / BSD /
Apache boilerplate appear once and evaluation windows do not reappear verbatim in calibration blocks.
The exact text depends on what is installed; its SHA-256 and the list of sources go into the results.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

from awq_ext.errors import AWQInputError

_NAMES = ("LICENSE", "LICENCE", "COPYING", "NOTICE")
_NOT_TEXT = (".PY", ".PYC", ".PYI", ".YAML", ".YML", ".JSON", ".HTML", ".SO")


@dataclass
class BuiltText:
    path: str
    sha256: str
    chars: int
    files: list[str]


def _license_files() -> list[tuple[str, str]]:
    out = []
    for dist in sorted(md.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        for f in sorted(dist.files or [], key=str):
            up = f.name.upper()
            # A license file: named LICENSE*, COPYING*..., or inside a licenses/ folder (e.g. pandas'
            # LICENSES/NUMPY_LICENSE) - not any file whose name mentions one (lm-eval's *_license.yaml tasks).
            named = up.startswith(_NAMES) or any(p.upper() in ("LICENSES", "LICENCES") for p in f.parts[:-1])
            if named and any(k in up for k in _NAMES) and not up.endswith(_NOT_TEXT):
                try:
                    text = f.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError, ValueError):
                    continue  # unreadable or binary file named like a license: not text we can use
                if text and text.strip():
                    out.append((f"{dist.metadata['Name']}:{f}", text))
    return out


def build_license_text(path: str | Path, min_chars: int = 100_000) -> BuiltText:
    """Write the deduplicated license corpus to ``path`` (UTF-8) and describe it."""
    seen: set[str] = set()
    paras: list[str] = []
    used: list[str] = []
    for src, text in _license_files():
        kept = 0
        for p in re.split(r"\n\s*\n", text):
            norm = " ".join(p.split())
            if len(norm) < 20 or norm in seen:
                continue
            seen.add(norm)
            paras.append(p.strip("\n"))
            kept += 1
        if kept:
            used.append(src)
    corpus = "\n\n".join(paras) + "\n"
    if len(corpus) < min_chars:
        raise AWQInputError(
            f"only {len(corpus)} characters of license text found in the installed packages (need {min_chars}); "
            "pass another local text file as the second source"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(corpus, encoding="utf-8")
    return BuiltText(str(path), hashlib.sha256(corpus.encode()).hexdigest(), len(corpus), used)
