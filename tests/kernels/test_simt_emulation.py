"""The real kernel source of csrc/ executed on the CPU by a SIMT emulator (tests/kernels/simt_emu/), no GPU.

The kernels (GEMM tiles M16/M64/M128, GPTQ-R, GEMV, dequantize, split-K) are compiled with g++ against an
emulation of the PTX they use (ldmatrix/mma fragment layouts from the PTX ISA, cp.async groups landing
either at issue or only at wait_group, fibers for threads with __syncthreads/warp collectives as barriers),
with every buffer ending at a guard page and shared/output memory poisoned with NaN. Inputs are chosen so
every product and sum is exact (small integers x power-of-two scales): the output must equal
``(x @ W^T)`` rounded once to the dtype, bit for bit. Each case runs twice (split-K must be deterministic
and leave its counters at zero). Skips when g++ or the CUDA headers are missing.
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

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
EMU = Path(__file__).resolve().parent / "simt_emu"
SOURCES = ("driver.cpp", "launch_common.cu", "gemm.cu", "gemm_gptq_r.cu", "gemv.cu", "dequant.cu")
OPS = {"gemm": 0, "gemv": 1, "dequant": 2}
DTYPES = {torch.float16: 0, torch.bfloat16: 1}


def _cuda_include() -> Path | None:
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda_fp16.h").exists():
            return Path(cand) / "include"
    return None


def _emulated_sources(dst: Path) -> None:
    """Copy csrc/ with the two rewrites g++ needs; fail loudly if the patterns moved."""
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
        launches += n_launch
        (dst / p.name).write_text(text)
    assert launches == 4, f"expected 4 kernel launches in csrc/, rewrote {launches}; update the emulator rewrite"
    shutil.copy(EMU / "ptx.cuh", dst / "ptx.cuh")  # the PTX wrappers, emulated
    shutil.copy(EMU / "driver.cpp", dst / "driver.cpp")


@pytest.fixture(scope="module")
def driver() -> Path:
    gxx, inc = shutil.which("g++"), _cuda_include()
    if gxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_fp16.h) to build the emulator")
    h = hashlib.sha256()
    for p in sorted([*CSRC.glob("*.cu*"), *CSRC.glob("*.h"), *EMU.iterdir()]):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    base = Path(os.environ.get("AWQ_EXT_CACHE_DIR") or Path.home() / ".cache" / "awq_ext")
    out = base / "simt_emu" / h.hexdigest()[:16]
    exe = out / "driver"
    if exe.exists():
        return exe
    src = out / "src"
    _emulated_sources(src)
    flags = ["-std=c++17", "-O1", "-fno-strict-aliasing", f"-I{inc}", f"-I{src}", "-include",
             str(EMU / "emu_runtime.h"), "-x", "c++"]

    def compile_one(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["nice", "-n", "10", gxx, *flags, "-c", str(src / name), "-o", str(out / f"{name}.o")],
                              capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for r in pool.map(compile_one, SOURCES):
            assert r.returncode == 0, r.stderr[-4000:]
    r = subprocess.run([gxx, *[str(out / f"{s}.o") for s in SOURCES], "-o", str(exe) + ".tmp"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    os.replace(str(exe) + ".tmp", exe)
    return exe


def _run_case(driver: Path, tmp: Path, op: str, dtype: torch.dtype, m: int, n: int, k: int, g: int, gidx: bool,
              *, split_k: int = 0, sms: int = 4, late: bool = True, seed: int = 0) -> str:
    """Pack a random exact problem, run it through the emulated launcher, compare bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    ng = k // g
    q = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.int32)
    zeros = torch.randint(0, 16, (n, ng), generator=gen).float()
    sign = torch.randint(0, 2, (n, ng), generator=gen).float() * 2 - 1
    scales = 2.0 ** -torch.randint(0, 4, (n, ng), generator=gen).float() * sign
    x = torch.randint(-3, 4, (m, k), generator=gen).to(dtype)
    g_idx = (torch.randperm(k, generator=gen) // g).to(torch.int32) if gidx else None
    packed = pack_kernel(q, scales, zeros, g, g_idx=g_idx, dtype=dtype)
    w = dequantize_kernel_reference(packed).to(dtype)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "qweight.bin").write_bytes(packed["qweight"].numpy().tobytes())
    (tmp / "scales.bin").write_bytes(packed["scales"].view(torch.int16).numpy().tobytes())
    (tmp / "zeros.bin").write_bytes(packed["zeros"].view(torch.int16).numpy().tobytes())
    if gidx:
        (tmp / "gidx.bin").write_bytes(packed["g_idx"].numpy().tobytes())
    (tmp / "x.bin").write_bytes(x.view(torch.int16).numpy().tobytes())
    case = dict(op=OPS[op], dtype=DTYPES[dtype], m=m, n=n, k=k, group_size=g, gidx=int(gidx), split_k=split_k,
                sms=sms, mode=int(late), seed=seed, reps=2, groups=packed["scales"].shape[0])
    (tmp / "case.txt").write_text("".join(f"{key} {val}\n" for key, val in case.items()))
    r = subprocess.run([str(driver), str(tmp)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{op} m={m} n={n} k={k}: rc {r.returncode}\n{r.stderr[-3000:]}"
    ref = w if op == "dequant" else (x.double() @ w.double().t()).to(dtype)
    got = torch.frombuffer(bytearray((tmp / "out.bin").read_bytes()), dtype=torch.int16).reshape(ref.shape)
    bad = got != ref.view(torch.int16)
    assert not bad.any(), (f"{op} m={m} n={n} k={k} g={g} gidx={gidx} {dtype}: {int(bad.sum())} of {bad.numel()} "
                           f"outputs differ, first at {bad.nonzero()[:5].tolist()}")
    return r.stdout


# (op, dtype, m, n, k, g, gidx, split_k, late): every GEMM tile (M16 <= 16 < M64 <= 64 < M128), odd m at
# each tile edge, n not a multiple of 16 (n_pad tail) or of the 128-column tile, k not a multiple of the
# 64-deep stage (K tail inside a stage), G = 32/64/128, split-K with and without an uneven last split,
# the GEMV at m = 1..8 with its strip tail and split-K, GPTQ-R everywhere, both cp.async timings.
CASES = [
    ("gemv", torch.float16, 1, 136, 1024, 64, False, 0, True),
    ("gemv", torch.bfloat16, 3, 200, 2048, 32, True, 0, False),
    ("gemv", torch.float16, 8, 72, 1024, 128, False, 0, True),
    ("gemv", torch.bfloat16, 5, 40, 160, 32, False, 0, True),
    ("gemm", torch.float16, 1, 40, 96, 32, False, 0, True),
    ("gemm", torch.bfloat16, 15, 136, 160, 32, True, 0, True),
    ("gemm", torch.float16, 17, 264, 640, 128, False, 3, False),
    ("gemm", torch.bfloat16, 31, 40, 320, 64, True, 2, True),
    ("gemm", torch.float16, 64, 136, 256, 32, False, 0, False),
    ("gemm", torch.bfloat16, 65, 136, 192, 64, False, 0, True),
    ("gemm", torch.float16, 129, 40, 640, 128, True, 2, True),
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
    assert "splits 2" in _run_case(driver, tmp_path / "gemv", "gemv", torch.float16, 1, 136, 1024, 64, False, sms=8)


@pytest.mark.slow
@pytest.mark.parametrize("m", [2, 5, 7, 16, 63, 127, 255])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kernel_source_sweep(driver, tmp_path, m, dtype):
    op = "gemv" if m <= 8 else "gemm"
    for i, (n, k, g, gidx) in enumerate([(264, 1024, 128, False), (56, 512, 32, True)]):
        _run_case(driver, tmp_path / str(i), op, dtype, m, n, k, g, gidx, late=bool(i), seed=m * 7 + i)
        if m <= 8:
            _run_case(driver, tmp_path / f"gemm{i}", "gemm", dtype, m, n, k, g, gidx, split_k=4, seed=m)
