"""End-to-end speed: a LLaMA-shaped decoder with random weights, FP16 vs W4A16.

Random weights are fine for speed (the arithmetic does not care what the numbers are). The decoder is a
plain LLaMA block stack (RMSNorm, RoPE, attention over a static KV cache, SwiGLU MLP); its seven linears per
block are dense ``F.linear`` in the FP16 model and :class:`awq_ext.nn.wqlinear.WQLinear` (4-bit, G=128) in
the W4A16 model; embeddings, norms and ``lm_head`` stay in the activation dtype in both, as in AWQ.

Measured: prefill of ``1 x prefill`` tokens, and one decode step (one new token per sequence) at batch
1/4/16 with ``prefill`` tokens already in the cache, replayed from a CUDA graph when capture works (eager
otherwise, and the JSON says which). Decode timing includes host overhead on purpose: it is the latency a
user sees. Peak GPU memory is ``torch.cuda.max_memory_allocated`` over building and running each model.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from awq_ext.bench.ceilings import speedup
from awq_ext.bench.timing import TimerConfig, make_timer, nvtx_range
from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec


@dataclass(frozen=True)
class DecoderConfig:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def validate(self, group_size: int) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise AWQInputError(f"{self}: hidden must divide into heads, and heads into kv_heads")
        if self.head_dim % 2:
            raise AWQInputError(f"{self}: head_dim {self.head_dim} must be even for RoPE")
        for k in (self.hidden, self.intermediate):
            if k % group_size:
                raise AWQInputError(f"{self}: in_features {k} is not a multiple of group_size {group_size}")


PRESETS = {
    "llama-7b": DecoderConfig(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000),
    # small enough for the CPU reference path to finish in seconds
    "tiny": DecoderConfig(hidden=256, intermediate=768, layers=2, heads=4, kv_heads=4, vocab=1024),
}


class _Dense(nn.Module):
    def __init__(self, n: int, k: int, dtype: torch.dtype, device: torch.device, gen: torch.Generator) -> None:
        super().__init__()
        w = torch.randn(n, k, generator=gen, device=device, dtype=torch.float32) / math.sqrt(k)
        self.weight = nn.Parameter(w.to(dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


def _w4_linear(n: int, k: int, group_size: int, backend: str, device: torch.device,
               gen: torch.Generator) -> nn.Module:
    from awq_ext.nn.wqlinear import WQLinear

    spec = QuantSpec(bits=4, group_size=group_size, zero_point=True)
    q = torch.randint(0, 16, (n, k), generator=gen, device=device, dtype=torch.int32)
    ng = k // group_size
    zeros = torch.randint(6, 10, (n, ng), generator=gen, device=device).float()
    # uniform codes around the zero have std ~4.6 steps: pick the step so W has std ~1/sqrt(k)
    scales = torch.full((n, ng), 1.0 / (4.6 * math.sqrt(k)), device=device)
    return WQLinear.from_quantized(QuantizedWeight(q, scales, zeros, spec), None, backend=backend)


class _Block(nn.Module):
    def __init__(self, cfg: DecoderConfig, linear: Callable[[int, int], nn.Module], dtype: torch.dtype,
                 device: torch.device) -> None:
        super().__init__()
        h, kvd = cfg.hidden, cfg.kv_heads * cfg.head_dim
        self.cfg = cfg
        self.q, self.k, self.v, self.o = linear(h, h), linear(kvd, h), linear(kvd, h), linear(h, h)
        self.gate, self.up = linear(cfg.intermediate, h), linear(cfg.intermediate, h)
        self.down = linear(h, cfg.intermediate)
        self.norm1 = nn.Parameter(torch.ones(h, dtype=dtype, device=device), requires_grad=False)
        self.norm2 = nn.Parameter(torch.ones(h, dtype=dtype, device=device), requires_grad=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                positions: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        c = self.cfg
        hx = _rms(x, self.norm1)
        q = self.q(hx).view(b, t, c.heads, c.head_dim).transpose(1, 2)
        k = self.k(hx).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v(hx).view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        k_cache.index_copy_(2, positions, k)  # static cache: write this step's keys/values in place
        v_cache.index_copy_(2, positions, v)
        kk, vv = k_cache, v_cache
        if c.kv_heads != c.heads:
            kk = kk.repeat_interleave(c.heads // c.kv_heads, dim=1)
            vv = vv.repeat_interleave(c.heads // c.kv_heads, dim=1)
        a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, c.hidden))
        hx = _rms(x, self.norm2)
        return x + self.down(F.silu(self.gate(hx)) * self.up(hx))


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Decoder(nn.Module):
    """``forward(tokens [B, T] long, start [1] long tensor) -> logits of the last position [B, vocab]``.

    The KV cache is ``[layers, max_batch, kv_heads, max_seq, head_dim]``; a batch of ``B`` uses rows ``:B``.
    ``start`` is a device tensor so a captured CUDA graph can be replayed at any position."""

    def __init__(self, cfg: DecoderConfig, linear: Callable[[int, int], nn.Module], dtype: torch.dtype,
                 device: torch.device, max_batch: int, max_seq: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator(device=device).manual_seed(seed)
        self.cfg, self.max_seq = cfg, max_seq
        self.embed = nn.Parameter((torch.randn(cfg.vocab, cfg.hidden, generator=gen, device=device) * 0.02)
                                  .to(dtype), requires_grad=False)
        self.blocks = nn.ModuleList(_Block(cfg, linear, dtype, device) for _ in range(cfg.layers))
        self.norm = nn.Parameter(torch.ones(cfg.hidden, dtype=dtype, device=device), requires_grad=False)
        self.lm_head = _Dense(cfg.vocab, cfg.hidden, dtype, device, gen)
        shape = (cfg.layers, max_batch, cfg.kv_heads, max_seq, cfg.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device))
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device))
        inv = 1.0 / (10000 ** (torch.arange(0, cfg.head_dim, 2, device=device).float() / cfg.head_dim))
        ang = torch.arange(max_seq, device=device).float()[:, None] * inv[None, :]
        self.register_buffer("cos", ang.cos().to(dtype))
        self.register_buffer("sin", ang.sin().to(dtype))

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        positions = start + torch.arange(t, device=tokens.device)
        cos, sin = self.cos[positions], self.sin[positions]
        # query i (at position start+i) sees cache slots 0..start+i; later slots hold stale values
        mask = torch.arange(self.max_seq, device=tokens.device)[None, :] <= positions[:, None]
        x = F.embedding(tokens, self.embed)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, mask, positions, self.k_cache[i, :b], self.v_cache[i, :b])
        return self.lm_head(_rms(x[:, -1], self.norm))


def weight_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers, KV cache excluded."""
    skip = {"k_cache", "v_cache"}
    return sum(t.numel() * t.element_size() for name, t in list(model.named_parameters()) +
               list(model.named_buffers()) if name.split(".")[-1] not in skip)


