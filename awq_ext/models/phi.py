"""Phi-3/3.5/Phi-4-mini (fused qkv_proj and gate_up_proj) and Phi-2 (one LayerNorm feeds attention
and MLP in parallel)."""
from awq_ext.models.spec import ModelSpec, ScalingGroup

PHI3 = ModelSpec(
    name="phi3",
    model_types=("phi3",),
    blocks="model.layers",
    groups=(
        ScalingGroup("input_layernorm", ("self_attn.qkv_proj",), inspect="self_attn", inspect_kwargs=True),
        # qkv_proj rows are [q | k | v]; only the v third feeds o_proj (exact only without GQA).
        ScalingGroup("self_attn.qkv_proj", ("self_attn.o_proj",), inspect="self_attn.o_proj", kind="rows",
                     rows=(3, 2)),
        ScalingGroup("post_attention_layernorm", ("mlp.gate_up_proj",), inspect="mlp"),
        # gate_up_proj rows are [gate | up]; act(gate) * up is linear in the up half.
        ScalingGroup("mlp.gate_up_proj", ("mlp.down_proj",), inspect="mlp.down_proj", kind="rows", rows=(2, 1)),
    ),
    clip_skip=("self_attn.qkv_proj",),
    notes="qkv_proj->o_proj folds into the v rows only; skipped under GQA (the parts differ in width).",
)

PHI = ModelSpec(
    name="phi",
    model_types=("phi",),
    blocks="model.layers",
    groups=(
        ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.fc1"),
                     inspect="", inspect_kwargs=True),
        ScalingGroup("self_attn.v_proj", ("self_attn.dense",), inspect="self_attn.dense"),
    ),
    clip_skip=("self_attn.q_proj", "self_attn.k_proj"),
    unscaled=(("mlp.fc2", "GELU between fc1 and fc2 is not per-channel scalable"),),
    notes="parallel block: input_layernorm feeds attention and MLP, one group inspecting the whole block.",
)
