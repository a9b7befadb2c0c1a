"""Streaming: a meta skeleton whose blocks are read from disk one at a time gives the in-memory results.

The float model is a synthetic LLaMA written by the benchmark tooling (random weights, float32
safetensors in several shards, a word-level tokenizer); the MoE tests use tiny Mixtral and Qwen3-MoE
models from their transformers configs, saved by ``save_pretrained`` (per-expert tensors in the original
naming, or fused 3-D ones).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from awq_ext.bench.stream_memory import PRESETS, make_synthetic_model
from awq_ext.calibrate import quantize_model
from awq_ext.calibrate.pipeline import quantize_blocks
from awq_ext.config import QuantizeConfig
from awq_ext.data import load_source
from awq_ext.errors import AWQInputError
from awq_ext.eval import perplexity
from awq_ext.eval.layerwise import LayerwisePerplexity, layerwise_perplexity
from awq_ext.io import load_quantized, save_quantized
from awq_ext.io.checkpoint import resolve_save_dtype
from awq_ext.io.stream import StreamingCheckpoint, open_streamed
from awq_ext.models import get_spec
from awq_ext.models.loading import load_model
from awq_ext.nn import replace_linears
from awq_ext.w8a8 import W8A8Config, quantize_w8a8

METHODS = ["rtn", "awq", "gptq", "gptq-r", "awq+gptq"]


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("float") / "synthetic-tiny"
    return make_synthetic_model(out, PRESETS["tiny"], text=load_source("pydoc").calib_text, max_shard_size="300KB",
                                progress=False)


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, PRESETS["tiny"].vocab, (4, 32), generator=torch.Generator().manual_seed(3))


class OneBlockAtATime:
    """Observer asserting that only the block being processed holds real weights, and counting them."""

    def __init__(self, store):
        self.store = store
        self.seen: list[int] = []
        self.max_float_params = 0

    def after_block(self, ctx) -> None:
        assert self.store.materialized_blocks() == [ctx.index]
        assert self.store.model.get_input_embeddings().weight.is_meta  # released after the capture
        self.seen.append(ctx.index)
        real = sum(p.numel() for n, p in self.store.model.named_parameters()
                   if not p.is_meta and n.startswith(self.store.prefix))
        self.max_float_params = max(self.max_float_params, real)


def _stream_to_checkpoint(sm, ids, cfg, out_dir: Path):
    """Quantize the streamed model block by block into a checkpoint at ``out_dir``, the embeddings/head released
    meanwhile, under a OneBlockAtATime guard: (guard, quantization result, checkpoint path)."""
    guard = OneBlockAtATime(sm.store)
    writer = StreamingCheckpoint(out_dir, sm.model, get_spec(sm.model), resolve_save_dtype(sm.model, None),
                                 max_shard_size="100KB")
    sm.store.release_globals_after_capture = True
    sres = quantize_blocks(sm.model, ids, cfg, progress=False, source=sm.store, observers=[guard, writer],
                           keep_codes=False)
    return guard, sres, writer.commit(sm.tokenizer, reload=sm.store)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name.endswith((".safetensors", ".json"))
            and p.name.startswith("model")}


@pytest.mark.parametrize("method", METHODS)
def test_streamed_checkpoint_is_byte_identical(float_dir: Path, ids, tmp_path: Path, method: str) -> None:
    cfg = QuantizeConfig(method=method, group_size=64, device="cpu")
    model, tok = load_model(str(float_dir))
    res = quantize_model(model, ids, cfg, progress=False)
    replace_linears(model, res.quantized)
    ref = save_quantized(model, tmp_path / "memory", tokenizer=tok, max_shard_size="100KB")

    sm = open_streamed(str(float_dir), head_only=True)  # final norm and head are read at the end
    assert sm.store.materialized_blocks() == []  # the skeleton starts with no block weights
    assert sm.model.lm_head.weight.is_meta and not sm.model.get_input_embeddings().weight.is_meta
    one_block = sum(p.numel() for p in sm.store.blocks[0].parameters())  # meta tensors know their size
    guard, sres, out = _stream_to_checkpoint(sm, ids, cfg, tmp_path / "stream")
    assert sm.model.get_input_embeddings().weight.is_meta  # already written: never read back

    assert guard.seen == list(range(PRESETS["tiny"].layers))
    assert 0 < guard.max_float_params <= one_block
    assert sm.store.materialized_blocks() == []
    assert sres.quantized == {}  # codes went to the shards, not into memory
    assert [str(b.rel_error) for b in sres.blocks] == [str(b.rel_error) for b in res.blocks]  # nan for rtn
    files, ref_files = _files(out), _files(ref)
    assert len([f for f in files if f.endswith(".safetensors")]) > 1  # really sharded
    assert files == ref_files  # every shard, byte for byte, and the index
    cfg_s, cfg_m = (json.loads((d / "config.json").read_text()) for d in (out, ref))
    assert cfg_s["quantization_config"] == cfg_m["quantization_config"]
    assert cfg_s["use_cache"] is True and cfg_s["quantization_config"]["format"] == "gemm"
    loaded = load_quantized(out, dtype=torch.float32)  # the loader reads and validates the sharded output
    with torch.no_grad():
        assert torch.isfinite(loaded(ids[:1]).logits).all()


def test_streamed_w8a8_matches_in_memory(float_dir: Path, ids) -> None:
    cfg = W8A8Config(method="aweq", act_quant="static", device="cpu")
    model, _ = load_model(str(float_dir))
    res = quantize_w8a8(model, ids, cfg, progress=False)
    expected = model.state_dict()

    sm = open_streamed(str(float_dir))
    got: dict[str, torch.Tensor] = {}

    class Keep:
        def after_block(self, ctx) -> None:
            got.update({ctx.prefix + k: v.clone() for k, v in ctx.block.state_dict().items()})

    sres = quantize_w8a8(sm.model, ids, cfg, progress=False, source=sm.store, observers=[Keep()])
    blocks = {k: v for k, v in expected.items() if k.startswith("model.layers.")}
    assert set(got) == set(blocks)
    assert all(torch.equal(got[k], blocks[k]) for k in blocks)
    assert set(sres.scales) == set(res.scales) and all(torch.equal(sres.scales[k], res.scales[k]) for k in res.scales)


def test_layerwise_perplexity_matches_the_full_forward(float_dir: Path) -> None:
    windows = torch.randint(0, PRESETS["tiny"].vocab, (3, 48), generator=torch.Generator().manual_seed(5))
    model, _ = load_model(str(float_dir))
    full = perplexity(model, windows, progress=False)
    sm = open_streamed(str(float_dir))
    streamed, run = layerwise_perplexity(sm.model, get_spec(sm.model), windows, device=torch.device("cpu"),
                                         source=sm.store, progress=False)
    assert sm.store.materialized_blocks() == []
    assert run.peak_rss_mb > 0
    assert streamed.n_tokens == full.n_tokens
    assert streamed.window_nll == pytest.approx(full.window_nll, rel=1e-6)
    # In memory, the same observer over the quantized blocks gives the quantized model's perplexity.
    cfg = QuantizeConfig(method="rtn", group_size=64, device="cpu")
    ev = LayerwisePerplexity(model, get_spec(model), windows)
    quantize_blocks(model, None, cfg, progress=False, observers=[ev])
    assert ev.result(False).window_nll == pytest.approx(perplexity(model, windows, progress=False).window_nll, rel=1e-6)


def test_gguf_blocks_are_bit_identical_to_from_pretrained() -> None:
    pytest.importorskip("gguf")
    try:
        model, _ = load_model(None)
    except AWQInputError as e:
        pytest.skip(str(e))
    sm = open_streamed(None)
    assert sm.source_kind == "gguf"
    ref = model.state_dict()
    for name, t in sm.model.state_dict().items():
        if not name.startswith("model.layers."):
            assert torch.equal(t, ref[name]), name
    block = sm.store.load_block(5, torch.device("cpu"))
    for name, t in block.state_dict().items():
        assert torch.equal(t, ref[f"model.layers.5.{name}"]), name
    sm.store.release_block(5)
    assert sm.store.materialized_blocks() == []


def test_stream_refusals(float_dir: Path, tmp_path: Path) -> None:
    from awq_ext.jobs import JobOptions
    from awq_ext.stream_job import run_stream_job

    with pytest.raises(AWQInputError, match="--tasks runs lm-eval on the whole model"):
        run_stream_job(JobOptions(model=str(float_dir), stream=True, tasks=("piqa",)))
    with pytest.raises(AWQInputError, match="--stream reads a local directory or .gguf file"):
        open_streamed("some/hub-name")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((float_dir / "config.json").read_text())
    with pytest.raises(AWQInputError, match="neither model.safetensors nor model.safetensors.index.json"):
        open_streamed(str(empty))


def test_transformers_awq_loader_reads_a_streamed_checkpoint(float_dir: Path, ids, tmp_path: Path) -> None:
    """transformers' own AWQ path (through gptqmodel) loads what the streaming path writes."""
    pytest.importorskip("gptqmodel")
    from transformers import AutoModelForCausalLM

    sm = open_streamed(str(float_dir))
    writer = StreamingCheckpoint(tmp_path / "ck", sm.model, get_spec(sm.model), torch.float16)
    quantize_blocks(sm.model, ids, QuantizeConfig(method="awq", group_size=64, device="cpu"), progress=False,
                    source=sm.store, observers=[writer], keep_codes=False)
    out = writer.commit(sm.tokenizer)
    ours = load_quantized(out, dtype=torch.float16)
    theirs = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float16, device_map="cpu")
    with torch.no_grad():
        a, b = ours(ids[:1]).logits.float(), theirs(ids[:1]).logits.float()
    assert torch.allclose(a, b, atol=2e-2, rtol=2e-2)