@dataclass
class E2EConfig:
    preset: str = "tiny"
    batches: Sequence[int] = (1, 4, 16)
    prefill: int = 512
    dtype: torch.dtype = torch.float16
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    group_size: int = 128
    cuda_graph: bool = True
    timer: TimerConfig = dataclasses.field(default_factory=lambda: TimerConfig(warmup=3, iters=20))

    def decoder(self) -> DecoderConfig:
        if self.preset not in PRESETS:
            raise AWQInputError(f"unknown --preset {self.preset!r}; choose from {sorted(PRESETS)}")
        return PRESETS[self.preset]


def _w4_backend(device: torch.device) -> tuple[str, str | None]:
    """WQLinear backend to use and a note when it is not the CUDA kernel."""
    if device.type != "cuda":
        return "torch", "W4A16 runs WQLinear's torch reference on CPU (dequantize once, then F.linear)"
    try:
        from awq_ext import kernels
        ok = kernels.is_available()
    except ImportError:
        ok = False
    if ok:
        return "cuda", None
    return "torch", "awq_ext.kernels unavailable: W4A16 ran WQLinear's torch fallback, NOT the CUDA kernel"


def _decode_step(model: Decoder, batch: int, pos: int, use_graph: bool,
                 notes: list[str]) -> tuple[Callable[[], object], str]:
    """A zero-argument callable running one decode step at ``pos``, and how: "cuda-graph" or "eager"."""
    dev = model.k_cache.device
    tok = torch.zeros(batch, 1, dtype=torch.long, device=dev)
    start = torch.tensor([pos], device=dev)
    if not (use_graph and dev.type == "cuda"):
        return (lambda: model(tok, start)), "eager"
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm caches (WQLinear packs its kernel data on the first call) before capture
            model(tok, start)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            model(tok, start)
    except RuntimeError as exc:
        notes.append(f"CUDA graph capture failed at batch {batch} ({exc}); decode timed eagerly")
        return (lambda: model(tok, start)), "eager"
    return graph.replay, "cuda-graph"


