"""Report writers: JSON (atomic, environment), text tables, PNG plots, DESIGN §6 target checks."""
from __future__ import annotations

import json

import pytest
import torch

from awq_ext.bench import report


def _rows():
    rows = []
    for m, awq, gptq in ((1, 0.25, 0.6), (16, 0.3, 0.5), (64, 0.6, 0.7), (4096, 9.0, 9.5)):
        dense = {1: 1.0, 16: 1.0, 64: 1.0, 4096: 10.0}[m]
        for meth, ms in (("dense", dense), ("awq", awq), ("gptq_r", gptq)):
            rows.append({"shape": "7b.up", "n": 11008, "k": 4096, "m": m, "method": meth, "dtype": "float16",
                         "median_ms": ms, "speedup_vs_dense": dense / ms})
    return rows


def test_write_json_roundtrip_and_no_temp_left(tmp_path):
    p = report.write_json(tmp_path / "sub" / "r.json", {"a": 1, "dtype": torch.float16, "x": [1.5, None]})
    assert json.loads(p.read_text()) == {"a": 1, "dtype": "torch.float16", "x": [1.5, None]}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]
    with pytest.raises(TypeError):
        report.write_json(tmp_path / "bad.json", {"o": object()})
    assert not list(tmp_path.glob("bad.json*"))  # failed write leaves nothing behind


def test_environment_has_the_provenance_fields():
    env = report.environment(torch.device("cpu"))
    for key in ("gpu", "driver", "torch", "cuda", "commit", "dirty", "date", "kernel_source_sha256", "triton"):
        assert key in env
    assert env["torch"] == torch.__version__ and env["gpu"] is None


def test_kernel_source_hash_changes_with_content(tmp_path):
    assert report.kernel_source_hash(tmp_path) is None
    (tmp_path / "a.cu").write_text("x")
    h1 = report.kernel_source_hash(tmp_path)
    (tmp_path / "a.cu").write_text("y")
    assert report.kernel_source_hash(tmp_path) != h1


def test_format_table_alignment_and_missing_values():
    text = report.format_table([{"a": "x", "b": 1.23456}, {"a": "long", "b": None}],
                               (("a", "name", ""), ("b", "val", ".2f")))
    lines = text.splitlines()
    assert lines[0].split() == ["name", "val"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["x", "1.23"] and lines[3].split() == ["long", "-"]
    assert len({len(line) for line in lines}) == 1


def test_check_targets_pass_and_fail():
    checks = {c["figure"]: c for c in report.check_targets(_rows(), "7b.up")}
    assert checks["awq vs dense, 7b.up, M=1"]["measured"] == pytest.approx(4.0)
    assert checks["awq vs dense, 7b.up, M=1"]["pass"]
    assert checks["awq vs dense, 7b.up, M=16"]["measured"] == pytest.approx(1 / 0.3)
    assert checks["awq vs dense, 7b.up, M=64"]["measured"] == pytest.approx(1 / 0.6)
    assert not checks["awq vs dense, 7b.up, M=64"]["pass"]  # 1.67 < 1.8
    assert checks["awq vs dense, worst over all shapes and M"]["measured"] == pytest.approx(10 / 9)
    assert checks["awq vs gptq_r, worst at M<=16"]["measured"] == pytest.approx(0.5 / 0.3)
    assert checks["awq vs torch_int4, worst at M<=64"]["measured"] is None  # not run: not passed
    assert not checks["awq vs torch_int4, worst at M<=64"]["pass"]
    assert report.check_targets([r for r in _rows() if r["method"] != "awq"], "7b.up") == []


def test_plot_speedups_writes_pngs(tmp_path):
    paths = report.plot_speedups(_rows(), tmp_path)
    assert [p.name for p in paths] == ["speedup_7b_up_float16.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 10_000
    assert report.plot_speedups([r for r in _rows() if r["method"] == "dense"], tmp_path / "none") == []
