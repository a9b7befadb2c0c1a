"""Tiny random models for every registered model_type, built from that family's transformers config.

One generic size table fits most families; ``OVERRIDES`` holds the few family-specific knobs (MLA
ranks, expert counts, dense leading layers). A model_type with no override still gets the generic
config, so a newly registered spec joins the property suite without editing this file.
Attention heads are not grouped (MHA), so the v -> o folds are exercised; GQA skipping has its own tests.
"""
from __future__ import annotations

import torch

VOCAB = 256
GENERIC = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, head_dim=16, max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
    eos_token_id=2, tie_word_embeddings=False,
)
_MOE = dict(num_experts=4, num_local_experts=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=64)
OVERRIDES: dict[str, dict] = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2, intermediate_size=64),
    "qwen2_moe": dict(_MOE, shared_expert_intermediate_size=64, mlp_only_layers=[0], decoder_sparse_step=1),
    "qwen3_moe": dict(_MOE, mlp_only_layers=[0], decoder_sparse_step=1),
    "deepseek_v2": dict(_MOE, q_lora_rank=64, kv_lora_rank=64, qk_rope_head_dim=8, qk_nope_head_dim=16,
                        v_head_dim=16, head_dim=8, first_k_dense_replace=1, n_shared_experts=1, n_group=1, topk_group=1,
                        topk_method="greedy"),
    "deepseek_v3": dict(_MOE, q_lora_rank=64, kv_lora_rank=64, qk_rope_head_dim=8, qk_nope_head_dim=16,
                        v_head_dim=16, head_dim=8, first_k_dense_replace=1, n_shared_experts=1, n_group=1, topk_group=1),
    "gptj": dict(n_embd=64, n_head=4, n_layer=2, n_inner=128, rotary_dim=8, n_positions=128),
    "mpt": dict(d_model=64, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=128),
    "opt": dict(ffn_dim=128, word_embed_proj_dim=64),
    "falcon": dict(num_kv_heads=4, multi_query=False, new_decoder_architecture=False, parallel_attn=True),
}
_NO_HEAD_DIM = ("falcon", "gpt_neox", "gptj", "mpt", "opt", "phi", "starcoder2", "cohere")


def tiny_config(model_type: str, **extra):
    from transformers import AutoConfig

    kw = {**GENERIC, **OVERRIDES.get(model_type, {}), **extra}
    if model_type in _NO_HEAD_DIM:
        kw.pop("head_dim", None)
    cfg = AutoConfig.for_model(model_type, **kw)
    cfg._attn_implementation = "eager"
    return cfg


def tiny_model(model_type: str, seed: int = 0, **extra):
    """A tiny random causal LM of ``model_type`` with non-trivial norm weights and biases."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **extra)).eval()
    model.config.use_cache = False
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in n or ".ln" in n) and n.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif n.endswith("bias") and p.dim() == 1:
                p.uniform_(-0.1, 0.1)
    return model


def calib_ids(n: int = 4, seqlen: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (n, seqlen), generator=torch.Generator().manual_seed(seed))
