"""The CLI end to end on the real offline default model (SmolLM2-135M), with tiny budgets."""
import json
import math

import pytest

from awq_ext.cli import main

pytestmark = pytest.mark.slow

SMALL = ["--n-samples", "2", "--seqlen", "64", "--max-windows", "1", "--eval-seqlen", "128", "--no-progress"]


def test_quantize_save_eval_generate(tmp_path, capsys):
    out, js, rec = tmp_path / "ckpt", tmp_path / "q.json", tmp_path / "rec.safetensors"
    assert main(["quantize", "--method", "awq", "--n-grid", "4", *SMALL, "--output", str(out),
                 "--save-record", str(rec), "--json", str(js)]) == 0
    q = json.loads(js.read_text())
    assert q["method"] == "awq" and q["bits"] == 4 and q["group_size"] == 64
    assert q["calib"]["token_range"][0] >= q["eval"]["token_range"][1]  # disjoint
    assert math.isfinite(q["ppl"]) and q["peak_rss_mb"] > 0 and len(q["blocks"]) == 30
    assert 4.2 < q["checkpoint"]["bits_per_quantized_weight"] < 4.4
    ej = tmp_path / "e.json"
    assert main(["eval", "--model", str(out), "--max-windows", "1", "--eval-seqlen", "128", "--no-progress",
                 "--json", str(ej)]) == 0
    e = json.loads(ej.read_text())
    # packed INT4 (fp16 scales) vs pseudo-quantized float: same model up to scale rounding
    assert abs(e["ppl"] - q["ppl"]) / q["ppl"] < 0.005
    assert main(["generate", "--model", str(out), "--prompt", "def add(a, b):", "--max-new-tokens", "4"]) == 0
    assert "def add(a, b):" in capsys.readouterr().out
    # replaying the saved search needs no calibration and gives the same perplexity
    rj = tmp_path / "r.json"
    assert main(["quantize", "--method", "awq", "--load-record", str(rec), *SMALL, "--json", str(rj)]) == 0
    r = json.loads(rj.read_text())
    assert r["calib"] is None and math.isclose(r["ppl"], q["ppl"], rel_tol=1e-4)


def test_bad_group_size_is_a_clean_error(capsys):
    assert main(["quantize", "--group-size", "128", *SMALL]) == 2
    assert "not divisible by group_size 128" in capsys.readouterr().err


def test_unsupported_bits_is_a_clean_error(capsys):
    assert main(["quantize", "--w-bit", "9", *SMALL]) == 2
    assert "bit width 9" in capsys.readouterr().err


def test_output_needs_four_bits(tmp_path, capsys):
    assert main(["quantize", "--method", "rtn", "--w-bit", "3", *SMALL, "--output", str(tmp_path / "x")]) == 2
    assert "4-bit" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
