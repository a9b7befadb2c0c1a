"""Peak host memory of streamed quantization against the size of the float checkpoint.

``python -m awq_ext bench stream-memory``: make a synthetic model (random weights, a word-level tokenizer over
the calibration text) saved as sharded float32 safetensors in the layout ``save_pretrained`` writes - tensor
by tensor, one block at a time, so making it never holds the model either - then quantize it in a fresh
subprocess of the project CLI with ``quantize --stream`` and read the subprocess's peak RSS from its JSON
(cross-checked from outside with ``getrusage``). The target (DESIGN §6): peak RSS <= 1/4 of the float
checkpoint's size.

Presets: ``llama-1b`` is TinyLlama-1.1B's shape (hidden 2048, 22 layers, GQA 32/4 heads, MLP 5632,
vocab 32000): 1.1 B parameters, 4.4 GB in float32. ``llama-1b-2l`` is the same with 2 layers (the
same peak memory; a time estimate per block). ``qwen3-moe-1b`` is a Qwen3-MoE of 1.3 B parameters (24
layers of 32 experts, 4 routed per token, expert MLP 512, hidden 1024), stored per expert as Hub checkpoints
are (``mlp.experts.{e}.gate_proj``...; transformers fuses them when it loads). ``tiny`` and ``tiny-moe`` are
seconds-long checks of the tooling.
"""
from __future__ import annotations

import re
import resource
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from awq_ext.bench.cli_runs import run_cli_json
from awq_ext.errors import AWQInputError
from awq_ext.io.shards import ShardWriter


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    def n_params(self) -> int:
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        block = attn + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * block + 2 * self.vocab * self.hidden + self.hidden

    def config(self):  # noqa: ANN201 - a transformers config
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
                           num_hidden_layers=self.layers, num_attention_heads=self.heads,
                           num_key_value_heads=self.kv_heads, max_position_embeddings=4096, tie_word_embeddings=False,
                           dtype="float32")


@dataclass(frozen=True)
class MoeShape:
    """A Qwen3-MoE: every layer's MLP is ``experts`` routed experts (``top_k`` per token), no shared expert."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    expert_intermediate: int
    experts: int
    top_k: int
    vocab: int

    def n_params(self) -> int:
        attn = 2 * self.hidden * self.heads * self.head_dim + 2 * self.hidden * self.kv_heads * self.head_dim
        moe = self.experts * 3 * self.hidden * self.expert_intermediate + self.experts * self.hidden  # + router
        block = attn + 2 * self.head_dim + moe + 2 * self.hidden  # q/k norms, two layer norms
        return self.layers * block + 2 * self.vocab * self.hidden + self.hidden

    def config(self):  # noqa: ANN201 - a transformers config
        from transformers import Qwen3MoeConfig

        return Qwen3MoeConfig(vocab_size=self.vocab, hidden_size=self.hidden, num_hidden_layers=self.layers,
                              num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                              head_dim=self.head_dim, moe_intermediate_size=self.expert_intermediate,
                              intermediate_size=self.expert_intermediate, num_experts=self.experts,
                              num_experts_per_tok=self.top_k, decoder_sparse_step=1, mlp_only_layers=[],
                              max_position_embeddings=4096, tie_word_embeddings=False, dtype="float32")


PRESETS: dict[str, LlamaShape | MoeShape] = {
    "llama-1b": LlamaShape(hidden=2048, layers=22, heads=32, kv_heads=4, intermediate=5632, vocab=32000),
    # llama-1b's blocks, embedding and head with 2 layers: memory does not grow with depth, so its peak RSS is
    # llama-1b's, and its seconds per block x 22 estimate llama-1b's run
    "llama-1b-2l": LlamaShape(hidden=2048, layers=2, heads=32, kv_heads=4, intermediate=5632, vocab=32000),
    "qwen3-moe-1b": MoeShape(hidden=1024, layers=24, heads=16, kv_heads=4, head_dim=64, expert_intermediate=512,
                             experts=32, top_k=4, vocab=32000),
    "tiny": LlamaShape(hidden=128, layers=3, heads=4, kv_heads=2, intermediate=256, vocab=512),
    "tiny-moe": MoeShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, expert_intermediate=64, experts=4,
                         top_k=2, vocab=512),
}


def word_tokenizer(text: str, vocab: int):
    """A word-level tokenizer whose vocabulary is ``text``'s most frequent words (random weights need no
    better one; it makes calibration and evaluation text of the intended length)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Counter(text.split())
    table = {"<unk>": 0}
    for w, _ in words.most_common(vocab - 1):
        table[w] = len(table)
    tok = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def make_synthetic_model(out_dir: str | Path, shape: LlamaShape | MoeShape, *, text: str, seed: int = 0,
                         max_shard_size: str = "1GB", progress: bool = True) -> Path:
    """Write a random-weight model of ``shape`` as float32 safetensors shards + config + tokenizer into
    ``out_dir``, in the layout ``save_pretrained`` writes (transformers' reverse conversion mapping, e.g.
    fused experts stored per expert). Linear and embedding weights ~ N(0, 0.02), norms ~ U(0.5, 1.5)."""
    from accelerate import init_empty_weights
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    cfg = shape.config()
    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(cfg)
    gen = torch.Generator().manual_seed(seed)
    state = skeleton.state_dict()  # meta tensors: shapes only
    groups: dict[str, list[str]] = {}  # one block's tensors (or one tensor outside the blocks) at a time
    for name in state:
        m = re.match(r"(.*\.layers\.\d+\.)", name)
        groups.setdefault(m.group(1) if m else name, []).append(name)
    with ShardWriter(out_dir, max_shard_size) as writer:
        for names in tqdm(groups.values(), desc="synthetic model", disable=not progress):
            part = {}
            for name in names:
                t = torch.empty(state[name].shape)
                part[name] = t.uniform_(0.5, 1.5, generator=gen) if "norm" in name else t.normal_(0.0, 0.02, generator=gen)
            for name, t in revert_weight_conversion(skeleton, part).items():
                writer.add(name, t.contiguous())
            del part
        cfg.save_pretrained(writer.staging)
        word_tokenizer(text, shape.vocab).save_pretrained(str(writer.staging))
        return writer.commit()


