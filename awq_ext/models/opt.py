"""OPT: pre-norm LayerNorm (weight and bias) blocks, ReLU MLP fc1 -> fc2."""
from awq_ext.models.spec import ModelSpec, ScalingGroup

OPT = ModelSpec(
    name="opt",
    model_types=("opt",),
    blocks="model.decoder.layers",
    groups=(
        ScalingGroup("self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                     inspect="self_attn", inspect_kwargs=True),
        ScalingGroup("self_attn.v_proj", ("self_attn.out_proj",), inspect="self_attn.out_proj"),
        ScalingGroup("final_layer_norm", ("fc1",), inspect="fc1"),
        # ReLU is positively homogeneous: relu(x / s) = relu(x) / s for s > 0, so fc1's rows take 1/s.
        ScalingGroup("fc1", ("fc2",), inspect="fc2"),
    ),
    clip_skip=("self_attn.q_proj", "self_attn.k_proj"),
)
