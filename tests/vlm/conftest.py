"""Tiny VLMs shared by the vlm tests (built once per module: each build takes a few seconds)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def flamingo():
    pytest.importorskip("einops_exts")
    from vlm.tiny import tiny_openflamingo

    return tiny_openflamingo(seed=0)


@pytest.fixture(scope="module")
def llava():
    from vlm.tiny import tiny_llava

    return tiny_llava(seed=0)