def checkpoint_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def run_stream_memory(preset: str, *, model_dir: str | None = None, quant_args: str = "",
                      cli: Sequence[str] = (sys.executable, "-m", "awq_ext"), timeout_s: float | None = None,
                      progress: bool = True,
                      log: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """One row: the float checkpoint's size, the streamed AWQ W4 g64 run's peak RSS and their ratio."""
    from awq_ext.data import load_source

    if preset not in PRESETS:
        raise AWQInputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="awq_bench_stream_") as tmp:
        src = Path(model_dir) if model_dir else Path(tmp) / f"synthetic-{preset}"
        if src.exists() and not (src / "config.json").is_file():
            raise AWQInputError(f"{src} exists but holds no model; remove it or choose another --model-dir")
        t0 = time.perf_counter()
        if not src.exists():
            log(f"  stream-memory: writing synthetic {preset} ({shape.n_params() / 1e9:.2f} B parameters) to {src}")
            make_synthetic_model(src, shape, text=load_source("pydoc").calib_text, progress=progress)
        make_s = time.perf_counter() - t0
        out = Path(tmp) / "quantized"
        js = Path(tmp) / "run.json"
        cmd = [*cli, "quantize", "--stream", "--model", str(src), "--method", "awq", "--w-bit", "4",
               "--group-size", "64", "--n-samples", "4", "--seqlen", "256", "--eval", "none",
               "--output", str(out), "--json", str(js), "--no-progress", *shlex.split(quant_args)]
        log(f"  stream-memory: {shlex.join(cmd)}")
        data, wall = run_cli_json(cmd, js, timeout_s, "the streamed quantization")
        float_bytes = checkpoint_bytes(src)
        peak = data["peak_rss_mb"]
        row = {
            "preset": preset, "shape": asdict(shape), "params": shape.n_params(),
            "float_checkpoint_mb": float_bytes / 2**20, "peak_rss_mb": peak,
            "peak_rss_fraction": peak * 2**20 / float_bytes, "target_fraction": 0.25,
            "meets_target": peak * 2**20 <= float_bytes / 4, "peak_device_mb": data.get("peak_device_mb"),
            "quantize_seconds": data.get("quantize_seconds"), "wall_s_outside": wall, "make_model_s": make_s,
            "child_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "output_checkpoint": data.get("checkpoint"),
            "block_seconds": [b["seconds"] for b in data.get("blocks", [])],
        }
        if not model_dir:
            notes.append("the synthetic float model was written to a temporary directory and removed; pass "
                         "--model-dir to keep it")
    return [row], notes


STREAM_COLUMNS = (
    ("preset", "preset", ""), ("params", "params", ",d"), ("float_checkpoint_mb", "float ckpt MiB", ".0f"),
    ("peak_rss_mb", "peak RSS MiB", ".0f"), ("peak_rss_fraction", "RSS / ckpt", ".3f"),
    ("meets_target", "<= 1/4", ""), ("quantize_seconds", "quantize s", ".1f"),
)
