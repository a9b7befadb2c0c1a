"""A tiny LLaMA and a byte tokenizer, so the analysis runner is tested without the real model."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.conftest import plant_outliers, tiny_llama


class ByteTokenizer:
    """Token = byte value (vocab 256, matching the tiny models); enough for perplexity plumbing."""

    def __call__(self, text: str, return_tensors: str = "pt"):
        return SimpleNamespace(input_ids=torch.tensor([list(text.encode("utf-8"))], dtype=torch.long))


@pytest.fixture
def runner(tmp_path):
    from awq_ext.analysis.runner import Runner

    model = tiny_llama(layers=1)
    plant_outliers(model)
    return Runner(model, ByteTokenizer(), "tiny-llama", tmp_path / "out")


@pytest.fixture
def settings():
    from awq_ext.analysis.runner import RunSettings

    return RunSettings(n_samples=2, seqlen=32, max_windows=1, eval_seqlen=64, chunk_size=2)
