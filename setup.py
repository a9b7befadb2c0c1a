"""Packaging entry point.

``pip install -e .`` compiles nothing: the CUDA kernels are JIT-built on first use
(``awq_ext.kernels``). Set ``AWQ_EXT_BUILD_CUDA=1`` to build them ahead of time instead.
"""
from setuptools import setup

setup()