def test_cli_stream_quantize_eval_compare(float_dir: Path, tmp_path: Path) -> None:
    from awq_ext.cli import main

    small = ["--n-samples", "2", "--seqlen", "32", "--max-windows", "2", "--eval-seqlen", "64", "--no-progress",
             "--model", str(float_dir), "--n-grid", "4", "--device", "cpu"]
    js, sj = tmp_path / "mem.json", tmp_path / "stream.json"
    assert main(["quantize", "--method", "awq", *small, "--output", str(tmp_path / "mem"), "--json", str(js)]) == 0
    assert main(["quantize", "--method", "awq", "--stream", *small, "--output", str(tmp_path / "st"),
                 "--json", str(sj)]) == 0
    mem, st = json.loads(js.read_text()), json.loads(sj.read_text())
    assert st["stream"] == {"source": "safetensors"}
    for r in (mem, st):
        assert r["peak_rss_mb"] > 0 and "peak_device_mb" in r
    assert st["ppl"] == pytest.approx(mem["ppl"], rel=1e-6)  # layer-by-layer == full forward
    assert [b["rel_error"] for b in st["blocks"]] == [b["rel_error"] for b in mem["blocks"]]
    assert _files(tmp_path / "st") == _files(tmp_path / "mem")

    fj, cj = tmp_path / "float.json", tmp_path / "cmp.json"
    ev = ["--max-windows", "2", "--eval-seqlen", "64", "--no-progress", "--model", str(float_dir)]
    assert main(["eval", "--stream", *ev, "--json", str(fj)]) == 0
    assert main(["eval", *ev, "--json", str(tmp_path / "float_mem.json")]) == 0
    f_st, f_mem = json.loads(fj.read_text()), json.loads((tmp_path / "float_mem.json").read_text())
    assert f_st["ppl"] == pytest.approx(f_mem["ppl"], rel=1e-6) and "peak_device_mb" in f_st
    assert main(["compare", "--stream", *small, "--methods", "fp16", "rtn", "aweq", "--w-bits", "4",
                 "--json", str(cj)]) == 0
    rows = json.loads(cj.read_text())["rows"]
    assert [r["method"] for r in rows] == ["fp16", "rtn", "aweq"]
    assert rows[0]["ppl"] == pytest.approx(f_mem["ppl"], rel=1e-6)
    assert all(math.isfinite(r["ppl"]) for r in rows)


