"""CUDA W4A16 kernels: build (JIT, cached), availability, and the op namespace ``torch.ops.awq_ext``.

``load()`` returns the compiled extension module. It prefers an ahead-of-time build (``setup.py`` with
``AWQ_EXT_BUILD_CUDA=1`` produces ``awq_ext._C``); otherwise it JIT-builds ``csrc/`` with
``torch.utils.cpp_extension.load`` + ninja into a user cache directory
(``$AWQ_EXT_CACHE_DIR`` or ``$XDG_CACHE_HOME/awq_ext/kernels`` or ``~/.cache/awq_ext/kernels``), in a
subdirectory named after the torch/CUDA/Python versions and a hash of every file in ``csrc/``: the first
call compiles (a minute or two per GPU architecture), later calls reuse the build, and any source
change gets a fresh build. Without a CUDA build of torch, nvcc, ninja or a GPU it raises
:class:`~awq_ext.errors.KernelUnavailableError` saying which is missing.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Iterator

from awq_ext.errors import KernelUnavailableError

EXTENSION_NAME = "awq_ext_kernels"
CSRC_DIR = Path(__file__).resolve().parents[2] / "csrc"
# Compiled into the extension (CMakeLists.txt lists the same kernel sources).
SOURCES = ("binding.cpp", "launch_common.cu", "gemm.cu", "gemm_gptq_r.cu", "gemv.cu", "dequant.cu")
# Architectures built when no GPU is visible to pick one (CI): the kernels need sm_80+ (cp.async, bf16 mma).
DEFAULT_ARCH_LIST = "8.0;9.0a"  # no GPU visible: Ampere and Hopper (9.0a: with the wgmma variant)
MIN_COMPUTE_CAPABILITY = (8, 0)
NVCC_FLAGS = ("-O3", "-std=c++17", "-lineinfo")
CXX_FLAGS = ("-O3",)  # torch adds the C++ standard its headers need (C++20 for torch 2.14)

_lock = threading.Lock()
_module: ModuleType | None = None


def source_hash() -> str:
    """sha256 (first 16 hex digits) over the names and contents of every file in ``csrc/``."""
    if not CSRC_DIR.is_dir():
        raise KernelUnavailableError(f"kernel sources not found at {CSRC_DIR}; install awq_ext from a source checkout")
    h = hashlib.sha256()
    for path in sorted(p for p in CSRC_DIR.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(CSRC_DIR)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    """The directory JIT builds live under (one subdirectory per torch/CUDA/Python/source version)."""
    if os.environ.get("AWQ_EXT_CACHE_DIR"):
        return Path(os.environ["AWQ_EXT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "awq_ext" / "kernels"


def build_dir() -> Path:
    import torch

    tag = f"torch{torch.__version__}-cu{torch.version.cuda}-py{sys.version_info[0]}{sys.version_info[1]}"
    return cache_root() / f"{tag}-{source_hash()}".replace("+", "_")


def _is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").exists() and (root / "include" / "cuda_runtime.h").exists()


def toolkit_root() -> Path | None:
    """The CUDA toolkit to build with: ``$CUDA_HOME``/``$CUDA_PATH``, torch's guess, or ``/usr/local/cuda``.

    torch guesses CUDA_HOME as the parent of the ``bin/`` holding ``nvcc`` on PATH; when that nvcc is a
    wrapper script (``/usr/local/bin/nvcc`` on the project's CI machine) the guess has no headers, so the
    first candidate that holds both ``bin/nvcc`` and ``include/cuda_runtime.h`` wins.
    """
    from torch.utils import cpp_extension

    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    for cand in candidates:
        if cand and _is_toolkit(Path(cand)):
            return Path(cand)
    return None


def _nvcc_path() -> str | None:
    root = toolkit_root()
    return str(root / "bin" / "nvcc") if root is not None else shutil.which("nvcc")


def why_unavailable(require_gpu: bool = True) -> str | None:
    """``None`` when the kernels can be built (and, with ``require_gpu``, run) here; else the reason."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return (
            f"this torch build ({torch.__version__}) has no CUDA (torch.version.cuda is None); "
            "install a CUDA build of torch"
        )
    if require_gpu:
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        cap = torch.cuda.get_device_capability()
        if cap < MIN_COMPUTE_CAPABILITY:
            return f"GPU compute capability {cap} is below sm_80; the kernels need Ampere or newer"
    if _aot_module_spec() is not None:
        return None
    if _nvcc_path() is None:
        return "nvcc not found (set CUDA_HOME or put nvcc on PATH) and no ahead-of-time build (awq_ext._C) exists"
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja); the JIT build needs it"
    return None


def is_available() -> bool:
    """True when the kernels can run here: a CUDA torch, an sm_80+ GPU, and a build or the means to build."""
    return why_unavailable(require_gpu=True) is None


def _aot_module_spec():  # noqa: ANN202 - importlib spec or None
    return importlib.util.find_spec("awq_ext._C")