def run_e2e(cfg: E2EConfig, log: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """Rows ``{model, phase, batch, tokens, median_ms, ms_per_token, tokens_per_s, weights_mb, peak_mb, ...}``."""
    dcfg = cfg.decoder()
    dcfg.validate(cfg.group_size)
    notes: list[str] = []
    rows: list[dict] = []
    dev = cfg.device
    timer_cfg = dataclasses.replace(cfg.timer, queue_ahead=False)  # end-to-end latency includes host time
    timer = make_timer(dev, timer_cfg)
    backend, note = _w4_backend(dev)
    if note:
        notes.append(note)
    max_seq = cfg.prefill + 8
    for kind in ("fp16", "w4a16"):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        gen = torch.Generator(device=dev).manual_seed(1)
        if kind == "fp16":
            def linear(n: int, k: int) -> nn.Module:
                return _Dense(n, k, cfg.dtype, dev, gen)
        else:
            try:
                from awq_ext.nn.wqlinear import WQLinear  # noqa: F401
            except ImportError as exc:
                notes.append(f"w4a16 skipped: awq_ext.nn.wqlinear cannot be imported ({exc})")
                continue

            def linear(n: int, k: int) -> nn.Module:
                return _w4_linear(n, k, cfg.group_size, backend, dev, gen)
        model = Decoder(dcfg, linear, cfg.dtype, dev, max_batch=max(cfg.batches), max_seq=max_seq)
        wmb = weight_bytes(model) / 2**20
        label = f"{kind} ({'WQLinear ' + backend if kind == 'w4a16' else 'F.linear'})"
        log(f"  e2e {cfg.preset} {label}: weights {wmb:.0f} MiB")
        prompt = torch.randint(0, dcfg.vocab, (1, cfg.prefill), device=dev)
        zero = torch.zeros(1, dtype=torch.long, device=dev)
        t = timer.time(f"e2e:{kind}:prefill{cfg.prefill}", model, [(prompt, zero)])
        rows.append(dict(model=kind, backend=backend if kind == "w4a16" else "dense", phase="prefill", batch=1,
                         tokens=cfg.prefill, **t.to_dict(), ms_per_token=t.median_ms / cfg.prefill,
                         tokens_per_s=cfg.prefill / (t.median_ms * 1e-3), weights_mb=wmb))
        for b in cfg.batches:
            with nvtx_range(f"e2e:{kind}:capture_b{b}", cfg.timer.nvtx):
                step, mode = _decode_step(model, b, cfg.prefill, cfg.cuda_graph, notes)
            t = timer.time(f"e2e:{kind}:decode_b{b}", step, [()])
            rows.append(dict(model=kind, backend=backend if kind == "w4a16" else "dense", phase="decode", batch=b,
                             tokens=b, **t.to_dict(), ms_per_token=t.median_ms,
                             tokens_per_s=b / (t.median_ms * 1e-3), weights_mb=wmb,
                             decode_mode=mode))
            log(f"    decode batch {b}: {t.median_ms:.3f} ms/step")
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        for r in rows:
            if r["model"] == kind:
                r["peak_mb"] = peak
        del model
    if dev.type != "cuda":
        notes.append("peak memory is reported on CUDA only (torch.cuda.max_memory_allocated)")
    add_e2e_ratios(rows)
    return rows, notes


def add_e2e_ratios(rows: list[dict]) -> None:
    """``speedup_vs_fp16`` on each row: fp16 time / this time for the same phase and batch."""
    base = {(r["phase"], r["batch"]): r["median_ms"] for r in rows if r["model"] == "fp16"}
    for r in rows:
        b = base.get((r["phase"], r["batch"]))
        r["speedup_vs_fp16"] = speedup(b, r["median_ms"]) if b is not None else None


E2E_COLUMNS = (
    ("model", "model", ""), ("backend", "backend", ""), ("phase", "phase", ""), ("batch", "batch", "d"),
    ("tokens", "tokens", "d"), ("median_ms", "ms", ".3f"), ("tokens_per_s", "tok/s", ".1f"),
    ("speedup_vs_fp16", "x fp16", ".2f"), ("weights_mb", "weights MiB", ".0f"), ("peak_mb", "peak MiB", ".0f"),
)
