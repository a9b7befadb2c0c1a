"""Shared fixtures: tiny models built from transformers configs (no downloads)."""
from __future__ import annotations

import pytest
import torch


def tiny_llama(seed: int = 0, kv_heads: int = 2, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                      tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights, so folding into them is really tested
        for n, p in m.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    return m


def tiny_opt(seed: int = 0, layers: int = 2):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=256, hidden_size=64, ffn_dim=128, num_hidden_layers=layers, num_attention_heads=4,
                    max_position_embeddings=256, word_embed_proj_dim=64)
    cfg._attn_implementation = "eager"
    m = OPTForCausalLM(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "layer_norm" in n and n.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif "layer_norm" in n and n.endswith("bias"):
                p.uniform_(-0.2, 0.2)
            elif n.endswith("bias"):
                p.uniform_(-0.05, 0.05)
    return m


def plant_outliers(model, channels=(3, 17, 40), factor: float = 30.0) -> None:
    """Make a few hidden channels carry large activations (as real LLMs do) via the embeddings and norms."""
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, list(channels)] *= factor
        for n, p in model.named_parameters():
            if "norm" in n and n.endswith("weight") and p.dim() == 1 and p.numel() == emb.shape[1]:
                p[list(channels)] *= 4.0


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def opt():
    return tiny_opt()


@pytest.fixture
def calib_ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (4, 32), generator=g)