def _bundled_cuda_include() -> list[str]:
    """CUDA headers shipped in torch's ``nvidia`` wheels (``nvidia/cu13/include``, ``nvidia/cuda_runtime/include``).

    Some toolkits (the one on the project's CI machine) lack headers that torch's own CUDA headers include
    (cuBLAS, cuSPARSE); only the host-compiled binding can need them, so they are added to the C++ flags
    with ``-idirafter``: searched after every other directory, they only fill in what the toolkit lacks.
    """
    try:
        import nvidia  # the namespace package of the nvidia-* wheels torch depends on
    except ImportError:
        return []
    found = []
    for root in getattr(nvidia, "__path__", []):
        for sub in ("cu13/include", "cu12/include", "cuda_runtime/include", "cublas/include", "cusparse/include"):
            p = Path(root) / sub
            if p.is_dir():
                found.append(f"-idirafter{p}")
    return found


def default_arch_list() -> str | None:
    """The TORCH_CUDA_ARCH_LIST a build uses when none is set: DEFAULT_ARCH_LIST without a visible GPU; with an sm_90
    GPU visible, the visible architectures with 9.0 as 9.0a (the wgmma variant needs the arch-specific target; its
    cubin runs on sm_90 only); else None, torch's own default (the visible GPUs, with PTX for the newest)."""
    import torch

    if not torch.cuda.is_available():
        return DEFAULT_ARCH_LIST
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    if (9, 0) not in caps:
        return None
    return ";".join(f"{major}.{minor}" + ("a" if (major, minor) == (9, 0) else "") for major, minor in caps)


@contextlib.contextmanager
def arch_list_for_build() -> Iterator[None]:
    """Build for TORCH_CUDA_ARCH_LIST when set, else for :func:`default_arch_list`."""
    arch_list = None if os.environ.get("TORCH_CUDA_ARCH_LIST") else default_arch_list()
    if arch_list is None:
        yield
        return
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    try:
        yield
    finally:
        os.environ.pop("TORCH_CUDA_ARCH_LIST", None)


def build_flags() -> dict[str, list[str]]:
    """Compiler flags shared by the JIT build and setup.py's ahead-of-time build."""
    return {"cxx": [*CXX_FLAGS, *_bundled_cuda_include()], "nvcc": list(NVCC_FLAGS)}


def prepare_toolkit() -> Path:
    """Point torch's cpp_extension at a real CUDA toolkit (see :func:`toolkit_root`); returns its root."""
    from torch.utils import cpp_extension

    root = toolkit_root()
    if root is None:
        raise KernelUnavailableError("no CUDA toolkit with bin/nvcc and include/cuda_runtime.h found; set CUDA_HOME")
    # torch reads this module global for include/lib paths and the nvcc binary
    cpp_extension.CUDA_HOME = str(root)
    return root


def load(verbose: bool = False, require_gpu: bool = True) -> ModuleType:
    """Return the kernel extension, building it on first use; registers ``torch.ops.awq_ext``.

    ``require_gpu=False`` builds and imports without a GPU (CI: proves the JIT path compiles and links).
    Raises :class:`~awq_ext.errors.KernelUnavailableError` when it cannot.
    """
    global _module
    with _lock:
        if _module is not None:
            return _module
        reason = why_unavailable(require_gpu=require_gpu)
        if reason is not None:
            raise KernelUnavailableError(f"awq_ext CUDA kernels unavailable: {reason}")
        if _aot_module_spec() is not None:
            _module = importlib.import_module("awq_ext._C")
            return _module
        _module = _jit_build(verbose=verbose)
        return _module


def _jit_build(verbose: bool) -> ModuleType:
    from torch.utils import cpp_extension

    out = build_dir()
    out.mkdir(parents=True, exist_ok=True)
    sources = [str(CSRC_DIR / s) for s in SOURCES]
    missing = [s for s in sources if not Path(s).exists()]
    if missing:
        raise KernelUnavailableError(f"kernel sources missing: {missing}; reinstall awq_ext from a source checkout")
    prepare_toolkit()
    flags = build_flags()
    try:
        with arch_list_for_build():
            return cpp_extension.load(
                name=EXTENSION_NAME,
                sources=sources,
                extra_cflags=flags["cxx"],
                extra_cuda_cflags=flags["nvcc"],
                build_directory=str(out),
                verbose=verbose,
                is_python_module=True,
            )
    except (RuntimeError, OSError, ImportError) as exc:
        raise KernelUnavailableError(
            f"building the awq_ext CUDA kernels failed ({type(exc).__name__}: {exc}). Build log: rerun "
            f"awq_ext.kernels.load(verbose=True); build directory {out}"
        ) from exc


__all__ = [
    "CSRC_DIR",
    "arch_list_for_build",
    "default_arch_list",
    "build_flags",
    "prepare_toolkit",
    "EXTENSION_NAME",
    "SOURCES",
    "build_dir",
    "cache_root",
    "is_available",
    "load",
    "source_hash",
    "toolkit_root",
    "why_unavailable",
]
