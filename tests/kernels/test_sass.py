"""The kernels compile for sm_80 and sm_90 (nvcc only, no torch headers); their SASS holds tensor-core
MMA (HMMA) in the GEMM kernels and no local memory: ptxas reports 0 spill bytes and 0 stack bytes, and
the disassembly has no LDL/STL. The hot loops show the bandwidth-oriented design: the GEMV multiplies in
fp16x2/bf16x2 (HFMA2, no fp32 FFMA) on 16-byte weight loads, and the GEMM main loop takes its B fragments
(and A) by ldmatrix.x4 - exactly 4 MT + NT16 LDSM per stage, no 32-bit shared loads beyond the scale/zero
pairs. Skips when nvcc, cuobjdump or nvdisasm (PyPI ``nvidia-cuda-cuobjdump``, ``nvidia-cuda-nvdisasm``) is absent.

Compiled cubins are cached under the kernel cache directory, keyed by the csrc/ hash, so only the first
run after a source change pays for compilation (about a minute on 2 cores).
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from awq_ext.bench.sass_build import find_nvcc, find_tool, nvcc_target
from awq_ext.kernels import CSRC_DIR, cache_root, source_hash

ARCHS = ("sm_80", "sm_90")
KERNEL_FILES = ("gemm.cu", "gemm_gptq_r.cu", "gemv.cu", "dequant.cu")


NVCC = find_nvcc()
CUOBJDUMP = find_tool("cuobjdump")
NVDISASM = find_tool("nvdisasm")  # cuobjdump -sass runs nvdisasm
pytestmark = [
    pytest.mark.skipif(NVCC is None, reason="nvcc not found: the CUDA toolkit is needed to compile the kernels"),
    pytest.mark.skipif(CUOBJDUMP is None, reason="cuobjdump not found: pip install nvidia-cuda-cuobjdump"),
    pytest.mark.skipif(NVDISASM is None, reason="nvdisasm not found (cuobjdump -sass needs it): pip install nvidia-cuda-nvdisasm"),
]


def _compile(src: str, arch: str, out_dir: Path) -> tuple[Path, str]:
    cubin = out_dir / f"{Path(src).stem}.{arch}.cubin"
    log = out_dir / f"{Path(src).stem}.{arch}.ptxas.txt"
    if not (cubin.exists() and log.exists()):
        cmd = [NVCC, "-std=c++17", "-O3", "-cubin", f"-arch={nvcc_target(arch)}", "-Xptxas", "-v", "-I", str(CSRC_DIR),
               str(CSRC_DIR / src), "-o", str(cubin) + ".tmp"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AssertionError(f"nvcc failed for {src} ({arch}):\n{res.stderr[-4000:]}")
        log.write_text(res.stderr)
        os.replace(str(cubin) + ".tmp", cubin)
    return cubin, log.read_text()


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, str], tuple[Path, str]]:
    out_dir = cache_root() / "sass" / source_hash()
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(src, arch) for src in KERNEL_FILES for arch in ARCHS]
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda j: _compile(j[0], j[1], out_dir), jobs))
    return dict(zip(jobs, results))


def _ptxas_functions(log: str) -> dict[str, tuple[int, int, int]]:
    """function -> (stack bytes, spill store bytes, spill load bytes) from ptxas -v."""
    out = {}
    for m in re.finditer(
        r"Function properties for (\S+)\s*\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
        log,
    ):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    return out


@functools.lru_cache(maxsize=None)
def _sass_functions(cubin: Path) -> dict[str, str]:
    env = {**os.environ, "NVDISASM_PATH": str(Path(NVDISASM).parent)}
    res = subprocess.run([CUOBJDUMP, "-sass", str(cubin)], capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise AssertionError(f"cuobjdump -sass {cubin.name} failed: {res.stderr[-2000:]}")
    parts = re.split(r"\n\s*Function : (\S+)\n", "\n" + res.stdout)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", KERNEL_FILES)
def test_no_spills_or_stack(built, src, arch):
    _, log = built[(src, arch)]
    funcs = _ptxas_functions(log)
    assert funcs, f"ptxas -v reported no kernels for {src} ({arch})"
    bad = {f: v for f, v in funcs.items() if v != (0, 0, 0)}
    assert not bad, f"local memory use (stack, spill stores, spill loads) in {src} {arch}: {bad}"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", KERNEL_FILES)
def test_sass_has_no_local_memory(built, src, arch):
    cubin, _ = built[(src, arch)]
    funcs = _sass_functions(cubin)
    assert funcs, f"cuobjdump found no functions in {cubin.name}"
    for name, body in funcs.items():
        assert not re.search(r"\b(LDL|STL)\b", body), f"{name} ({arch}) touches local memory"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", ("gemm.cu", "gemm_gptq_r.cu"))
def test_gemm_kernels_use_tensor_cores(built, src, arch):
    cubin, _ = built[(src, arch)]
    funcs = {n: b for n, b in _sass_functions(cubin).items() if "w4a16_gemm_kernel" in n}
    # 2 dtypes x (4 mma.sync tiles + the wgmma tile) x 3 group sizes | 2 dtypes x 4 tiles (GPTQ-R)
    expected = 30 if src == "gemm.cu" else 8
    assert len(funcs) == expected, f"{src} {arch}: {len(funcs)} GEMM kernels, expected {expected}"
    for name, body in funcs.items():
        if _wgmma(name):  # sm_90a: HGMMA with the weights from registers; elsewhere a stub that is never launched
            if arch == "sm_90":
                assert re.search(r"\bHGMMA\.64x64x16\.F32(\.BF16)? R\d+, R\d+, gdesc", body), f"{name}: no register-A HGMMA"
                assert "HMMA" not in body, f"{name} ({arch}) mixes mma.sync into the wgmma variant"
            continue
        n_mma = len(re.findall(r"\bHMMA\.16816\.F32", body))
        assert n_mma > 0, f"{name} ({arch}) has no HMMA.16816.F32 (tensor-core mma)"
        assert "LDSM" in body, f"{name} ({arch}) has no LDSM (ldmatrix)"
        assert "LDGSTS" in body, f"{name} ({arch}) has no LDGSTS (cp.async)"
        assert "LOP3" in body, f"{name} ({arch}) has no LOP3 (magic-number dequant)"


# ---- hot loops ---------------------------------------------------------------------------------------------

_INSN = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def main_loop(name: str, body: str) -> list[tuple[str, str]]:
    """(opcode, operands) of the largest backward-branch region of a kernel: its main loop. Fails loudly."""
    insns = [(int(a, 16), op, rest) for a, op, rest in _INSN.findall(body)]
    best: tuple[int, int, int] | None = None
    for addr, op, rest in insns:
        target = re.search(r"0x([0-9a-f]+)", rest) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < addr:
            lo = int(target.group(1), 16)
            size = sum(1 for a, _, _ in insns if lo <= a <= addr)
            if best is None or size > best[0]:
                best = (size, lo, addr)
    assert insns, f"{name}: no SASS instructions parsed"
    assert best is not None, f"{name}: no backward branch, cannot find the main loop"
    return [(op, rest) for a, op, rest in insns if best[1] <= a <= best[2]]


def _tile(name: str) -> tuple[int, int]:
    """(MT, NT16) of a mangled GEMM kernel name: GemmTile<BM, BN, WARPS_M, WARPS_N, ...>."""
    m = re.search(r"GemmTileILi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)E", name)
    assert m, f"cannot read the tile of {name}"
    bm, bn, wm, wn = map(int, m.groups())
    return bm // wm // 16, bn // wn // 16


def _wgmma(name: str) -> bool:
    """Whether a mangled GEMM kernel name is the wgmma variant: GemmTile<..., MIN_CTAS, WGMMA = true>."""
    return re.search(r"GemmTileILi\d+ELi\d+ELi\d+ELi\d+ELi\d+ELi\d+ELb1EE", name) is not None


def _stages(name: str) -> int:
    """STAGES of a mangled GEMM kernel name: GemmTile<BM, BN, WARPS_M, WARPS_N, STAGES, MIN_CTAS>."""
    m = re.search(r"GemmTileILi\d+ELi\d+ELi\d+ELi\d+ELi(\d+)ELi\d+E", name)
    assert m, f"cannot read the stages of {name}"
    return int(m.group(1))


@pytest.mark.parametrize("arch", ARCHS)
def test_gemv_hot_loop_is_half2(built, arch):
    cubin, _ = built[("gemv.cu", arch)]
    funcs = {n: b for n, b in _sass_functions(cubin).items() if "w4a16_gemv_kernel" in n}
    assert len(funcs) == 32, f"gemv.cu {arch}: {len(funcs)} GEMV kernels, expected 32 (2 dtypes x 4 m x 4 variants)"
    for name, body in funcs.items():
        ops = [op for op, _ in main_loop(name, body)]
        hfma2 = sum(op.startswith("HFMA2") for op in ops)
        assert hfma2 >= 64, f"{name} ({arch}): {hfma2} HFMA2 in the main loop, expected >= 64 (4 k16 rows x 16)"
        assert not any(op.startswith("FFMA") for op in ops), f"{name} ({arch}): fp32 FFMA in the GEMV main loop"
        wide = sum(op.startswith("LDG") and ".128" in op for op in ops)
        assert wide >= 4, f"{name} ({arch}): {wide} 16-byte global loads in the main loop, expected >= 4"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("src", ("gemm.cu", "gemm_gptq_r.cu"))
def test_gemm_main_loop_takes_16_byte_fragments(built, src, arch):
    cubin, _ = built[(src, arch)]
    funcs = {n: b for n, b in _sass_functions(cubin).items() if "w4a16_gemm_kernel" in n}
    assert funcs
    for name, body in funcs.items():
        wg = _wgmma(name)
        if wg and arch != "sm_90":
            continue  # the stub of the sm_90a-only variant
        mt, nt16 = _tile(name)
        stages = _stages(name)
        # the AWQ loop body is one turn of the STAGES-slot ring (gemm.cuh), the GPTQ-R one a single BK step
        steps = stages if src == "gemm.cu" else 1
        loop = main_loop(name, body)
        ldsm = sum(op.startswith("LDSM") for op, _ in loop)
        want_ldsm = steps * (nt16 if wg else 4 * mt + nt16)  # wgmma reads the activations itself, by descriptor
        assert ldsm == want_ldsm, f"{name} ({arch}): {ldsm} LDSM per iteration, expected {want_ldsm}"
        mma = sum(op.startswith("HGMMA" if wg else "HMMA") for op, _ in loop)
        want_mma = steps * 4 * (nt16 if wg else 2 * nt16 * mt)  # per k16 step: one wgmma per m64 weight tile
        assert mma == want_mma, f"{name} ({arch}): {mma} MMA instructions per iteration, expected {want_mma}"
        if src == "gemm.cu":  # 32-bit shared loads: only the scale/zero pairs (2 per n16 block and group)
            g = int(re.search(r"EELi(\d+)ELb0E", name).group(1))
            slots = 2 if g == 32 else 1
            # a group of G > 64 spans G / 64 steps; its pairs are loaded once when the turn holds whole groups
            builds = stages // (g // 64) if g > 64 and stages % (g // 64) == 0 else stages
            lds32 = sum(op == "LDS" and not rest.strip().startswith("RZ") for op, rest in loop)
            assert lds32 <= 2 * nt16 * slots * builds, f"{name} ({arch}): {lds32} 32-bit LDS in the main loop"
        assert any(op.startswith("LDGSTS") for op, _ in loop), f"{name} ({arch}): no cp.async in the main loop"