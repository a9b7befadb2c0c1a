"""LLaMA family: pre-norm RMSNorm blocks, SwiGLU MLP, optional GQA (Llama, Mistral, Qwen2/3, SmolLM2)."""
from awq_ext.models.spec import ModelSpec, ScalingGroup

LLAMA = ModelSpec(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    blocks="model.layers",
    groups=(
        ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                     inspect="self_attn", inspect_kwargs=True),
        ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), inspect="self_attn.o_proj"),
        ScalingGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), inspect="mlp"),
        ScalingGroup("mlp.up_proj", ("mlp.down_proj",), inspect="mlp.down_proj"),
    ),
    clip_skip=("self_attn.q_proj", "self_attn.k_proj"),
    notes="v_proj->o_proj is skipped under GQA (num_key_value_heads < num_attention_heads).",
)
