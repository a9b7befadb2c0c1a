"""`python -m awq_ext.bench` end to end on CPU (small sizes): banner, tables, JSON, plots, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from awq_ext.bench import quant_cost
from awq_ext.bench.__main__ import main
from awq_ext.errors import AWQInputError

# --device cpu everywhere: the CPU path must work (and be tested) on GPU machines too


def test_kernels_mode_cpu(tmp_path, capsys):
    out = tmp_path / "k.json"
    rc = main(["kernels", "--device", "cpu", "--shapes", "256x128", "--m", "1,4", "--warmup", "1", "--iters", "2",
               "--json", str(out), "--plot-dir", str(tmp_path / "plots"), "--nvtx"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "CPU reference path" in text and "x dense" in text and "3.76x" in text
    if not torch.cuda.is_available():
        assert "No CUDA GPU found" in text
    data = json.loads(out.read_text())
    assert data["env"]["torch"] == torch.__version__ and "commit" in data["env"]
    rows = data["kernels"]["rows"]
    assert {(r["m"], r["method"]) for r in rows} >= {(1, "dense"), (4, "dense"), (1, "torch_ref")}
    assert all(r["ok"] for r in rows)
    assert data["kernels"]["ceilings"] is None  # measured on CUDA only
    assert any("ceilings" in n for n in data["notes"])
    assert any("awq skipped" in n for n in data["notes"])
    assert list((tmp_path / "plots").glob("*.png"))


def test_e2e_mode_cpu(tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = main(["e2e", "--device", "cpu", "--prefill", "16", "--batches", "1,2", "--warmup", "1", "--iters", "2", "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())["e2e"]["rows"]
    got = {(r["model"], r["phase"], r["batch"]) for r in rows}
    assert got == {(m, p, b) for m in ("fp16", "w4a16") for p, b in (("prefill", 1), ("decode", 1), ("decode", 2))}
    w4 = {r["phase"]: r for r in rows if r["model"] == "w4a16"}
    fp = {r["phase"]: r for r in rows if r["model"] == "fp16"}
    assert w4["prefill"]["weights_mb"] < fp["prefill"]["weights_mb"]  # packed weights are smaller
    assert all(r["speedup_vs_fp16"] > 0 for r in rows)
    assert "prefill" in capsys.readouterr().out


def test_profile_once_runs_each_case_once(tmp_path):
    out = tmp_path / "p.json"
    assert main(["kernels", "--device", "cpu", "--shapes", "256x128", "--m", "2", "--methods", "dense", "--profile-once",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["iters"] for r in data["kernels"]["rows"]] == [1]
    assert data["kernels"]["ceilings"] is None


def test_bad_input_exits_2_with_a_message(capsys):
    assert main(["kernels", "--shapes", "nonsense"]) == 2
    assert "unknown shape" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["kernels", "--device", "cuda"]) == 2
    assert main(["kernels", "--device", "cpu", "--threads", "0"]) == 2
    assert main(["e2e", "--preset", "llama-99b"]) == 2


def _fake_cli(tmp_path, body: str) -> list[str]:
    script = tmp_path / "fake_cli.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_quant_cost_reads_the_cli_json(tmp_path):
    cli = _fake_cli(tmp_path, """
        import json, sys
        a = sys.argv[1:]
        assert a[:3] == ["quantize", "--method", "awq"], a
        model, out, bits = a[a.index("--model") + 1], a[a.index("--json") + 1], int(a[a.index("--w-bit") + 1])
        blocks = [{"phases": {"scale_search:mlp": 2.0 * bits, "propagate": 1.0}}, {"phases": {"scale_search:mlp": 1.0}}]
        json.dump({"quantize_seconds": 12.5, "ppl": 10.0 + bits, "peak_rss_mb": 321.0, "model": model,
                   "blocks": blocks, "extra": a[a.index("--json") + 2:]}, open(out, "w"))
    """)
    rows, notes = quant_cost.run_quant_cost(["m1", "m2"], "--eval none", cli=cli, log=lambda s: None, bits=(4, 3))
    assert [(r["model"], r["bits"]) for r in rows] == [("m1", 4), ("m1", 3), ("m2", 4), ("m2", 3)] and notes == []
    assert rows[0]["seconds"] == 12.5 and rows[0]["peak_rss_mb"] == 321.0 and rows[1]["ppl"] == 13.0
    assert rows[0]["cli_json"]["extra"] == ["--eval", "none"]
    assert rows[0]["phases"] == {"scale_search:mlp": 9.0, "propagate": 1.0}  # summed over blocks, largest first
    assert rows[0]["wall_s_outside"] > 0 and rows[0]["child_max_rss_mb"] > 0
    prof = quant_cost.profile_rows(rows[:2])
    assert prof == [{"phase": "scale_search:mlp", "m1 w4": 9.0, "m1 w3": 7.0},
                    {"phase": "propagate", "m1 w4": 1.0, "m1 w3": 1.0}]


def test_quant_cost_reports_cli_failure(tmp_path):
    cli = _fake_cli(tmp_path, """
        import sys
        print("model not found: nope", file=sys.stderr)
        sys.exit(3)
    """)
    with pytest.raises(AWQInputError, match="model not found"):
        quant_cost.run_quant_cost(["nope"], cli=cli, log=lambda s: None)
    with pytest.raises(AWQInputError, match="at least one model"):
        quant_cost.run_quant_cost([], cli=cli)


def test_module_entry_point_runs(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-m", "awq_ext.bench", "kernels", "--shapes", "256x128", "--m", "1",
                        "--methods", "dense", "--warmup", "1", "--iters", "2", "--no-ceilings"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "No CUDA GPU found" in p.stdout and "dense" in p.stdout
