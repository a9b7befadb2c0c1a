"""Checkpoints: save -> load identity, an independent reader, refusals and atomic saves.

Tiny models are built from transformers configs (never downloaded).
"""
from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

import awq_ext.io.checkpoint as ckmod
import awq_ext.io.shards as shards
from awq_ext.errors import AWQInputError, CheckpointError
from awq_ext.io import (
    build_quant_config,
    checkpoint_size_report,
    load_quantized,
    model_size_report,
    read_quant_config,
    save_quantized,
)
from awq_ext.nn import WQLinear, replace_linears
from awq_ext.pack import to_interchange_precision
from awq_ext.quant import QuantizedWeight, QuantSpec, quantize_weight


# ----------------------------------------------------------------------------- helpers
def _llama(hidden: int = 64, tie: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
    )
    return AutoModelForCausalLM.from_config(cfg).eval()


def _opt(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = OPTConfig(
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=256,
        word_embed_proj_dim=64,
        max_position_embeddings=128,
    )
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # OPT initializes biases to zero; make them matter
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.02)
    return model


def _act_order_qw(w: torch.Tensor, spec: QuantSpec, seed: int) -> QuantizedWeight:
    """An act-order style quantization: group j = j-th run of G rows in a random order."""
    n, k = w.shape
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(k, generator=gen)
    g_idx = torch.empty(k, dtype=torch.int32)
    g_idx[perm] = (torch.arange(k) // spec.group_size).to(torch.int32)
    # Quantize the permuted weight group-wise, then map the codes back to the original rows.
    q_p, scales, zeros = quantize_weight(w[:, perm], spec)
    q = torch.empty_like(q_p)
    q[:, perm] = q_p
    return QuantizedWeight(q, scales, zeros, spec, g_idx)


def _quantize(model: nn.Module, spec: QuantSpec, skip: tuple[str, ...] = ("lm_head",), act_order: bool = False):
    """``(quantized model, pseudo-quantized reference, {name: QuantizedWeight})``.

    The reference keeps nn.Linear modules holding the dequantized weights (fp16-rounded scales,
    which is what the interchange layout stores).
    """
    quantized: dict[str, QuantizedWeight] = {}
    for i, (name, m) in enumerate(model.named_modules()):
        if isinstance(m, nn.Linear) and name not in skip:
            w = m.weight.detach()
            qw = _act_order_qw(w, spec, i) if act_order else QuantizedWeight(*quantize_weight(w, spec, name), spec)
            quantized[name] = qw
    reference = copy.deepcopy(model)
    for name, qw in quantized.items():
        # A new Parameter, not copy_: writing through a tied head would also change the embedding.
        w = to_interchange_precision(qw).dequantize()
        reference.get_submodule(name).weight = nn.Parameter(w, requires_grad=False)
    replace_linears(model, quantized)
    return model, reference, quantized


def _tokens() -> torch.Tensor:
    return torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "hello": 1, "world": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    """A tied Llama, W4 g64, saved once; tests that corrupt it work on copies."""
    model, reference, quantized = _quantize(_llama(hidden=128), QuantSpec(4, 64))
    out = tmp_path_factory.mktemp("ckpt") / "llama-w4g64"
    save_quantized(model, out)
    return out, model, reference, quantized


def _copy(src: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize(
    "make,spec,act_order,shard",
    [
        (lambda: _llama(hidden=64, tie=True), QuantSpec(4, 32), False, None),
        (lambda: _llama(hidden=128, tie=False), QuantSpec(4, 128), False, 30_000),
        (lambda: _llama(hidden=128, tie=True), QuantSpec(4, 64, zero_point=False), False, None),
        (lambda: _llama(hidden=128, tie=True), QuantSpec(4, 64), True, 50_000),
        (_opt, QuantSpec(4, 64), False, None),
    ],
    ids=["llama-tied-g32", "llama-untied-g128-sharded", "llama-sym-g64", "llama-act-order-sharded", "opt-g64"],
)
def test_save_load_identical_tensors_and_logits(tmp_path: Path, make, spec, act_order, shard) -> None:
    model, reference, quantized = _quantize(make(), spec, act_order=act_order)
    kwargs = {"max_shard_size": shard} if shard else {}
    # float32 storage: this test asserts an exact round trip of every tensor (the float16 default is
    # covered by test_default_save_dtype_is_float16_and_config_keys)
    out = save_quantized(model, tmp_path / "ckpt", save_dtype=torch.float32, **kwargs)
    if shard:
        assert (out / "model.safetensors.index.json").is_file() and not (out / "model.safetensors").exists()
    loaded = load_quantized(out)

    before, after = model.state_dict(), loaded.state_dict()
    assert list(before) == list(after)
    for key in before:
        assert before[key].dtype == after[key].dtype, key
        assert torch.equal(before[key], after[key]), key
    assert all(isinstance(loaded.get_submodule(n), WQLinear) for n in quantized)
    assert isinstance(loaded.lm_head, nn.Linear) and not isinstance(loaded.lm_head, WQLinear)
    if loaded.config.tie_word_embeddings:
        assert loaded.lm_head.weight is loaded.get_input_embeddings().weight

    x = _tokens()
    with torch.no_grad():
        ref_logits = reference(x).logits
        assert torch.equal(model(x).logits, ref_logits)  # real-quantized == pseudo-quantized
        assert torch.equal(loaded(x).logits, ref_logits)  # ... and after save -> load

    qc = read_quant_config(out)
    assert qc["quant_method"] == "awq" and qc["version"] == "gemm" and qc["bits"] == 4
    assert qc["group_size"] == spec.group_size and qc["zero_point"] == spec.zero_point
    assert qc["modules_to_not_convert"] == ["lm_head"]
    assert qc["desc_act"] is act_order


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    hidden=st.sampled_from([64, 128, 256]),
    group_size=st.sampled_from([32, 64, 128]),
    zero_point=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_save_load_property(tmp_path_factory: pytest.TempPathFactory, hidden, group_size, zero_point, seed) -> None:
    if hidden % group_size:
        group_size = 32
    model, _, _ = _quantize(_llama(hidden=hidden, seed=seed), QuantSpec(4, group_size, zero_point))
    out = save_quantized(model, tmp_path_factory.mktemp("prop") / "ckpt", save_dtype="float32")  # exact round trip
    loaded = load_quantized(out)
    for key, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], t), key


