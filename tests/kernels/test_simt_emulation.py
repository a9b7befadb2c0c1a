"""The real kernel source of csrc/ executed on the CPU by a SIMT emulator (tests/kernels/simt_emu/), no GPU.

The kernels (GEMM tiles M16/M32/M64/M128, GPTQ-R, GEMV, dequantize, split-K) are compiled with g++ against an
emulation of the PTX they use (ldmatrix/mma fragment layouts from the PTX ISA, cp.async groups landing
either at issue or only at wait_group, fibers for threads with __syncthreads/warp collectives as barriers),
with every buffer ending at a guard page and shared/output memory poisoned with NaN. Inputs are chosen so
every product and sum is exact (small integers x power-of-two scales): the output must equal
``(x @ W^T)`` rounded once to the dtype, bit for bit (for the GEMV, whose k16 runs add 8 products in fp16/bf16,
the inputs are small enough that those partial sums are exact in the dtype too). Each case runs twice
(split-K must be deterministic and leave its counters at zero). CTAs run one after another or concurrently on
host threads (relaxed atomics, seq_cst fences); the split-K cases also run in a ThreadSanitizer build, which
must report nothing - and must report the race when the split-K fence is removed (slow). The GEMV's documented
half2 accumulation bound (csrc/gemv.cu) is checked on random data. Skips when g++ or the CUDA headers are missing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from awq_ext.pack.kernel_layout import dequantize_kernel_reference, pack_kernel
from tests.kernels.emu_toolchain import DTYPES, EMU, GXX_FLAGS, build_cache, cuda_include

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
SOURCES = ("driver.cpp", "launch_common.cu", "gemm.cu", "gemm_gptq_r.cu", "gemv.cu", "dequant.cu")
OPS = {"gemm": 0, "gemv": 1, "dequant": 2, "gemm_wgmma": 3}


def _emulated_sources(dst: Path, drop_writer_fence: bool = False) -> None:
    """Copy csrc/ with the two rewrites g++ needs; fail loudly if the patterns moved.

    ``drop_writer_fence`` deletes the __threadfence() before the split-K counter bump: a deliberate bug that the
    ThreadSanitizer build must catch."""
    import re

    dst.mkdir(parents=True, exist_ok=True)
    launches = 0
    for p in CSRC.iterdir():
        if not p.is_file() or p.suffix not in (".cu", ".cuh", ".h"):
            continue
        text = p.read_text()
        text, n_smem = re.subn(r"extern __shared__ __align__\(16\) unsigned char smem\[\];",
                               "unsigned char* smem = ::emu::g_cta->dyn;", text)
        text, n_launch = re.subn(r"([\w:]+(?:<[^<>;]*>)?)\s*<<<([^;]*?)>>>\s*\(([^;]*)\);",
                                 r"::emu::launch(\1, \2, \3);", text)
        if p.name == "gemm.cuh":
            assert n_smem == 1, "gemm.cuh: dynamic shared memory declaration changed; update the emulator rewrite"
        if drop_writer_fence and p.name == "splitk.cuh":
            text, n_fence = re.subn(r"\n\s*__threadfence\(\);\s*// publish[^\n]*", "\n", text)
            assert n_fence == 1, "splitk.cuh: the writer-side fence moved; update the negative-test rewrite"
        launches += n_launch
        (dst / p.name).write_text(text)
    assert launches == 5, f"expected 5 kernel launches in csrc/, rewrote {launches}; update the emulator rewrite"
    shutil.copy(EMU / "ptx.cuh", dst / "ptx.cuh")  # the PTX wrappers, emulated
    shutil.copy(EMU / "driver.cpp", dst / "driver.cpp")


def _build(variant: str, extra_flags: tuple[str, ...] = (), drop_writer_fence: bool = False) -> Path:
    gxx, inc = shutil.which("g++"), cuda_include()
    if gxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_fp16.h) to build the emulator")
    h = hashlib.sha256(f"{variant}{extra_flags}{drop_writer_fence}".encode())
    for p in sorted([*CSRC.glob("*.cu*"), *CSRC.glob("*.h"), *EMU.iterdir()]):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    out = build_cache(f"{variant}-{h.hexdigest()[:16]}")
    exe = out / "driver"
    if exe.exists():
        return exe
    src = out / "src"
    _emulated_sources(src, drop_writer_fence)
    flags = [*GXX_FLAGS, *extra_flags, f"-I{inc}", f"-I{src}",
             "-include", str(EMU / "emu_runtime.h"), "-x", "c++"]

    def compile_one(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["nice", "-n", "10", gxx, *flags, "-c", str(src / name), "-o", str(out / f"{name}.o")],
                              capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for r in pool.map(compile_one, SOURCES):
            assert r.returncode == 0, r.stderr[-4000:]
    objs = [str(out / f"{s}.o") for s in SOURCES]
    r = subprocess.run([gxx, "-pthread", *extra_flags, *objs, "-o", str(exe) + ".tmp"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    os.replace(str(exe) + ".tmp", exe)
    return exe


TSAN_FLAGS = ("-fsanitize=thread", "-g", "-Wno-tsan")


@pytest.fixture(scope="module")
def driver() -> Path:
    return _build("plain")


@pytest.fixture(scope="module")
def tsan_driver() -> Path:
    return _build("tsan", TSAN_FLAGS)


def _problem(op: str, dtype: torch.dtype, m: int, n: int, k: int, g: int, gidx: bool, seed: int, exact: bool):
    """x, the packed weight and the weights rounded to the dtype (what every kernel path multiplies with)."""
    gen = torch.Generator().manual_seed(seed)
    ng = k // g
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    zeros = torch.randint(0, 16, (n, ng), generator=gen).float()
    if exact:
        # GEMV runs add 8 products in the dtype: |x| <= 3 (fp16) or 1 (bf16) and scales +-2^0, +-2^-1 keep those
        # partial sums on the dtype's grid (multiples of 1/2 below 1024 resp. 128); the fp32 paths take more.
        sign = torch.randint(0, 2, (n, ng), generator=gen).float() * 2 - 1
        steps = 2 if op == "gemv" else 4
        scales = 2.0 ** -torch.randint(0, steps, (n, ng), generator=gen).float() * sign
        xmax = 1 if (op == "gemv" and dtype == torch.bfloat16) else 3
        x = torch.randint(-xmax, xmax + 1, (m, k), generator=gen).to(dtype)
    else:
        scales = (torch.rand(n, ng, generator=gen) + 0.5) * 0.02
        x = torch.randn(m, k, generator=gen).to(dtype)
    g_idx = (torch.randperm(k, generator=gen) // g).to(torch.int32) if gidx else None
    packed = pack_kernel(q, scales, zeros, g, g_idx=g_idx, dtype=dtype)
    return x, packed, dequantize_kernel_reference(packed).to(dtype)


def _emulate(driver: Path, tmp: Path, op: str, dtype: torch.dtype, m: int, n: int, k: int, g: int, gidx: bool,
             x: torch.Tensor, packed: dict, *, split_k: int = 0, sms: int = 4, late: bool = True, seed: int = 0,
             threads: int = 1) -> tuple[subprocess.CompletedProcess, torch.Tensor | None]:
    """Run one problem through the emulated launcher; the output (None when the driver failed)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "qweight.bin").write_bytes(packed["qweight"].numpy().tobytes())
    (tmp / "scales.bin").write_bytes(packed["scales"].view(torch.int16).numpy().tobytes())
    (tmp / "zeros.bin").write_bytes(packed["zeros"].view(torch.int16).numpy().tobytes())
    if gidx:
        (tmp / "gidx.bin").write_bytes(packed["g_idx"].numpy().tobytes())
    (tmp / "x.bin").write_bytes(x.view(torch.int16).numpy().tobytes())
    case = dict(op=OPS[op], dtype=DTYPES[dtype], m=m, n=n, k=k, group_size=g, gidx=int(gidx), split_k=split_k,
                sms=sms, mode=int(late), seed=seed, reps=2, groups=packed["scales"].shape[0], threads=threads)
    (tmp / "case.txt").write_text("".join(f"{key} {val}\n" for key, val in case.items()))
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1 exitcode=66 report_signal_unsafe=0"}
    r = subprocess.run([str(driver), str(tmp)], capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0:
        return r, None
    shape = (n, k) if op == "dequant" else (m, n)
    out = torch.frombuffer(bytearray((tmp / "out.bin").read_bytes()), dtype=torch.int16).reshape(shape)
    return r, out.view(dtype)


def _run_case(driver: Path, tmp: Path, op: str, dtype: torch.dtype, m: int, n: int, k: int, g: int, gidx: bool,
              *, split_k: int = 0, sms: int = 4, late: bool = True, seed: int = 0, threads: int = 1) -> str:
    """Pack a random exact problem, run it through the emulated launcher, compare bit for bit."""
    x, packed, w = _problem(op, dtype, m, n, k, g, gidx, seed, exact=True)
    r, got = _emulate(driver, tmp, op, dtype, m, n, k, g, gidx, x, packed, split_k=split_k, sms=sms, late=late,
                      seed=seed, threads=threads)
    assert r.returncode == 0, f"{op} m={m} n={n} k={k}: rc {r.returncode}\n{r.stderr[-3000:]}"
    assert "ThreadSanitizer" not in r.stderr, r.stderr[-3000:]
    ref = w if op == "dequant" else (x.double() @ w.double().t()).to(dtype)
    bad = got.view(torch.int16) != ref.view(torch.int16)
    assert not bad.any(), (f"{op} m={m} n={n} k={k} g={g} gidx={gidx} {dtype}: {int(bad.sum())} of {bad.numel()} "
                           f"outputs differ, first at {bad.nonzero()[:5].tolist()}")
    return r.stdout


# (op, dtype, m, n, k, g, gidx, split_k, late): every GEMM tile (M16 <= 16 < M32 <= 32 < M64 <= 64 < M128), odd m at
# each tile edge, n not a multiple of 16 (n_pad tail) or of the 128-column tile, k not a multiple of the
# 64-deep stage (K tail inside a stage), G = 32/64/128, split-K with and without an uneven last split,
# the GEMV at m = 1..8 with its strip tail and split-K, GPTQ-R everywhere, both cp.async timings; a G = 128 split
# whose even share (5 of 10 BK steps) is rounded up to whole groups (6 + 4).
CASES = [
    ("gemv", torch.float16, 1, 136, 1024, 64, False, 0, True),
    ("gemv", torch.bfloat16, 3, 200, 2048, 32, True, 0, False),
    ("gemv", torch.float16, 8, 72, 1024, 128, False, 0, True),
    ("gemv", torch.bfloat16, 5, 40, 160, 32, False, 0, True),
    ("gemm", torch.float16, 1, 40, 96, 32, False, 0, True),
    ("gemm", torch.bfloat16, 15, 136, 160, 32, True, 0, True),
    ("gemm", torch.float16, 17, 264, 640, 128, False, 3, False),
    ("gemm", torch.float16, 33, 136, 1216, 64, False, 4, True),
    ("gemm", torch.bfloat16, 9, 136, 640, 128, False, 2, True),  # 10 BK steps / 2: splits start on G128 groups
    ("gemm", torch.bfloat16, 31, 40, 320, 64, True, 2, True),
    ("gemm", torch.float16, 32, 520, 448, 32, False, 0, True),
    ("gemm", torch.bfloat16, 24, 264, 1280, 128, False, 2, False),
    ("gemm", torch.float16, 64, 136, 256, 32, False, 0, False),
    ("gemm", torch.bfloat16, 65, 136, 192, 64, False, 0, True),
    ("gemm", torch.float16, 129, 40, 640, 128, True, 2, True),
    # the sm_90a wgmma variant (AWQ only): 64-row activation tiles, 128-column weight tiles, m and n tails
    ("gemm_wgmma", torch.float16, 64, 136, 320, 64, False, 0, True),
    ("gemm_wgmma", torch.bfloat16, 33, 264, 640, 128, False, 2, False),
    ("gemm_wgmma", torch.float16, 47, 40, 1216, 32, False, 3, True),
    ("gemm_wgmma", torch.bfloat16, 1, 520, 192, 32, False, 0, True),
    ("gemm_wgmma", torch.float16, 97, 136, 640, 128, False, 0, False),
    ("dequant", torch.float16, 1, 136, 160, 32, False, 0, True),
    ("dequant", torch.bfloat16, 1, 72, 320, 64, True, 0, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{str(c[1])[6:]}-m{c[2]}-n{c[3]}-k{c[4]}-g{c[5]}"
                         f"{'-gidx' if c[6] else ''}{'-split' + str(c[7]) if c[7] else ''}-{'late' if c[8] else 'early'}")
def test_kernel_source_bit_exact(driver, tmp_path, case):
    op, dtype, m, n, k, g, gidx, split_k, late = case
    _run_case(driver, tmp_path, op, dtype, m, n, k, g, gidx, split_k=split_k, late=late, seed=m + n)


def test_split_k_really_splits(driver, tmp_path):
    """The split-K cases above must exercise more than one split (else the reduction goes untested)."""
    assert "splits 2" in _run_case(driver, tmp_path / "gemm", "gemm", torch.float16, 17, 264, 640, 128, False, split_k=3)
    assert "splits 2" in _run_case(driver, tmp_path / "gemv", "gemv", torch.float16, 1, 136, 1024, 64, False, split_k=2)


def test_auto_split_fills_the_sms(driver, tmp_path):
    """split_k=0: the planner derives the split from the device (4 SMs here): 3 strips alone leave one SM idle;
    3 x 4 splits of 8 chunks (the most: a slice takes >= 8 chunks, one per warp) put 3 CTAs on every SM, each SM
    doing the mean 24 chunks: wave efficiency 1."""
    out = _run_case(driver, tmp_path, "gemv", torch.float16, 1, 136, 2048, 64, False, sms=4)
    assert "splits 4 " in out and "wave_efficiency 1.0" in out, out


def test_auto_planned_uneven_split_runs_concurrently(driver, tmp_path):
    """The planner's own pick on 4 SMs for a GEMM of 2 tiles x 19 k-tiles: 2 splits of 10 and 9 (4 CTAs, 1 per SM:
    busiest 10 k-tiles vs a mean of 9.5; one 6-stage M16 CTA keeps 40 KB in flight, enough alone), run with CTAs
    on 4 host threads, bit for bit."""
    out = _run_case(driver, tmp_path, "gemm", torch.bfloat16, 3, 264, 1216, 64, False, sms=4, threads=4, seed=3)
    assert "splits 2 " in out and "wave_efficiency 0.95" in out, out


def test_plans_match_the_static_model_mirror(driver, tmp_path):
    """plan_gemm / plan_gemv as compiled (the launcher's planner) agree with awq_ext/bench/static_launch.py, which
    the static model reports from, on a sweep: every field, doubles bit for bit."""
    from awq_ext.bench import static_launch

    c = static_launch.read_constants(CSRC)
    cases = [(path, m, n, k, g, sms, smem, gidx, req)
             for path in (0, 1, 2) for m in (1, 2, 3, 5, 8, 16, 17, 32, 64, 65, 200)
             for n, k in ((4096, 11008), (11008, 4096), (136, 2048), (40, 320), (28672, 8192))
             for g in ((64, 128) if path >= 1 else (64,))
             for sms, smem in ((132, 233472), (108, 167936), (4, 233472), (0, 0), (46, 102400))
             for gidx in (0, 1) for req in (0, 3)
             if (path == 1 or (path == 0 and m <= 8) or (path == 2 and not gidx)) and (gidx or k % g == 0)]
    (tmp_path / "plans.txt").write_text("".join(" ".join(map(str, cs)) + "\n" for cs in cases))
    r = subprocess.run([str(driver), "--plans", str(tmp_path / "plans.txt")], capture_output=True, text=True,
                       timeout=120, check=True)
    lines = r.stdout.splitlines()
    assert len(lines) == len(cases)
    for (path, m, n, k, g, sms, smem, gidx, req), line in zip(cases, lines):
        launch = (static_launch.gemv_launch(c, m, n, k, sms, smem, bool(gidx), split_request=req) if path == 0 else
                  static_launch.gemm_launch(c, m, n, k, g, sms, smem, bool(gidx), split_request=req, wgmma=path == 2))
        p = launch.plan
        n_pad = -(-n // 16) * 16
        tiles = launch.grid[0] * (launch.grid[1] if path >= 1 else 1)  # GEMM: N x M tiles; GEMV: strips
        want = (p.splits, p.splits * m * n_pad if p.splits > 1 else 0, tiles if p.splits > 1 else 0, p.ctas_per_sm,
                p.wave_efficiency, p.bytes_in_flight_per_sm)
        splits, floats, counters, per_sm, eff, inflight = line.split()
        got = (int(splits), int(floats), int(counters), int(per_sm), float(eff), float(inflight))
        assert got == want, (path, m, n, k, g, sms, smem, gidx, req)


# Split-K cases whose CTAs run concurrently on 4 host threads: the cross-CTA reduction (partials, fence, relaxed
# atomic counter, last CTA sums) under real concurrency, GEMV and GEMM, AWQ and GPTQ-R.
CONCURRENT = [
    ("gemv", torch.float16, 1, 200, 2048, 64, False, 4),
    ("gemv", torch.bfloat16, 3, 136, 1024, 32, True, 2),
    ("gemm", torch.float16, 5, 264, 1024, 128, False, 4),
    ("gemm", torch.bfloat16, 17, 136, 512, 32, True, 2),
    ("gemm", torch.float16, 47, 264, 1216, 64, False, 4),  # 19 k-tiles in slices of 5, 5, 5, 4
    ("gemm_wgmma", torch.bfloat16, 40, 264, 1216, 64, False, 3),
    ("gemv", torch.float16, 7, 72, 2240, 32, False, 3),      # 35 chunks in slices of 12, 12, 11
]


@pytest.mark.parametrize("case", CONCURRENT, ids=lambda c: f"{c[0]}-{str(c[1])[6:]}-m{c[2]}-split{c[7]}")
def test_concurrent_ctas_bit_exact(driver, tmp_path, case):
    op, dtype, m, n, k, g, gidx, split_k = case
    out = _run_case(driver, tmp_path, op, dtype, m, n, k, g, gidx, split_k=split_k, threads=4, seed=m + k)
    assert f"splits {split_k}" in out, out


@pytest.mark.parametrize("case", CONCURRENT[::2], ids=lambda c: f"{c[0]}-{str(c[1])[6:]}-m{c[2]}-split{c[7]}")
def test_split_k_under_thread_sanitizer(tsan_driver, tmp_path, case):
    """0 ThreadSanitizer reports with concurrent CTAs, and still bit for bit."""
    op, dtype, m, n, k, g, gidx, split_k = case
    _run_case(tsan_driver, tmp_path, op, dtype, m, n, k, g, gidx, split_k=split_k, threads=4, seed=m)


@pytest.mark.slow
@pytest.mark.parametrize("case", CONCURRENT[1::2], ids=lambda c: f"{c[0]}-{str(c[1])[6:]}-m{c[2]}-split{c[7]}")
def test_split_k_under_thread_sanitizer_gptq_r(tsan_driver, tmp_path, case):
    op, dtype, m, n, k, g, gidx, split_k = case
    _run_case(tsan_driver, tmp_path, op, dtype, m, n, k, g, gidx, split_k=split_k, threads=4, seed=m)


@pytest.mark.slow
def test_thread_sanitizer_catches_a_missing_fence(tmp_path):
    """Without the writer's __threadfence the reduction races, and the TSan build must say so (the check can fail)."""
    broken = _build("tsan-nofence", TSAN_FLAGS, drop_writer_fence=True)
    x, packed, _ = _problem("gemv", torch.float16, 1, 64, 1024, 64, False, seed=1, exact=True)
    # one strip, 2 splits, 2 host threads: each runs one CTA, so nothing else orders the partials
    r, _ = _emulate(broken, tmp_path, "gemv", torch.float16, 1, 64, 1024, 64, False, x, packed, split_k=2, threads=2)
    assert "ThreadSanitizer: data race" in r.stderr, f"rc {r.returncode}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gidx", [False, True])
def test_gemv_half2_accumulation_within_documented_bound(driver, tmp_path, dtype, gidx):
    """csrc/gemv.cu on random (inexact) data: |y - y_exact| <= gamma_8 S + 2^-23 (K/16 + 16) S + u (|y_exact| +
    gamma_8 S), with S = sum_k |w_k x_k| and w the weights rounded to the dtype as the reference rounds them."""
    m, n, k, g = 3, 136, 2048, 64
    x, packed, w = _problem("gemv", dtype, m, n, k, g, gidx, seed=5, exact=False)
    r, got = _emulate(driver, tmp_path, "gemv", dtype, m, n, k, g, gidx, x, packed, split_k=2)
    assert r.returncode == 0, r.stderr[-3000:]
    u = 2.0**-11 if dtype == torch.float16 else 2.0**-8
    gamma8 = 8 * u / (1 - 8 * u)
    exact = x.double() @ w.double().t()
    s = x.double().abs() @ w.double().abs().t()
    bound = gamma8 * s + 2.0**-23 * (k / 16 + 16) * s + u * (exact.abs() + gamma8 * s)
    err = (got.double() - exact).abs()
    assert torch.isfinite(got.double()).all()
    assert (err <= bound).all(), f"max err / bound = {float((err / bound).max()):.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("m", [2, 5, 7, 16, 24, 32, 63, 127, 255])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_source_sweep(driver, tmp_path, m, dtype):
    op = "gemv" if m <= 8 else "gemm"
    for i, (n, k, g, gidx) in enumerate([(264, 1024, 128, False), (56, 512, 32, True), (40, 320, 64, False)]):
        _run_case(driver, tmp_path / str(i), op, dtype, m, n, k, g, gidx, late=bool(i % 2), seed=m * 7 + i)
        _run_case(driver, tmp_path / f"split{i}", op, dtype, m, n, k, g, gidx, split_k=2, threads=2, seed=m + i)
        if m <= 8:
            _run_case(driver, tmp_path / f"gemm{i}", "gemm", dtype, m, n, k, g, gidx, split_k=4, seed=m)