def test_casting_read_equals_a_whole_cast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that casts goes through the file a few rows at a time: the result is the whole tensor's cast."""
    from safetensors.torch import save_file

    from awq_ext.io import stream

    gen = torch.Generator().manual_seed(0)
    tensors = {"emb": torch.randn(37, 24, generator=gen), "norm": torch.rand(24, generator=gen),
               "ids": torch.arange(5)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(stream, "_CAST_BYTES", 5 * 24 * 4)  # 5 rows per step: 8 steps, the last one short
    src = stream.SafetensorsSource(tmp_path)
    got = {n: src.read(n, torch.float16) for n in ("emb", "norm", "ids")}
    assert torch.equal(got["emb"], tensors["emb"].half()) and torch.equal(got["norm"], tensors["norm"].half())
    assert torch.equal(got["ids"], tensors["ids"])  # integers are never cast
    assert torch.equal(src.read("emb"), tensors["emb"])


# --- MoE: experts fused in transformers 5, stored per expert (save_pretrained's original layout) or fused ---

MOE_LAYOUTS = {  # name -> (model_type, save_original_format)
    "mixtral": ("mixtral", True),  # block_sparse_moe.experts.{e}.w1/w2/w3
    "qwen3_moe": ("qwen3_moe", True),  # mlp.experts.{e}.gate_proj/up_proj/down_proj; layer 0 dense
    "qwen3_moe-fused": ("qwen3_moe", False),  # mlp.experts.gate_up_proj [E, 2I, H], down_proj [E, H, I]
    "qwen2_moe": ("qwen2_moe", True),  # + shared expert and its gate
    "deepseek_v3": ("deepseek_v3", True),  # MLA attention, shared experts, router bias; layer 0 dense
}


@pytest.fixture(scope="module")
def moe_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from awq_ext.bench.stream_memory import word_tokenizer
    from tests.models.tiny_archs import VOCAB, tiny_model

    tok = word_tokenizer(load_source("pydoc").calib_text, VOCAB)
    root = tmp_path_factory.mktemp("moe")
    out = {}
    for name, (model_type, original) in MOE_LAYOUTS.items():
        d = root / name
        tiny_model(model_type).save_pretrained(d, max_shard_size="100KB", save_original_format=original)
        tok.save_pretrained(str(d))
        out[name] = d
    return out


def _tensors(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _stored_names(d: Path) -> set[str]:
    return set(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"])


def test_moe_fixtures_store_the_layouts_they_claim(moe_dirs: dict[str, Path]) -> None:
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in _stored_names(moe_dirs["mixtral"])
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in _stored_names(moe_dirs["qwen3_moe"])
    fused = _stored_names(moe_dirs["qwen3_moe-fused"])
    assert "model.layers.1.mlp.experts.gate_up_proj" in fused and not any(".experts.0." in n for n in fused)


@pytest.mark.parametrize("method", ["awq", "rtn"])
@pytest.mark.parametrize("layout", list(MOE_LAYOUTS))
def test_streamed_moe_checkpoint_is_byte_identical(moe_dirs: dict[str, Path], tmp_path: Path, layout: str,
                                                   method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from awq_ext.config import AWQConfig
    from awq_ext.io import stream
    from tests.models.tiny_archs import calib_ids

    src = moe_dirs[layout]
    ids = calib_ids(n=4, seqlen=32)
    cfg = QuantizeConfig(method=method, group_size=64, device="cpu", awq=AWQConfig(n_grid=6, clip_n_grid=6))
    model, tok = load_model(str(src))
    res = quantize_model(model, ids, cfg, progress=False)
    replace_linears(model, res.quantized)
    ref = save_quantized(model, tmp_path / "memory", tokenizer=tok, max_shard_size="100KB")

    reads: list[tuple[str, tuple]] = []
    read = stream.SafetensorsSource.read

    def spy(self, name: str, dtype: torch.dtype | None = None, index: tuple = ()) -> torch.Tensor:
        reads.append((name, index))
        return read(self, name, dtype, index)

    monkeypatch.setattr(stream.SafetensorsSource, "read", spy)
    sm = open_streamed(str(src), head_only=True)
    experts = sm.store.blocks[1].mlp.experts
    assert experts[0].gate_proj.weight.is_meta  # unfused on the meta device, before any block is read
    largest_block = max(sum(p.numel() for p in b.parameters()) for b in sm.store.blocks)  # meta tensors know it
    guard, sres, out = _stream_to_checkpoint(sm, ids, cfg, tmp_path / "stream")

    assert guard.seen == [0, 1] and sm.store.materialized_blocks() == []
    assert 0 < guard.max_float_params <= largest_block
    assert [str(b.rel_error) for b in sres.blocks] == [str(b.rel_error) for b in res.blocks]
    fused_reads = [index for name, index in reads if name.endswith((".experts.gate_up_proj", ".experts.down_proj"))]
    if layout.endswith("fused"):  # each expert's slice alone, never the whole fused tensor
        assert fused_reads and all(index for index in fused_reads)
    else:
        assert fused_reads == []
    got, want = _tensors(out), _tensors(ref)
    assert set(got) == set(want) and any(".mlp.experts.3.down_proj.qweight" in n for n in got)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    assert _files(out) == _files(ref)  # every shard, byte for byte, and the index


def test_unmatched_expert_tensors_are_refused_by_name(moe_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Expert tensors under names neither the model nor transformers' reverse mapping knows: a clear error."""
    import shutil

    from safetensors.torch import load_file, save_file

    d = tmp_path / "renamed"
    shutil.copytree(moe_dirs["qwen3_moe"], d)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(str(d / shard))
        save_file({_rename(n): t for n, t in tensors.items()}, str(d / shard), metadata={"format": "pt"})
    index["weight_map"] = {_rename(n): f for n, f in index["weight_map"].items()}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    # Refused when the skeleton is opened, before any block is read or calibrated.
    with pytest.raises(AWQInputError, match=r"4 tensor\(s\) \['model.layers.1.mlp.experts.0.gate_proj.weight', "
                                            r"'model.layers.1.mlp.experts.1.gate_proj.weight'.*save_pretrained.*"
                                            r"matched to nothing.*experts.0.w_gate.weight"):
        open_streamed(str(d))


def _rename(name: str) -> str:
    return name.replace(".gate_proj.", ".w_gate.") if ".experts." in name else name


def test_spec_file_architecture_streams_to_the_in_memory_checkpoint(tmp_path: Path, capsys) -> None:
    """--spec with --stream: a model_type the registry lacks (SmolLM3, LLaMA-shaped), quantized from a spec file."""
    from awq_ext.bench.stream_memory import word_tokenizer
    from awq_ext.cli import main
    from awq_ext.models import SPECS
    from tests.models.test_spec_file import LLAMA_SPEC
    from tests.models.tiny_archs import VOCAB, tiny_model

    assert "smollm3" not in SPECS
    src = tmp_path / "smollm3"
    tiny_model("smollm3").save_pretrained(src, max_shard_size="100KB")
    word_tokenizer(load_source("pydoc").calib_text, VOCAB).save_pretrained(str(src))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**LLAMA_SPEC, "name": "smollm3", "model_types": ["smollm3"]}))
    small = ["--n-samples", "2", "--seqlen", "32", "--max-windows", "2", "--eval-seqlen", "64", "--no-progress",
             "--model", str(src), "--n-grid", "4", "--device", "cpu", "--method", "awq", "--max-shard-size", "100KB"]
    assert main(["quantize", "--stream", *small]) != 0
    assert "no adapter for model_type 'smollm3'" in capsys.readouterr().err
    js, sj = tmp_path / "mem.json", tmp_path / "stream.json"
    assert main(["quantize", *small, "--spec", str(spec), "--output", str(tmp_path / "mem"), "--json", str(js)]) == 0
    assert main(["quantize", "--stream", *small, "--spec", str(spec), "--output", str(tmp_path / "st"),
                 "--json", str(sj)]) == 0
    mem, st = json.loads(js.read_text()), json.loads(sj.read_text())
    assert st["spec"] == mem["spec"] == str(spec)
    assert st["ppl"] == pytest.approx(mem["ppl"], rel=1e-6)
    assert [b["rel_error"] for b in st["blocks"]] == [b["rel_error"] for b in mem["blocks"]]
    assert all("alpha" in g for b in st["blocks"] for g in b["groups"])  # the spec file's groups were searched
    assert _files(tmp_path / "st") == _files(tmp_path / "mem")
    ev = ["--max-windows", "2", "--eval-seqlen", "64", "--no-progress", "--model", str(src)]
    fj, fm = tmp_path / "float.json", tmp_path / "float_mem.json"
    assert main(["eval", "--stream", *ev, "--spec", str(spec), "--json", str(fj)]) == 0  # the float model, block by block
    assert main(["eval", *ev, "--json", str(fm)]) == 0
    assert json.loads(fj.read_text())["ppl"] == pytest.approx(json.loads(fm.read_text())["ppl"], rel=1e-6)
