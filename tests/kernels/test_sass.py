"""The kernels compile for sm_80 and sm_90 (nvcc only, no torch headers); their SASS holds tensor-core
MMA (HMMA) in the GEMM kernels and no local memory: ptxas reports 0 spill bytes and 0 stack bytes, and
the disassembly has no LDL/STL. Skips when nvcc, cuobjdump or nvdisasm (PyPI ``nvidia-cuda-cuobjdump``, ``nvidia-cuda-nvdisasm``) is absent.

Compiled cubins are cached under the kernel cache directory, keyed by the csrc/ hash, so only the first
run after a source change pays for compilation (about a minute on 2 cores).
"""
from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import site
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from awq_ext.kernels import CSRC_DIR, cache_root, source_hash

ARCHS = ("sm_80", "sm_90")
KERNEL_FILES = ("gemm.cu", "gemm_gptq_r.cu", "gemv.cu", "dequant.cu")


def find_nvcc() -> str | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").exists():
            return str(Path(root, "bin", "nvcc"))
    return shutil.which("nvcc")


def find_tool(name: str) -> str | None:
    """``name`` from the PyPI nvidia-* wheels (site-packages/nvidia/*/bin), else the toolkit's, else PATH."""
    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    for root in roots:
        for hit in sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", name))):
            if os.access(hit, os.X_OK):
                return hit
    nvcc = find_nvcc()
    if nvcc and Path(nvcc).with_name(name).exists():
        return str(Path(nvcc).with_name(name))
    return shutil.which(name)


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
        cmd = [NVCC, "-std=c++17", "-O3", "-cubin", f"-arch={arch}", "-Xptxas", "-v", "-I", str(CSRC_DIR),
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
    expected = 18 if src == "gemm.cu" else 6  # 2 dtypes x 3 tiles x (3 group sizes | GPTQ-R)
    assert len(funcs) == expected, f"{src} {arch}: {len(funcs)} GEMM kernels, expected {expected}"
    for name, body in funcs.items():
        n_mma = len(re.findall(r"\bHMMA\.16816\.F32", body))
        assert n_mma > 0, f"{name} ({arch}) has no HMMA.16816.F32 (tensor-core mma)"
        assert "LDSM" in body, f"{name} ({arch}) has no LDSM (ldmatrix)"
        assert "LDGSTS" in body, f"{name} ({arch}) has no LDGSTS (cp.async)"
        assert "LOP3" in body, f"{name} ({arch}) has no LOP3 (magic-number dequant)"
