"""Visual-reasoning checks: the same (image, question) pairs answered by FP16, RTN and AWQ, side by side.

Input JSON: a list of ``{"image": PATH, "question": TEXT}`` (optional ``"id"``); relative image paths
are resolved against the JSON file's folder. Output: ``answers.json``, ``report.md`` (images linked by
path relative to the report) and ``report.html`` (self-contained: thumbnails embedded as base64 PNG).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from awq_ext.errors import AWQInputError

TEMPLATES = {
    "openflamingo": "<image>Question:{question} Short answer:",
    "llava": "USER: <image>\n{question} ASSISTANT:",
}


@dataclass(frozen=True)
class Question:
    qid: str
    image: Path
    question: str


def load_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    if not path.is_file():
        raise AWQInputError(f"questions file {path} does not exist")
    try:
        items = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AWQInputError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(items, list) or not items:
        raise AWQInputError(f"{path} must hold a non-empty JSON list of {{'image': ..., 'question': ...}}")
    out = []
    for n, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("image"), str) or not isinstance(it.get("question"), str):
            raise AWQInputError(f"{path}: item {n} needs string fields 'image' and 'question'")
        img = Path(it["image"])
        img = img if img.is_absolute() else path.parent / img
        if not img.is_file():
            raise AWQInputError(f"{path}: item {n}: image {img} does not exist")
        out.append(Question(str(it.get("id", n)), img, it["question"]))
    return out


def answer_all(runner, questions: list[Question], template: str, max_new_tokens: int = 32,
               num_beams: int = 1) -> dict[str, str]:
    """Question id -> answer (one prompt at a time: answers do not depend on batch padding)."""
    if "{question}" not in template or template.count("<image>") != 1:
        raise AWQInputError(f"prompt template must contain {{question}} and exactly one <image>: {template!r}")
    out = {}
    for q in questions:
        with Image.open(q.image) as im:
            img = im.convert("RGB")
        text = runner.generate([[img]], [template.format(question=q.question)], max_new_tokens=max_new_tokens,
                               num_beams=num_beams)[0]
        out[q.qid] = text.split("Question:", 1)[0].strip()
    return out


def _thumb_b64(path: Path, size: int = 256) -> str:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_report(questions: list[Question], answers: dict[str, dict[str, str]], out_dir: str | Path,
                 meta: dict) -> dict[str, str]:
    """Write answers.json, report.md, report.html under ``out_dir``; ``answers``: method -> qid -> text."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = list(answers)
    rows = [{"id": q.qid, "image": str(q.image), "question": q.question,
             "answers": {m: answers[m][q.qid] for m in methods}} for q in questions]
    (out_dir / "answers.json").write_text(json.dumps({"meta": meta, "items": rows}, indent=2))
    md = [f"# Visual reasoning: {meta.get('model', '')}", "",
          "Same image and question, answered by each model; quantization touches the language tower only.", "",
          "| image | question | " + " | ".join(m.upper() for m in methods) + " |", "|" + "---|" * (len(methods) + 2)]
    cell = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731 - table-cell escaping
    for q, r in zip(questions, rows):
        rel = os.path.relpath(q.image, out_dir)
        md.append(f"| ![{q.qid}]({rel}) | {cell(q.question)} | " + " | ".join(cell(r['answers'][m]) for m in methods) + " |")
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    h = ["<!doctype html><meta charset='utf-8'><title>Visual reasoning</title>",
         "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:6px;vertical-align:top}"
         "table{border-collapse:collapse}</style>",
         f"<h1>Visual reasoning: {html.escape(str(meta.get('model', '')))}</h1><table>",
         "<tr><th>image</th><th>question</th>" + "".join(f"<th>{html.escape(m.upper())}</th>" for m in methods) + "</tr>"]
    for q, r in zip(questions, rows):
        h.append(f"<tr><td><img src='data:image/png;base64,{_thumb_b64(q.image)}'></td><td>{html.escape(q.question)}</td>"
                 + "".join(f"<td>{html.escape(r['answers'][m])}</td>" for m in methods) + "</tr>")
    h.append("</table>")
    (out_dir / "report.html").write_text("\n".join(h) + "\n")
    return {"json": str(out_dir / "answers.json"), "markdown": str(out_dir / "report.md"),
            "html": str(out_dir / "report.html")}
