"""Kernel benchmark: one W4A16 GEMM ``y[M,N] = x[M,K] @ W[N,K]^T`` per (shape, M, method).

Methods (each keyed by ``Method.key`` in the JSON):

* ``dense``      - ``torch.matmul`` on the dequantized weights in the activation dtype (cuBLAS on CUDA):
                   the FP16 (or BF16) baseline every ratio is taken against.
* ``awq``        - the reorder-free CUDA kernel (``awq_ext.kernels.ops.w4a16_linear``).
* ``gptq_r``     - the same kernel with act-order ``g_idx`` (scales/zeros gathered per input row).
* ``torch_int4`` - ``torch._weight_int4pack_mm`` (tinygemm) with the same 4 bits and group size.
* ``triton``     - the Triton baseline of :mod:`awq_ext.bench.triton_w4a16` on the interchange layout.
* ``torch_ref``  - ``WQLinear(backend="torch")``: the product's reference path (CPU runs use it).

All W4 methods represent the SAME weights (codes, fp16-rounded scales, integer zeros); every method's first
output is checked against ``x.float() @ W_ref.float().T`` before it is timed, so a wrong kernel shows up as
``ok=False`` instead of as a fast number. A method that cannot run here is recorded with the reason.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from awq_ext.bench.ceilings import (
    FP16_BITS,
    achieved_gbps,
    achieved_tflops,
    bits_per_weight,
    gemm_bytes,
    gemm_flops,
    speedup,
)
from awq_ext.bench.timing import TimerConfig, l2_cache_bytes, make_timer, nvtx_range, rotation_copies
from awq_ext.errors import AWQInputError, KernelUnavailableError
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec, quantize_weight

M_VALUES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CPU_M_VALUES = (1, 16, 64)
BASELINE = "dense"
# Errors a backend may raise when it cannot handle a case; the run records them and goes on, because one
# broken backend must not void a long GPU sweep. Anything else (a bug in this harness) propagates.
BACKEND_ERRORS = (RuntimeError, AWQInputError, KernelUnavailableError, NotImplementedError, TypeError)


@dataclass(frozen=True)
class Shape:
    """One linear: ``n`` = out_features, ``k`` = in_features (weight ``[N, K]``)."""

    name: str
    n: int
    k: int

    @property
    def label(self) -> str:
        return f"{self.name} (K{self.k}xN{self.n})"


def _llama(prefix: str, hidden: int, inter: int, kv_dim: int) -> list[Shape]:
    return [
        Shape(f"{prefix}.qkv", hidden + 2 * kv_dim, hidden),
        Shape(f"{prefix}.o", hidden, hidden),
        Shape(f"{prefix}.up", inter, hidden),  # gate_proj has the same shape
        Shape(f"{prefix}.down", hidden, inter),
    ]


# LLaMA linears (fused q/k/v; 70B uses GQA with 8 KV heads of 128). "7b.up" (K=4096, N=11008) is the
# headline shape of DESIGN §6.
SHAPES: dict[str, Shape] = {
    s.name: s
    for s in _llama("7b", 4096, 11008, 4096) + _llama("13b", 5120, 13824, 5120) + _llama("70b", 8192, 28672, 1024)
}
HEADLINE_SHAPE = "7b.up"
# Small LLaMA-like shapes for the CPU reference path (K a multiple of 128).
CPU_SHAPES = (Shape("cpu.up", 1408, 512), Shape("cpu.down", 512, 1408))


def parse_shapes(spec: str | None, on_gpu: bool) -> list[Shape]:
    """``"7b,13b.up,4096x11008"`` -> shapes. Tokens: a model (``7b``/``13b``/``70b``), a shape name,
    ``all``, ``cpu``, or ``KxN`` (in_features x out_features). ``None``: all LLaMA shapes on a GPU, the
    small CPU shapes otherwise."""
    if spec is None:
        return list(SHAPES.values()) if on_gpu else list(CPU_SHAPES)
    out: list[Shape] = []
    for tok in (t.strip().lower() for t in spec.split(",") if t.strip()):
        if tok == "all":
            out += SHAPES.values()
        elif tok == "cpu":
            out += CPU_SHAPES
        elif tok in SHAPES:
            out.append(SHAPES[tok])
        elif any(name.startswith(tok + ".") for name in SHAPES):
            out += [s for name, s in SHAPES.items() if name.startswith(tok + ".")]
        elif "x" in tok and all(p.isdigit() for p in tok.split("x")) and len(tok.split("x")) == 2:
            k, n = (int(p) for p in tok.split("x"))
            out.append(Shape(f"custom.{k}x{n}", n, k))
        else:
            raise AWQInputError(
                f"unknown shape {tok!r} in --shapes; use all, cpu, 7b, 13b, 70b, one of {sorted(SHAPES)}, or KxN "
                "(in_features x out_features, e.g. 4096x11008)"
            )
    if not out:
        raise AWQInputError("--shapes selected nothing; give e.g. --shapes 7b")
    return list(dict.fromkeys(out))  # dedupe, keep order


def parse_ms(spec: str | None, on_gpu: bool) -> list[int]:
    """``"1,16,64"`` -> ``[1, 16, 64]``; ``None``: the full sweep on a GPU, a short one on CPU."""
    if spec is None:
        return list(M_VALUES if on_gpu else CPU_M_VALUES)
    try:
        ms = [int(t) for t in spec.split(",") if t.strip()]
    except ValueError as exc:
        raise AWQInputError(f"--m must be comma-separated positive integers, got {spec!r}") from exc
    if not ms or min(ms) < 1:
        raise AWQInputError(f"--m must be comma-separated positive integers, got {spec!r}")
    return ms


# --------------------------------------------------------------------------- weights
@dataclass
class CaseWeights:
    """The weights of one shape in every form the methods need (all on the benchmark device)."""

    qw: QuantizedWeight  # natural order, scales rounded to fp16 (what the interchange layout stores)
    qw_act: QuantizedWeight  # act-order: quantized in a random input-row permutation, with g_idx
    w_ref: torch.Tensor  # fp32 [N, K] that qw stands for
    w_ref_act: torch.Tensor  # fp32 [N, K] that qw_act stands for


def _fp16_scales(qw: QuantizedWeight) -> QuantizedWeight:
    return dataclasses.replace(qw, scales=qw.scales.to(torch.float16).float())


def make_case_weights(shape: Shape, group_size: int, device: torch.device, seed: int = 0) -> CaseWeights:
    """Random LLaMA-like weights (std 0.02) quantized to 4 bits, in natural and in act order."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = (torch.randn(shape.n, shape.k, generator=gen) * 0.02).to(device)
    spec = QuantSpec(bits=4, group_size=group_size, zero_point=True)
    q, s, z = quantize_weight(w, spec, name=shape.name)
    qw = _fp16_scales(QuantizedWeight(q, s, z, spec))
    # GPTQ act-order: rows quantized in a permuted order, so group g holds the rows perm[g*G:(g+1)*G]
    perm = torch.randperm(shape.k, generator=gen).to(device)
    qp, sp, zp = quantize_weight(w[:, perm], spec, name=shape.name)
    q_act = torch.empty_like(qp)
    q_act[:, perm] = qp
    g_idx = torch.empty(shape.k, dtype=torch.int32, device=device)
    g_idx[perm] = (torch.arange(shape.k, device=device) // group_size).to(torch.int32)
    qw_act = _fp16_scales(QuantizedWeight(q_act, sp, zp, spec, g_idx=g_idx))
    return CaseWeights(qw, qw_act, qw.dequantize(), _dequant_act(qw_act))


def _dequant_act(qw: QuantizedWeight) -> torch.Tensor:
    gi = qw.g_idx.long()
    return (qw.q.float() - qw.zeros[:, gi]) * qw.scales[:, gi]


# --------------------------------------------------------------------------- methods
class Method:
    """A way of computing the GEMM. ``prepare`` builds one copy of the weight state; ``run`` is timed."""

    key = ""
    label = ""
    act_order = False  # compare against the act-order reference weights

    def unavailable(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why this method cannot run here, or ``None``."""
        return None

    def weight_bits(self, group_size: int) -> float:
        return bits_per_weight(4, group_size)

    def extra_bytes(self, shape: Shape) -> float:
        return 0.0

    def prepare(self, cw: CaseWeights, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    def run(self, x: torch.Tensor, state: Any) -> torch.Tensor:
        raise NotImplementedError


class DenseMatmul(Method):
    key = "dense"
    label = "torch.matmul dense (cuBLAS)"

    def weight_bits(self, group_size: int) -> float:
        return FP16_BITS

    def prepare(self, cw: CaseWeights, dtype: torch.dtype) -> Any:
        return cw.w_ref.to(dtype)

    def run(self, x: torch.Tensor, state: Any) -> torch.Tensor:
        return torch.matmul(x, state.t())  # [N, K] weight read transposed, as nn.Linear does


def _kernels_unavailable(device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cuda":
        return "needs a CUDA GPU"
    try:
        from awq_ext import kernels
    except ImportError as exc:
        return f"awq_ext.kernels cannot be imported ({exc})"
    if not kernels.is_available():
        return "awq_ext.kernels.is_available() is False (extension not built or no compiler)"
    return None


class AwqKernel(Method):
    key = "awq"
    label = "AWQ reorder-free (awq_ext CUDA)"

    def unavailable(self, device: torch.device, dtype: torch.dtype) -> str | None:
        return _kernels_unavailable(device, dtype)

    def _qw(self, cw: CaseWeights) -> QuantizedWeight:
        return cw.qw

    def prepare(self, cw: CaseWeights, dtype: torch.dtype) -> Any:
        from awq_ext.pack.kernel_layout import pack_kernel

        qw = self._qw(cw)
        # unsigned codes, fp16-exact scales (rounded to the activation dtype by pack_kernel), integer zeros
        packed = pack_kernel(qw.q.to(torch.int32), qw.scales, qw.zeros, qw.spec.group_size, qw.g_idx, dtype=dtype)
        packed = {key: t.to(qw.q.device) for key, t in packed.items()}  # pack_kernel returns CPU tensors
        return {"packed": packed, "g": qw.spec.group_size, "n": qw.q.shape[0], "k": qw.q.shape[1]}

    def run(self, x: torch.Tensor, state: Any) -> torch.Tensor:
        from awq_ext.kernels import ops

        return ops.w4a16_linear(x, state["packed"], state["g"], state["n"], state["k"])


class GptqReorderKernel(AwqKernel):
    key = "gptq_r"
    label = "GPTQ-R act-order (awq_ext CUDA, g_idx)"
    act_order = True

    def _qw(self, cw: CaseWeights) -> QuantizedWeight:
        return cw.qw_act

    def extra_bytes(self, shape: Shape) -> float:
        return 4.0 * shape.k  # g_idx int32 [K]


class TorchInt4(Method):
    """``torch._weight_int4pack_mm`` computes ``(q - 8) * scale + zero``; our ``(q - z) * s`` maps to
    ``zero = (8 - z) * s``. CUDA packs uint8 ``[N, K/2]`` (even k in the high nibble); CPU takes int32 codes."""

    key = "torch_int4"
    label = "torch._weight_int4pack_mm (tinygemm)"

    def unavailable(self, device: torch.device, dtype: torch.dtype) -> str | None:
        ops = torch.ops.aten
        names = ("_convert_weight_to_int4pack", "_weight_int4pack_mm") if device.type == "cuda" else (
            "_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu")
        missing = [n for n in names if not hasattr(ops, n)]
        return f"this torch has no {', '.join(missing)}" if missing else None

    def prepare(self, cw: CaseWeights, dtype: torch.dtype) -> Any:
        qw = cw.qw
        n, k = qw.q.shape
        g = qw.spec.group_size
        inner_k_tiles = next(t for t in (8, 4, 2) if k % (t * 16) == 0)
        s = qw.scales.float()
        sz = torch.stack([s.t(), ((8.0 - qw.zeros.float()) * s).t()], dim=-1).to(dtype).contiguous()
        if qw.q.is_cuda:
            q = qw.q.to(torch.uint8)
            packed_u8 = ((q[:, ::2] << 4) | q[:, 1::2]).contiguous()
            w = torch.ops.aten._convert_weight_to_int4pack(packed_u8, inner_k_tiles)
            fn = torch.ops.aten._weight_int4pack_mm
        else:
            w = torch.ops.aten._convert_weight_to_int4pack_for_cpu(qw.q.to(torch.int32).contiguous(), inner_k_tiles)
            fn = torch.ops.aten._weight_int4pack_mm_for_cpu
        return {"w": w, "sz": sz, "g": g, "fn": fn}

    def run(self, x: torch.Tensor, state: Any) -> torch.Tensor:
        return state["fn"](x, state["w"], state["g"], state["sz"])


class TritonBaseline(Method):
    key = "triton"
    label = "Triton W4A16 (compiler baseline)"

    def unavailable(self, device: torch.device, dtype: torch.dtype) -> str | None:
        from awq_ext.bench.triton_w4a16 import triton_available

        ok, why = triton_available()
        if not ok:
            return why
        if device.type != "cuda":
            return "needs a CUDA GPU (its CPU interpreter is for correctness tests, far too slow to time)"
        return None

    def prepare(self, cw: CaseWeights, dtype: torch.dtype) -> Any:
        from awq_ext.pack.interchange import pack_interchange

        t = pack_interchange(cw.qw, name="bench")
        return {"qweight": t.qweight, "qzeros": t.qzeros, "scales": t.scales, "g": cw.qw.spec.group_size}

    def run(self, x: torch.Tensor, state: Any) -> torch.Tensor:
        from awq_ext.bench.triton_w4a16 import w4a16_matmul

        return w4a16_matmul(x, state["qweight"], state["qzeros"], state["scales"], state["g"])


class TorchReference(Method):
    key = "torch_ref"
    label = "WQLinear backend=torch (reference)"

    def unavailable(self, device: torch.device, dtype: torch.dtype) -> str | None:
        try:
            from awq_ext.nn.wqlinear import WQLinear  # noqa: F401
        except ImportError as exc:
            return f"awq_ext.nn.wqlinear cannot be imported ({exc})"
        return None

    def prepare(self, cw: CaseWeights, dtype: torch.dtype) -> Any:
        from awq_ext.nn.wqlinear import WQLinear

        return WQLinear.from_quantized(cw.qw, None, backend="torch", name="bench").to(cw.qw.q.device)

    def run(self, x: torch.Tensor, state: Any) -> torch.Tensor:
        return state(x)


METHODS: dict[str, Method] = {m.key: m for m in (
    DenseMatmul(), AwqKernel(), GptqReorderKernel(), TorchInt4(), TritonBaseline(), TorchReference())}
GPU_DEFAULT_METHODS = ("dense", "awq", "gptq_r", "torch_int4", "triton")
CPU_DEFAULT_METHODS = ("dense", "torch_ref", "torch_int4", "awq", "gptq_r", "triton")


def parse_methods(spec: str | None, on_gpu: bool) -> list[Method]:
    if spec is None:
        keys: Iterable[str] = GPU_DEFAULT_METHODS if on_gpu else CPU_DEFAULT_METHODS
    else:
        keys = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [k for k in keys if k not in METHODS]
    if unknown:
        raise AWQInputError(f"unknown method(s) {unknown} in --methods; choose from {sorted(METHODS)}")
    keys = list(dict.fromkeys(keys))
    if BASELINE not in keys:
        keys.insert(0, BASELINE)  # every ratio is against it
    return [METHODS[k] for k in keys]


# --------------------------------------------------------------------------- running
def clone_state(obj: Any) -> Any:
    """A deep copy of a method's weight state (tensors cloned), used to rotate buffers past L2."""
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: clone_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_state(v) for v in obj)
    if isinstance(obj, torch.nn.Module):
        return copy.deepcopy(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: clone_state(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    return obj  # ints, strings, functions: shared


def state_bytes(obj: Any) -> int:
    """Bytes of all tensors reachable from a weight state."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    if isinstance(obj, torch.nn.Module):
        return sum(state_bytes(t) for t in list(obj.parameters()) + list(obj.buffers()))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(state_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return 0


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|y - ref| / max|ref|`` in fp32 (inf when y has NaN/Inf)."""
    y = y.float()
    if not torch.isfinite(y).all():
        return float("inf")
    return float((y - ref).abs().max() / ref.abs().max().clamp(min=1e-12))


def tolerance(dtype: torch.dtype) -> float:
    """Max relative error accepted: fp32 accumulation vs fp32 reference; output rounding dominates."""
    return 2e-2 if dtype == torch.bfloat16 else 5e-3


@dataclass
class KernelConfig:
    shapes: Sequence[Shape]
    ms: Sequence[int]
    methods: Sequence[Method]
    dtype: torch.dtype
    device: torch.device
    group_size: int = 128
    timer: TimerConfig = dataclasses.field(default_factory=TimerConfig)
    # fraction of free GPU memory the rotated weight copies of one method may use
    rotation_memory_fraction: float = 0.25


def _memory_budget(device: torch.device, fraction: float) -> int | None:
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * fraction)


def run_kernels(cfg: KernelConfig, log: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """Time every (shape, M, method); returns rows (one dict per case, see :func:`_row`) and notes."""
    if cfg.group_size not in (32, 64, 128):
        raise AWQInputError(f"--group-size {cfg.group_size} unsupported for kernels; use 32, 64 or 128")
    notes: list[str] = []
    rows: list[dict] = []
    timer = make_timer(cfg.device, cfg.timer)
    l2 = l2_cache_bytes(cfg.device)
    runnable: list[Method] = []
    for m in cfg.methods:
        why = m.unavailable(cfg.device, cfg.dtype)
        if why is None:
            runnable.append(m)
        else:
            notes.append(f"{m.key} skipped: {why}")
    for shape in cfg.shapes:
        if shape.k % cfg.group_size or shape.n % 8:
            raise AWQInputError(f"{shape.label}: K must be a multiple of {cfg.group_size} and N of 8")
        cw = make_case_weights(shape, cfg.group_size, cfg.device)
        xs = {m: torch.randn(m, shape.k, device=cfg.device).to(cfg.dtype) for m in cfg.ms}
        refs: dict[tuple[int, bool], torch.Tensor] = {}  # fp32 reference outputs, shared by the methods
        for method in runnable:
            try:
                state = method.prepare(cw, cfg.dtype)
            except BACKEND_ERRORS as exc:
                notes.append(f"{method.key} failed to prepare {shape.label}: {type(exc).__name__}: {exc}")
                continue
            nbytes = state_bytes(state)
            copies = rotation_copies(max(1, nbytes), l2,
                                     memory_budget_bytes=_memory_budget(cfg.device, cfg.rotation_memory_fraction))
            states = [state] + [clone_state(state) for _ in range(copies - 1)]
            for m in cfg.ms:
                x = xs[m]
                case = f"{shape.name}:M{m}:{method.key}"
                try:
                    if (m, method.act_order) not in refs:
                        ref_w = cw.w_ref_act if method.act_order else cw.w_ref
                        refs[(m, method.act_order)] = x.float() @ ref_w.t()
                    with nvtx_range(f"check:{case}", cfg.timer.nvtx):
                        err = relative_error(method.run(x, state), refs[(m, method.act_order)])
                    t = timer.time(case, method.run, [(x, s) for s in states])
                except BACKEND_ERRORS as exc:
                    notes.append(f"{case} failed: {type(exc).__name__}: {exc}")
                    continue
                rows.append(_row(shape, m, method, cfg, t.to_dict(), err, copies))
                log(f"  {case:<28} {t.median_ms:9.4f} ms  rel_err {err:.1e}")
            del states, state
        del cw, xs, refs
        if cfg.device.type == "cuda":
            torch.cuda.empty_cache()
    add_ratios(rows)
    return rows, notes


def _row(shape: Shape, m: int, method: Method, cfg: KernelConfig, timing: dict, err: float, copies: int) -> dict:
    ms = timing["median_ms"]
    nbytes = gemm_bytes(m, shape.n, shape.k, method.weight_bits(cfg.group_size)) + method.extra_bytes(shape)
    flops = gemm_flops(m, shape.n, shape.k)
    return {
        "shape": shape.name, "n": shape.n, "k": shape.k, "m": m, "method": method.key, "label": method.label,
        "dtype": str(cfg.dtype).replace("torch.", ""), "group_size": cfg.group_size,
        **timing,
        "bytes": nbytes, "gbps": achieved_gbps(nbytes, ms), "tflops": achieved_tflops(flops, ms),
        "rel_err": err, "ok": err <= tolerance(cfg.dtype), "rotation_copies": copies,
    }


def add_ratios(rows: list[dict], baseline: str = BASELINE) -> None:
    """Set ``speedup_vs_<baseline>`` (baseline_ms / ms) on every row whose (shape, m, dtype) has a baseline
    row; ``None`` where it has none."""
    base = {(r["shape"], r["m"], r["dtype"]): r["median_ms"] for r in rows if r["method"] == baseline}
    for r in rows:
        b = base.get((r["shape"], r["m"], r["dtype"]))
        r[f"speedup_vs_{baseline}"] = speedup(b, r["median_ms"]) if b is not None else None


def pairwise_ratio(rows: Sequence[dict], faster: str, slower: str) -> dict[tuple[str, int], float]:
    """``{(shape, m): t_slower / t_faster}`` for every case both methods ran (>1: ``faster`` is faster)."""
    t = {(r["shape"], r["m"], r["method"]): r["median_ms"] for r in rows}
    return {(s, m): speedup(t[(s, m, slower)], t[(s, m, faster)])
            for (s, m, meth) in t if meth == faster and (s, m, slower) in t}
