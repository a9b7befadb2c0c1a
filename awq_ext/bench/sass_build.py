"""Compile CUDA sources to cubins and read them back as SASS, with no GPU and no torch.

Tools: ``nvcc`` (CUDA 12.x/13.x), and ``cuobjdump`` / ``nvdisasm`` from the PyPI wheels
``nvidia-cuda-cuobjdump`` / ``nvidia-cuda-nvdisasm`` (or the toolkit's, or PATH). Cubins, their
``ptxas -v`` logs, disassembly and resource usage are cached in a directory the caller names (keyed by a
hash of the sources and flags), so only the first run after a source change pays for nvcc.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from awq_ext.errors import KernelUnavailableError

NVCC_FLAGS = ("-std=c++17", "-O3", "-Xptxas", "-v")


def find_nvcc() -> str | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").exists():
            return str(Path(root, "bin", "nvcc"))
    return shutil.which("nvcc")


def find_tool(name: str) -> str | None:
    """``name`` from the PyPI nvidia-* wheels (site-packages/nvidia/*/bin), else beside nvcc, else PATH."""
    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    for root in roots:
        for hit in sorted(glob.glob(os.path.join(root, "nvidia", "*", "bin", name))):
            if os.access(hit, os.X_OK):
                return hit
    nvcc = find_nvcc()
    if nvcc and Path(nvcc).with_name(name).exists():
        return str(Path(nvcc).with_name(name))
    return shutil.which(name)


@dataclass(frozen=True)
class Toolchain:
    nvcc: str
    cuobjdump: str
    nvdisasm: str
    cxxfilt: str

    @classmethod
    def find(cls) -> "Toolchain":
        """The tools, or a KernelUnavailableError naming each missing one and how to get it."""
        found = {"nvcc": find_nvcc(), "cuobjdump": find_tool("cuobjdump"), "nvdisasm": find_tool("nvdisasm"),
                 "c++filt": shutil.which("c++filt")}
        how = {"nvcc": "install the CUDA toolkit or set CUDA_HOME", "cuobjdump": "pip install nvidia-cuda-cuobjdump",
               "nvdisasm": "pip install nvidia-cuda-nvdisasm", "c++filt": "install binutils"}
        missing = [f"{k} ({how[k]})" for k, v in found.items() if v is None]
        if missing:
            raise KernelUnavailableError("the static SASS model needs " + ", ".join(missing))
        return cls(found["nvcc"], found["cuobjdump"], found["nvdisasm"], found["c++filt"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class CompiledUnit:
    """One translation unit compiled for one architecture, with everything read back from it."""

    source: Path
    arch: str
    cubin: Path
    ptxas_log: str
    disassembly: str   # nvdisasm text (labels and branch targets by name)
    resource_usage: str  # cuobjdump -res-usage text


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise KernelUnavailableError(f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n{res.stderr[-4000:]}")
    return res.stdout + res.stderr if what.startswith("nvcc") else res.stdout


def unit_key(source: Path, arch: str, include_dirs: tuple[Path, ...], extra_flags: tuple[str, ...]) -> str:
    """Cache key: the source file, every header in the include directories, the arch and the flags."""
    h = hashlib.sha256()
    h.update(source.read_bytes())
    for inc in include_dirs:
        for path in sorted(p for p in inc.rglob("*") if p.is_file() and p.suffix in (".h", ".cuh", ".hpp")):
            h.update(str(path.relative_to(inc)).encode())
            h.update(path.read_bytes())
    h.update(" ".join((arch, *NVCC_FLAGS, *extra_flags)).encode())
    return h.hexdigest()[:16]


def nvcc_target(arch: str) -> str:
    """The nvcc target for ``arch``: Hopper as sm_90a, as the builds do (the wgmma variant exists only there; every
    other kernel compiles to the same code as for sm_90)."""
    return "sm_90a" if arch == "sm_90" else arch


def compile_unit(tools: Toolchain, source: Path, arch: str, cache_dir: Path,
                 include_dirs: tuple[Path, ...] = (), extra_flags: tuple[str, ...] = ()) -> CompiledUnit:
    """nvcc -cubin for ``arch`` (e.g. ``sm_90``), or the cached result of the same inputs."""
    out = cache_dir / f"{source.stem}.{arch}.{unit_key(source, arch, include_dirs, extra_flags)}"
    files = {s: out.with_suffix(out.suffix + s) for s in (".cubin", ".ptxas.txt", ".sass.txt", ".res.txt")}
    if not all(p.exists() for p in files.values()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = files[".cubin"].with_suffix(f".tmp{os.getpid()}")
        incs = [f"-I{p}" for p in include_dirs]
        nice = [shutil.which("nice"), "-n", "10"] if shutil.which("nice") else []  # a shared CI machine
        log = _run([*nice, tools.nvcc, *NVCC_FLAGS, *extra_flags, "-cubin", f"-arch={nvcc_target(arch)}", *incs, str(source),
                    "-o", str(tmp)], f"nvcc {source.name} ({arch})")
        env = {**os.environ, "NVDISASM_PATH": str(Path(tools.nvdisasm).parent)}
        sass = _run([tools.nvdisasm, "-c", str(tmp)], f"nvdisasm {source.name} ({arch})")
        res = _run([tools.cuobjdump, "-res-usage", str(tmp)], f"cuobjdump -res-usage {source.name}", env=env)
        # the cubin last: its presence marks a complete entry
        for suffix, text in ((".ptxas.txt", log), (".sass.txt", sass), (".res.txt", res)):
            files[suffix].write_text(text)
        os.replace(tmp, files[".cubin"])
    return CompiledUnit(source, arch, files[".cubin"], files[".ptxas.txt"].read_text(),
                        files[".sass.txt"].read_text(), files[".res.txt"].read_text())


def demangle(tools: Toolchain, names: list[str]) -> dict[str, str]:
    """Mangled -> demangled C++ names, in one c++filt call."""
    if not names:
        return {}
    res = subprocess.run([tools.cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True, check=False)
    lines = res.stdout.splitlines()
    if res.returncode != 0 or len(lines) != len(names):
        raise KernelUnavailableError(f"c++filt failed on {len(names)} names: {res.stderr[-1000:]}")
    return dict(zip(names, lines))


__all__ = ["CompiledUnit", "Toolchain", "compile_unit", "demangle", "find_nvcc", "find_tool", "nvcc_target", "unit_key"]
