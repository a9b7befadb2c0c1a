"""The stream-memory benchmark tool, end to end on its tiny preset (the 1B preset is the real benchmark)."""
from __future__ import annotations

import json

import pytest

from awq_ext.bench.__main__ import main
from awq_ext.bench.stream_memory import PRESETS, checkpoint_bytes, make_synthetic_model
from awq_ext.errors import AWQInputError


def test_llama_1b_preset_is_the_acceptance_size() -> None:
    shape = PRESETS["llama-1b"]
    assert shape.n_params() >= 1_000_000_000
    assert 4 * shape.n_params() >= 4 * 10**9  # float32 checkpoint of at least 4 GB


def test_moe_preset_is_larger_than_the_dense_one() -> None:
    assert PRESETS["qwen3-moe-1b"].n_params() > PRESETS["llama-1b"].n_params()


@pytest.mark.parametrize("preset", ["tiny", "tiny-moe"])
def test_synthetic_model_is_sharded_float32_and_loads(tmp_path, preset) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    shape = PRESETS[preset]
    out = make_synthetic_model(tmp_path / "m", shape, text="a b c d " * 50, max_shard_size="500KB", progress=False)
    assert (out / "model.safetensors.index.json").is_file()
    assert checkpoint_bytes(out) >= 4 * shape.n_params()
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype="auto")
    assert sum(p.numel() for p in model.parameters()) == shape.n_params()
    assert {p.dtype for p in model.parameters()} == {__import__("torch").float32}
    names = set()
    for f in out.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as fh:
            names |= set(fh.keys())
    if preset == "tiny-moe":  # stored per expert, as Hub checkpoints are; transformers fused them on load
        assert "model.layers.1.mlp.experts.3.down_proj.weight" in names
        assert not any(n.endswith("experts.gate_up_proj") for n in names)


@pytest.mark.slow  # a subprocess of the CLI
def test_stream_memory_tiny_writes_measured_json(tmp_path, capsys) -> None:
    js = tmp_path / "bench.json"
    assert main(["stream-memory", "--preset", "tiny", "--json", str(js)]) == 0
    row = json.loads(js.read_text())["stream_memory"]["rows"][0]
    assert row["preset"] == "tiny" and row["params"] == PRESETS["tiny"].n_params()
    assert row["peak_rss_mb"] > 0 and row["float_checkpoint_mb"] > 0
    assert row["peak_rss_fraction"] == pytest.approx(row["peak_rss_mb"] / row["float_checkpoint_mb"])
    assert row["meets_target"] == (row["peak_rss_fraction"] <= 0.25)
    assert 4.2 < row["output_checkpoint"]["bits_per_quantized_weight"] < 4.4
    assert len(row["block_seconds"]) == PRESETS["tiny"].layers
    assert "RSS / ckpt" in capsys.readouterr().out


def test_unknown_preset_is_refused() -> None:
    from awq_ext.bench.stream_memory import run_stream_memory

    with pytest.raises(AWQInputError, match="unknown preset 'huge'"):
        run_stream_memory("huge")