def test_load_casts_unquantized_tensors_only(saved) -> None:
    out, _, _, _ = saved
    loaded = load_quantized(out, dtype=torch.bfloat16)
    assert loaded.get_input_embeddings().weight.dtype == torch.bfloat16
    q = loaded.model.layers[0].self_attn.q_proj
    assert q.scales.dtype == torch.float16 and q.qweight.dtype == torch.int32
    with torch.no_grad():
        assert loaded(_tokens()).logits.dtype == torch.bfloat16


def test_tokenizer_and_extra_config_are_saved(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model, _, _ = _quantize(_llama(), QuantSpec(4, 32))
    out = save_quantized(model, tmp_path / "ckpt", tokenizer=_tiny_tokenizer(), quant_config={"calib": "pydoc"})
    assert AutoTokenizer.from_pretrained(out)("hello world")["input_ids"] == [1, 2]
    assert read_quant_config(out)["calib"] == "pydoc"
    with pytest.raises(AWQInputError, match=r"quant_config\['group_size'\] = 64 disagrees"):
        save_quantized(model, tmp_path / "other", quant_config={"group_size": 64})


def test_quantized_head_unties_embeddings(tmp_path: Path) -> None:
    model, reference, _ = _quantize(_llama(tie=True), QuantSpec(4, 32), skip=())
    out = save_quantized(model, tmp_path / "ckpt", save_dtype="float32")  # exact logits below
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False and cfg["quantization_config"]["modules_to_not_convert"] is None
    loaded = load_quantized(out)
    assert isinstance(loaded.lm_head, WQLinear)
    with torch.no_grad():
        assert torch.equal(loaded(_tokens()).logits, reference(_tokens()).logits)


def test_mixed_settings_are_refused() -> None:
    model, _, quantized = _quantize(_llama(), QuantSpec(4, 32))
    name = next(iter(quantized))
    qw = quantized[name]
    spec64 = QuantSpec(4, 64)
    qw64 = QuantizedWeight(*quantize_weight(qw.dequantize(), spec64), spec64)
    model.set_submodule(name, WQLinear.from_quantized(qw64))
    with pytest.raises(AWQInputError, match="disagree on group_size"):
        build_quant_config(model)
    with pytest.raises(AWQInputError, match="no WQLinear modules"):
        build_quant_config(_llama())


# ----------------------------------------------------------------------------- independent reader
def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Minimal safetensors reader: u64 little-endian header size, JSON header, raw little-endian data."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    types = {"I32": "<i4", "F16": "<f2", "F32": "<f4", "BF16": None, "I64": "<i8"}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        if types[meta["dtype"]] is None:
            continue  # not needed by this reader
        out[name] = np.frombuffer(raw[base + start : base + end], dtype=types[meta["dtype"]]).reshape(meta["shape"])
    return out


def _independent_dequantize(ckpt: Path) -> dict[str, np.ndarray]:
    """Decode every quantized linear from DESIGN §2 alone: float32 weights [N, K] by module name."""
    config = json.loads((ckpt / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["bits"] == 4 and qc["version"] == "gemm"
    tensors: dict[str, np.ndarray] = {}
    for f in sorted(ckpt.glob("*.safetensors")):
        tensors.update(_read_safetensors(f))
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i of a word holds column order[i] of its 8 columns

    def unpack(words: np.ndarray) -> np.ndarray:  # int32 [R, C/8] -> uint8 [R, C]
        u = words.view(np.uint32)
        rows, ncols = u.shape
        out = np.empty((rows, ncols * 8), dtype=np.uint8)
        for i in range(8):
            nib = (u >> np.uint32(4 * i)) & np.uint32(0xF)
            out[:, order[i] :: 8] = nib  # column 8j + order[i] for every word j
        return out

    weights = {}
    for name in [k[: -len(".qweight")] for k in tensors if k.endswith(".qweight")]:
        q = unpack(tensors[name + ".qweight"]).astype(np.int32)  # [K, N]
        z = unpack(tensors[name + ".qzeros"]).astype(np.int32)  # [K/G, N]
        s = tensors[name + ".scales"].astype(np.float32)  # [K/G, N]
        k = q.shape[0]
        g = k if qc["group_size"] == -1 else qc["group_size"]
        rows = tensors[name + ".g_idx"].astype(np.int64) if name + ".g_idx" in tensors else np.arange(k) // g
        weights[name] = ((q - z[rows]).astype(np.float32) * s[rows]).T  # [N, K]
    return weights


@pytest.mark.parametrize("act_order,zero_point,shard", [(False, True, None), (True, False, 40_000)])
def test_independent_reader_decodes_the_same_weights(tmp_path: Path, act_order, zero_point, shard) -> None:
    model, _, quantized = _quantize(_llama(hidden=128), QuantSpec(4, 64, zero_point), act_order=act_order)
    kwargs = {"max_shard_size": shard} if shard else {}
    out = save_quantized(model, tmp_path / "ckpt", **kwargs)
    decoded = _independent_dequantize(out)
    loaded = load_quantized(out)
    assert set(decoded) == set(quantized)
    for name, w in decoded.items():
        package = loaded.get_submodule(name).dequantized_weight(torch.float32).numpy()
        assert np.array_equal(w, package), name
        assert np.array_equal(w, to_interchange_precision(quantized[name]).dequantize().numpy()), name


# ----------------------------------------------------------------------------- size report
def test_size_report(saved) -> None:
    out, model, _, quantized = saved
    rep = checkpoint_size_report(out)
    assert rep.quantized_weights == sum(qw.q.numel() for qw in quantized.values())
    assert rep.bits_per_quantized_weight == pytest.approx(4 + (16 + 4) / 64)
    assert rep.file_bytes == (out / "model.safetensors").stat().st_size
    emb = model.get_input_embeddings().weight
    stored = 2  # float16: the default save dtype of a float32 model
    assert rep.other_bytes >= emb.numel() * stored  # tied head stored once
    assert rep.other_bytes < 2 * emb.numel() * stored
    mem = model_size_report(model)
    assert (mem.quantized_bytes, mem.other_bytes) == (rep.quantized_bytes, rep.other_bytes)
    assert "bits/weight" in rep.summary() and "4.312" in rep.summary()


# ----------------------------------------------------------------------------- refusals
def _rewrite(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _edit_config(ckpt: Path, edit) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    edit(cfg)
    (ckpt / "config.json").write_text(json.dumps(cfg))


Q = "model.layers.1.self_attn.q_proj"


def test_truncated_file_is_refused(saved, tmp_path: Path) -> None:
    ck = _copy(saved[0], tmp_path)
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated or corrupt"):
        load_quantized(ck)


@pytest.mark.parametrize(
    "key,dtype,pattern",
    [
        (Q + ".scales", torch.float32, r"tensor model\.layers\.1\.self_attn\.q_proj\.scales has dtype F32, "
         r"expected torch\.float16"),
        (Q + ".qweight", torch.int64, r"q_proj\.qweight has dtype I64, expected torch\.int32"),
        ("model.norm.weight", torch.int32, r"model\.norm\.weight has dtype I32, expected a floating-point"),
    ],
)
def test_wrong_dtype_is_refused(saved, tmp_path: Path, key, dtype, pattern) -> None:
    ck = _copy(saved[0], tmp_path)
    _rewrite(ck / "model.safetensors", lambda t: t.__setitem__(key, t[key].to(dtype)))
    with pytest.raises(CheckpointError, match=pattern):
        load_quantized(ck)


def test_missing_tensor_is_refused(saved, tmp_path: Path) -> None:
    ck = _copy(saved[0], tmp_path)
    _rewrite(ck / "model.safetensors", lambda t: t.pop(Q + ".qzeros"))
    with pytest.raises(CheckpointError, match=r"missing tensor\(s\) \['model\.layers\.1\.self_attn\.q_proj\.qzeros'\]"):
        load_quantized(ck)


def test_unexpected_tensor_is_refused(saved, tmp_path: Path) -> None:
    ck = _copy(saved[0], tmp_path)
    _rewrite(ck / "model.safetensors", lambda t: t.__setitem__("model.extra.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\) \['model\.extra\.weight'\]"):
        load_quantized(ck)


def test_nan_is_refused(saved, tmp_path: Path) -> None:
    ck = _copy(saved[0], tmp_path)

    def poison(t):
        t[Q + ".scales"][0, 3] = float("nan")

    _rewrite(ck / "model.safetensors", poison)
    with pytest.raises(CheckpointError, match=r"q_proj\.scales holds NaN or Inf"):
        load_quantized(ck)


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (lambda c: c["quantization_config"].update(group_size=128),
         r"tensor model\.layers\.\d\.\w+\.\w+\.(qzeros|scales) has shape .* group_size 128 \(from config\.json\)"),
        (lambda c: c.update(num_hidden_layers=3), r"missing tensor\(s\) \['model\.layers\.2\."),
        (lambda c: c.update(intermediate_size=512), r"has shape .* expected .*config\.json does not match"),
        (lambda c: c["quantization_config"].update(bits=3), r"bits is 3; only 4-bit"),
        (lambda c: c["quantization_config"].update(version="gemv"), r"version is 'gemv'"),
        (lambda c: c["quantization_config"].update(modules_to_not_convert=[Q]),
         r"q_proj is listed in modules_to_not_convert"),
        (lambda c: c.pop("quantization_config"), r"no quantization_config"),
        (lambda c: c.update(model_type="no-such-model"), r"model_type 'no-such-model' is unknown"),
    ],
    ids=["group-size", "layers", "intermediate", "bits", "version", "not-convert", "no-qc", "model-type"],
)
def test_mismatched_config_is_refused(saved, tmp_path: Path, edit, pattern) -> None:
    ck = _copy(saved[0], tmp_path)
    _edit_config(ck, edit)
    with pytest.raises(CheckpointError, match=pattern):
        load_quantized(ck)


def test_missing_files_are_refused(saved, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a directory"):
        load_quantized(tmp_path / "nowhere")
    ck = _copy(saved[0], tmp_path)
    (ck / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
        load_quantized(ck)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_quantized(ck)


def test_missing_shard_is_refused(tmp_path: Path) -> None:
    model, _, _ = _quantize(_llama(), QuantSpec(4, 32))
    out = save_quantized(model, tmp_path / "ckpt", max_shard_size=20_000)
    next(out.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-\d+\.safetensors: shard listed in .* is missing"):
        load_quantized(out)


# ----------------------------------------------------------------------------- atomic saves
def _interrupting_save_file(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    real = shards.finish_shard
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc  # after one shard is fully on disk
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "finish_shard", flaky)


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_save_leaves_nothing_loadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc) -> None:
    model, _, _ = _quantize(_llama(), QuantSpec(4, 32))
    out = tmp_path / "ckpt"
    _interrupting_save_file(monkeypatch, exc)
    with pytest.raises(type(exc)):
        save_quantized(model, out, max_shard_size=20_000)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the partial directory was removed too
    with pytest.raises(CheckpointError):
        load_quantized(out)


def test_interrupted_overwrite_keeps_the_old_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # float32 storage throughout: the logits are compared exactly with the in-memory models
    model, reference, _ = _quantize(_llama(seed=1), QuantSpec(4, 32))
    out = save_quantized(model, tmp_path / "ckpt", max_shard_size=20_000, save_dtype="float32")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other, _, _ = _quantize(_llama(seed=2), QuantSpec(4, 32))
    with pytest.raises(AWQInputError, match="already exists"):
        save_quantized(other, out)

    class FailingTokenizer:
        def save_pretrained(self, path: str) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_quantized(other, out, tokenizer=FailingTokenizer(), overwrite=True, save_dtype="float32")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with torch.no_grad():
        assert torch.equal(load_quantized(out)(_tokens()).logits, reference(_tokens()).logits)

    real_rename = ckmod.os.rename

    def rename_then_interrupt(src, dst):  # dies after moving the old checkpoint aside
        real_rename(src, dst)
        if Path(dst).name == "ckpt" and Path(dst).parent != tmp_path:
            raise KeyboardInterrupt

    monkeypatch.setattr(ckmod.os, "rename", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_quantized(other, out, overwrite=True, save_dtype="float32")
    monkeypatch.setattr(ckmod.os, "rename", real_rename)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]

    save_quantized(other, out, overwrite=True, save_dtype="float32")  # a completed overwrite replaces it
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with torch.no_grad():
        assert torch.equal(load_quantized(out)(_tokens()).logits, other(_tokens()).logits)


# ----------------------------------------------------------------------------- save dtype, config keys
def test_default_save_dtype_is_float16_and_config_keys(saved) -> None:
    out, model, _, quantized = saved
    cfg = json.loads((out / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["format"] == "gemm" and qc["version"] == "gemm"
    assert cfg["use_cache"] is True and cfg["dtype"] == "float16"
    stored = load_file(out / "model.safetensors")
    assert stored["model.embed_tokens.weight"].dtype == torch.float16
    assert stored["model.norm.weight"].dtype == torch.float16
    name = next(iter(quantized))
    assert stored[name + ".scales"].dtype == torch.float16 and stored[name + ".qweight"].dtype == torch.int32
    emb = model.get_input_embeddings().weight
    assert torch.equal(stored["model.embed_tokens.weight"], emb.to(torch.float16))
    loaded = load_quantized(out, dtype=torch.float32)
    assert torch.equal(loaded.get_input_embeddings().weight, emb.to(torch.float16).float())


def test_bfloat16_model_is_stored_in_bfloat16_and_float16_overflow_is_refused(tmp_path: Path) -> None:
    model, _, _ = _quantize(_llama().to(torch.bfloat16), QuantSpec(4, 32))
    out = save_quantized(model, tmp_path / "bf16")
    assert load_file(out / "model.safetensors")["model.embed_tokens.weight"].dtype == torch.bfloat16
    big, _, _ = _quantize(_llama(), QuantSpec(4, 32))
    with torch.no_grad():
        big.get_input_embeddings().weight[0, 0] = 1e6
    with pytest.raises(AWQInputError, match=r"model\.embed_tokens\.weight: values exceed the range of torch\.float16"):
        save_quantized(big, tmp_path / "fp16")
    assert not (tmp_path / "fp16").exists()
    out = save_quantized(big, tmp_path / "fp32", save_dtype="float32")
    assert load_file(out / "model.safetensors")["model.embed_tokens.weight"][0, 0] == 1e6
    with pytest.raises(AWQInputError, match="save dtype 'int8' not supported"):
        save_quantized(big, tmp_path / "x", save_dtype="int8")


def test_other_format_is_refused(saved, tmp_path: Path) -> None:
    ck = _copy(saved[0], tmp_path)
    _edit_config(ck, lambda c: c["quantization_config"].__setitem__("format", "marlin"))
    with pytest.raises(CheckpointError, match="quantization_config.format is 'marlin'"):
        load_quantized(ck)


# ----------------------------------------------------------------------------- the shard writer
def test_shard_writer_matches_safetensors_and_shards_greedily(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {f"t{i}": torch.randn(50, 20, generator=g) for i in range(5)}  # 4000 bytes each
    tensors["ints"] = torch.randint(0, 9, (7,), dtype=torch.int32, generator=g)
    tensors["half"] = torch.randn(3, 3, generator=g).to(torch.bfloat16)
    with shards.ShardWriter(tmp_path / "ck", max_shard_size=9000) as w:
        for name, t in tensors.items():
            w.add(name, t)
        with pytest.raises(AWQInputError, match="t0 was written twice"):
            w.add("t0", tensors["t0"])
        assert not (tmp_path / "ck").exists()  # nothing visible before commit
        out = w.commit()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert [index["weight_map"][n] for n in ("t0", "t1", "t2", "t3", "t4")] == [files[0], files[0], files[1],
                                                                              files[1], files[2]]
    back = {}
    for f in files:
        back.update(load_file(out / f))  # the reference reader accepts our files
    assert set(back) == set(tensors) and all(torch.equal(back[n], t) for n, t in tensors.items())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_shard_writer_discards_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with shards.ShardWriter(tmp_path / "ck", max_shard_size=100) as w:
            w.add("a", torch.zeros(100))
            w.add("b", torch.zeros(100))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
