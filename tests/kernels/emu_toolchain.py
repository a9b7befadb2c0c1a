"""What every CPU-emulator build in tests/kernels shares: the emulator sources, g++ flags, the CUDA headers, the
build cache, and the dtype codes the emulated drivers read."""
from __future__ import annotations

import os
from pathlib import Path

import torch

EMU = Path(__file__).resolve().parent / "simt_emu"
DTYPES = {torch.float16: 0, torch.bfloat16: 1}
GXX_FLAGS = ("-std=c++17", "-O1", "-fno-strict-aliasing", "-pthread")


def cuda_include() -> Path | None:
    """The CUDA toolkit's include directory (the emulator compiles against cuda_fp16.h / cuda_bf16.h)."""
    for cand in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if cand and (Path(cand) / "include" / "cuda_fp16.h").exists():
            return Path(cand) / "include"
    return None


def build_cache(name: str) -> Path:
    """The directory a build keyed ``name`` lives in (under the awq_ext cache)."""
    base = Path(os.environ.get("AWQ_EXT_CACHE_DIR") or Path.home() / ".cache" / "awq_ext")
    return base / "simt_emu" / name
