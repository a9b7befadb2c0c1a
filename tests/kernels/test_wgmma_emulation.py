"""The SIMT emulator's wgmma (sm_90 warpgroup MMA), on a probe kernel (tests/kernels/simt_emu/wgmma_probe.cpp).

One warpgroup computes D[64 x 64] = A x W^T in four k16 wgmma.mma_async steps, A from registers in the PTX
m64nNk16 fragment layout, B from shared memory through 128B-swizzle K-major descriptors, with fence / commit /
wait and fence.proxy.async after cp.async. Inputs are small integers times powers of two, so every product and
partial sum is exact in float32: D must equal the double reference bit for bit, for fp16 and bf16, in both
cp.async timings. The probe's deliberate bugs must be exposed: reading D before wgmma.wait_group, rewriting the
tile while the wgmma is in flight (wrong results), and (EMU ERROR) a missing fence.proxy.async or wgmma.fence, a
divergent or partly exited warpgroup, an unsupported swizzle mode, a start address outside a swizzle atom's row 0
(also a tile on a 512-byte boundary), a wgmma issued before its cp.async was waited for, an accumulator written
while in flight. "chain_waits" keeps one group in flight across waits (wgmma.wait_group 1), "base1024" puts the
tile at a non-zero 1024-aligned offset, "plain_store" writes the tile with plain stores (then fenced; without the
fence it must be reported). Skips when g++ or the CUDA headers are missing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.kernels.emu_toolchain import DTYPES, EMU, GXX_FLAGS, build_cache, cuda_include

VARIANTS = {"ok": 0, "read_early": 1, "overwrite": 2, "no_proxy_fence": 3, "no_wgmma_fence": 4, "divergent": 5,
            "exited": 6, "swizzle64": 7, "row1_start": 8, "no_cp_wait": 9, "chain_waits": 10, "base1024": 11,
            "base512": 12, "write_d": 13, "plain_store": 14, "plain_no_fence": 15}


@pytest.fixture(scope="module")
def probe() -> Path:
    gxx, inc = shutil.which("g++"), cuda_include()
    if gxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_fp16.h) to build the emulator")
    h = hashlib.sha256()
    for name in ("emu_runtime.h", "ptx.cuh", "wgmma_probe.cpp"):
        h.update(name.encode() + b"\0" + (EMU / name).read_bytes())
    out = build_cache(f"wgmma-{h.hexdigest()[:16]}")
    exe = out / "wgmma_probe"
    if not exe.exists():
        out.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["nice", "-n", "10", gxx, *GXX_FLAGS, f"-I{inc}", f"-I{EMU}",
                            "-include", str(EMU / "emu_runtime.h"), "-x", "c++", str(EMU / "wgmma_probe.cpp"),
                            "-o", str(exe) + ".tmp"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-4000:]
        os.replace(str(exe) + ".tmp", exe)
    return exe


def _inputs(dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (m, k) and W (n, k), 64 x 64: integers in [-8, 8] times 2^-2..2^0 (exact in both dtypes and every fp32 sum)."""
    gen = torch.Generator().manual_seed(seed)
    def one() -> torch.Tensor:
        ints = torch.randint(-8, 9, (64, 64), generator=gen).double()
        return (ints * 2.0 ** -torch.randint(0, 3, (64, 64), generator=gen)).to(dtype)
    return one(), one()


def _run(probe: Path, tmp: Path, dtype: torch.dtype, variant: str, *, late: bool = True, seed: int = 0):
    a, w = _inputs(dtype, seed)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "a.bin").write_bytes(a.view(torch.int16).numpy().tobytes())
    (tmp / "w.bin").write_bytes(w.view(torch.int16).numpy().tobytes())
    r = subprocess.run([str(probe), str(tmp), str(DTYPES[dtype]), str(VARIANTS[variant]), str(int(late)), str(seed)],
                       capture_output=True, text=True, timeout=120)
    ref = (a.double() @ w.double().t()).numpy()
    got = np.fromfile(tmp / "d.bin", dtype=np.float32).reshape(64, 64) if r.returncode == 0 else None
    return r, got, ref


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("late", [True, False], ids=["late", "early"])
@pytest.mark.parametrize("variant", ["ok", "chain_waits", "base1024", "plain_store"])
def test_wgmma_matches_reference(probe, tmp_path, dtype, late, variant):
    r, got, ref = _run(probe, tmp_path, dtype, variant, late=late, seed=3 + int(late))
    assert r.returncode == 0, r.stderr[-3000:]
    assert ref.any() and np.abs(ref).max() < 2**20
    bad = got.astype(np.float64) != ref
    assert not bad.any(), f"{int(bad.sum())} of 4096 differ, first at {np.argwhere(bad)[:5].tolist()}"


@pytest.mark.parametrize("variant", ["read_early", "overwrite"])
def test_using_results_or_tile_before_the_wait_goes_wrong(probe, tmp_path, variant):
    """D read before wgmma.wait_group is poisoned; a tile rewritten (zeros, properly fenced) before the wait is what
    the wgmma reads: the deferred read of B is what the emulator models."""
    r, got, ref = _run(probe, tmp_path, torch.float16, variant)
    assert r.returncode == 0, r.stderr[-3000:]
    if variant == "read_early":
        assert np.isnan(got).all()
    else:
        assert (got == 0).all() and ref.any()


@pytest.mark.parametrize("variant, message", [
    ("no_proxy_fence", "fence.proxy.async"),
    ("no_wgmma_fence", "has not executed wgmma.fence"),
    ("divergent", "divergent warpgroup collective"),
    ("exited", "exited"),
    ("swizzle64", "swizzle mode 2 not emulated"),
    ("row1_start", "not in row 0 of a 1024-byte-aligned swizzle atom"),
    ("no_cp_wait", "cp.async has not been waited for"),
    ("base512", "not in row 0 of a 1024-byte-aligned swizzle atom"),
    ("write_d", "wrote accumulator register d5 while its wgmma was in flight"),
    ("plain_no_fence", "stored to by the generic proxy after the last fence.proxy.async"),
])
def test_wgmma_misuse_is_reported(probe, tmp_path, variant, message):
    r, _, _ = _run(probe, tmp_path, torch.bfloat16, variant)
    assert r.returncode == 3 and "EMU ERROR" in r.stderr and message in r.stderr, \
        f"rc {r.returncode}\n{r.stderr[-2000:]}"
