"""Packaging entry point.

``pip install -e .`` compiles nothing: the CUDA kernels are JIT-built on first use
(``awq_ext.kernels``). Set ``AWQ_EXT_BUILD_CUDA=1`` to build them ahead of time instead, into the
extension module ``awq_ext._C`` that ``awq_ext.kernels.load()`` prefers; torch must then be importable
while building, so disable build isolation::

    AWQ_EXT_BUILD_CUDA=1 pip install --no-build-isolation -e .

Without a visible GPU the build targets sm_80 and sm_90a (``TORCH_CUDA_ARCH_LIST`` overrides).
"""
import os
import sys

from setuptools import setup


def _cuda_build() -> dict:
    if os.environ.get("AWQ_EXT_BUILD_CUDA") != "1":
        return {}
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    from awq_ext import kernels

    kernels.prepare_toolkit()
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and kernels.default_arch_list() is not None:
        os.environ["TORCH_CUDA_ARCH_LIST"] = kernels.default_arch_list()
    ext = CUDAExtension(
        name="awq_ext._C",
        sources=[os.path.relpath(kernels.CSRC_DIR / s, here) for s in kernels.SOURCES],
        extra_compile_args=kernels.build_flags(),
    )
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


setup(**_cuda_build())
