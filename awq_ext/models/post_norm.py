"""OLMo-2: post-norm blocks (the norms follow attention and MLP), so no norm feeds a linear: only
v -> o and up -> down can be scaled."""
from awq_ext.models.spec import ModelSpec, ScalingGroup

OLMO2 = ModelSpec(
    name="olmo2",
    model_types=("olmo2",),
    blocks="model.layers",
    groups=(
        ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), inspect="self_attn.o_proj"),
        ScalingGroup("mlp.up_proj", ("mlp.down_proj",), inspect="mlp.down_proj"),
    ),
    clip_skip=("self_attn.q_proj", "self_attn.k_proj"),
    unscaled=(("self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, mlp.gate_proj, mlp.up_proj",
               "post-norm: they read the raw residual stream, no per-channel op precedes them"),),
    notes="post-norm: only v_proj->o_proj (skipped under GQA) and up_proj->down_proj.",
)
