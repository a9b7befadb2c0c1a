"""Kernel benchmark plumbing on CPU: parsing, weights, methods' correctness, ratios, a tiny sweep."""
from __future__ import annotations

import pytest
import torch

from awq_ext.bench import kernels as kb
from awq_ext.bench.timing import TimerConfig
from awq_ext.errors import AWQInputError

CPU = torch.device("cpu")


def test_parse_shapes():
    assert [s.name for s in kb.parse_shapes("7b", True)] == ["7b.qkv", "7b.o", "7b.up", "7b.down"]
    up = kb.parse_shapes("7b.up", True)[0]
    assert (up.k, up.n) == (4096, 11008)  # the DESIGN §6 headline shape
    assert kb.SHAPES["70b.qkv"].n == 8192 + 2 * 1024  # GQA: 8 KV heads of 128
    custom = kb.parse_shapes("256x128", False)[0]
    assert (custom.k, custom.n) == (256, 128)
    assert len(kb.parse_shapes(None, True)) == 12
    assert kb.parse_shapes(None, False) == list(kb.CPU_SHAPES)
    assert len(kb.parse_shapes("7b,7b.up", True)) == 4  # deduplicated
    with pytest.raises(AWQInputError, match="unknown shape"):
        kb.parse_shapes("7x", True)


def test_parse_ms_and_methods():
    assert kb.parse_ms(None, True) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
    assert kb.parse_ms("1, 3", True) == [1, 3]
    for bad in ("0", "a", ""):
        with pytest.raises(AWQInputError):
            kb.parse_ms(bad, True)
    assert [m.key for m in kb.parse_methods("awq", True)] == ["dense", "awq"]  # baseline always added
    with pytest.raises(AWQInputError, match="unknown method"):
        kb.parse_methods("cutlass", True)


def test_case_weights_natural_and_act_order():
    cw = kb.make_case_weights(kb.Shape("t", 16, 256), 64, CPU)
    assert torch.equal(cw.w_ref, cw.qw.dequantize())
    assert torch.allclose(cw.w_ref_act, cw.qw_act.dequantize())
    g = cw.qw_act.g_idx
    assert g.dtype == torch.int32 and sorted(torch.bincount(g.long()).tolist()) == [64] * 4
    assert not torch.equal(g.long(), torch.arange(256) // 64)  # really reordered
    # scales hold exactly what fp16 can store (what the interchange checkpoint keeps)
    assert torch.equal(cw.qw.scales, cw.qw.scales.half().float())
    # both quantizations approximate the same random weight
    assert (cw.w_ref - cw.w_ref_act).abs().max() < 0.02


@pytest.mark.parametrize("key", ["dense", "torch_int4", "torch_ref"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_methods_match_reference(key, dtype):
    method = kb.METHODS[key]
    if method.unavailable(CPU, dtype):
        pytest.skip(method.unavailable(CPU, dtype))
    cw = kb.make_case_weights(kb.Shape("t", 64, 256), 128, CPU)
    x = torch.randn(5, 256).to(dtype)
    y = method.run(x, method.prepare(cw, dtype))
    assert y.shape == (5, 64) and y.dtype == dtype
    assert kb.relative_error(y, x.float() @ cw.w_ref.t()) <= kb.tolerance(dtype)


def test_relative_error_flags_wrong_outputs():
    ref = torch.ones(2, 2)
    assert kb.relative_error(ref.clone(), ref) == 0.0
    assert kb.relative_error(ref * 1.1, ref) == pytest.approx(0.1)
    assert kb.relative_error(torch.full((2, 2), float("nan")), ref) == float("inf")


def test_clone_state_is_deep_and_counts_bytes():
    state = {"w": torch.zeros(4, 4), "meta": (torch.ones(2, dtype=torch.int32), 7), "fn": print}
    c = kb.clone_state(state)
    c["w"].add_(1)
    assert state["w"].sum() == 0 and c["fn"] is print and c["meta"][1] == 7
    assert kb.state_bytes(state) == 4 * 4 * 4 + 2 * 4


def _row(shape, m, method, ms):
    return {"shape": shape, "m": m, "method": method, "dtype": "float16", "median_ms": ms}


def test_add_ratios_and_pairwise():
    rows = [_row("a", 1, "dense", 4.0), _row("a", 1, "awq", 1.0), _row("a", 1, "gptq_r", 2.0),
            _row("a", 16, "awq", 3.0)]
    kb.add_ratios(rows)
    assert [r["speedup_vs_dense"] for r in rows] == [1.0, 4.0, 2.0, None]  # no baseline at M=16
    assert kb.pairwise_ratio(rows, "awq", "gptq_r") == {("a", 1): 2.0}


def test_run_kernels_tiny_sweep_on_cpu():
    cfg = kb.KernelConfig(shapes=[kb.Shape("t", 64, 256)], ms=[1, 3], methods=kb.parse_methods(None, False),
                          dtype=torch.float16, device=CPU, timer=TimerConfig(warmup=1, iters=2))
    logs: list[str] = []
    rows, notes = kb.run_kernels(cfg, log=logs.append)
    keys = {r["method"] for r in rows}
    assert {"dense", "torch_ref"} <= keys
    assert not keys & {"awq", "gptq_r", "triton"}  # CUDA-only: skipped with a note, not faked
    assert any(n.startswith("awq skipped") for n in notes)
    assert all(r["ok"] for r in rows) and len(logs) == len(rows)
    for r in rows:
        assert r["median_ms"] > 0 and r["gbps"] > 0 and r["speedup_vs_dense"] > 0
    dense = [r for r in rows if r["method"] == "dense"]
    assert all(r["speedup_vs_dense"] == 1.0 for r in dense)


def test_run_kernels_rejects_bad_group_size():
    cfg = kb.KernelConfig(shapes=[kb.Shape("t", 64, 256)], ms=[1], methods=[kb.METHODS["dense"]],
                          dtype=torch.float16, device=CPU, group_size=96)
    with pytest.raises(AWQInputError):
        kb.run_kernels(cfg)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_methods_are_correct_on_a_small_shape():
    dev = torch.device("cuda")
    cfg = kb.KernelConfig(shapes=[kb.Shape("t", 512, 1024)], ms=[1, 17, 128],
                          methods=kb.parse_methods(None, True), dtype=torch.float16, device=dev,
                          timer=TimerConfig(warmup=1, iters=3))
    rows, notes = kb.run_kernels(cfg, log=lambda s: None)
    bad = [(r["method"], r["m"], r["rel_err"]) for r in rows if not r["ok"]]
    assert not bad, (bad, notes)


@pytest.mark.parametrize("key", ["awq", "gptq_r"])
def test_cuda_methods_prepare_the_same_weights_on_cpu(key):
    """The CUDA kernels cannot run here, but the state they would be handed can be checked: it must
    dequantize to the reference weights (natural order for awq, act order with g_idx for gptq_r)."""
    kl = pytest.importorskip("awq_ext.pack.kernel_layout")
    cw = kb.make_case_weights(kb.Shape("t", 64, 256), 128, CPU)
    state = kb.METHODS[key].prepare(cw, torch.float16)
    assert (state["n"], state["k"], state["g"]) == (64, 256, 128)
    ref = cw.w_ref_act if kb.METHODS[key].act_order else cw.w_ref
    got = kl.dequantize_kernel_reference(state["packed"]).float()[:64, :256]
    assert torch.equal(got, ref)
