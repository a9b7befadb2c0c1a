"""LLaMA family: pre-norm RMSNorm blocks, SwiGLU MLP, optional GQA (Llama, Mistral, Qwen2/3, Granite,
SmolLM2). ``ATTENTION`` and ``SWIGLU`` are reused by the families that share these sub-layouts."""
from awq_ext.models.spec import ModelSpec, ScalingGroup


def attention_groups(norm: str = "input_layernorm", kind: str = "auto") -> tuple[ScalingGroup, ...]:
    """norm -> q/k/v, and v -> o (skipped under GQA, where the widths differ)."""
    return (
        ScalingGroup(norm, ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                     inspect="self_attn", inspect_kwargs=True, kind=kind),
        ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), inspect="self_attn.o_proj"),
    )


def swiglu_groups(norm: str = "post_attention_layernorm", mlp: str = "mlp",
                  kind: str = "auto") -> tuple[ScalingGroup, ...]:
    """norm -> gate/up, and up -> down (act(gate) * up is linear in up)."""
    return (
        ScalingGroup(norm, (f"{mlp}.gate_proj", f"{mlp}.up_proj"), inspect=mlp, kind=kind),
        ScalingGroup(f"{mlp}.up_proj", (f"{mlp}.down_proj",), inspect=f"{mlp}.down_proj"),
    )


QK_CLIP_SKIP = ("self_attn.q_proj", "self_attn.k_proj")

LLAMA = ModelSpec(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "granite"),
    blocks="model.layers",
    groups=(*attention_groups(), *swiglu_groups()),
    clip_skip=QK_CLIP_SKIP,
    notes="v_proj->o_proj is skipped under GQA (num_key_value_heads < num_attention_heads).",
)
