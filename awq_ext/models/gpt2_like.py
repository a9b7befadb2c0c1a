"""GPT-NeoX (Pythia) and StarCoder2: LayerNorm (with bias) pre-norm blocks and a GELU MLP."""
from awq_ext.models.spec import ModelSpec, ScalingGroup

GPT_NEOX = ModelSpec(
    name="gpt_neox",
    model_types=("gpt_neox",),
    blocks="gpt_neox.layers",
    groups=(
        ScalingGroup("input_layernorm", ("attention.query_key_value",), inspect="attention", inspect_kwargs=True),
        ScalingGroup("post_attention_layernorm", ("mlp.dense_h_to_4h",), inspect="mlp"),
    ),
    clip_skip=("attention.query_key_value",),
    unscaled=(("attention.dense", "reads attention over query_key_value's per-head interleaved q/k/v rows: "
                                  "no exact fold"),
              ("mlp.dense_4h_to_h", "GELU between dense_h_to_4h and dense_4h_to_h is not per-channel scalable")),
    notes="use_parallel_residual changes only where the MLP's norm reads from; both groups stay exact.",
)

STARCODER2 = ModelSpec(
    name="starcoder2",
    model_types=("starcoder2",),
    blocks="model.layers",
    groups=(
        ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                     inspect="self_attn", inspect_kwargs=True),
        ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), inspect="self_attn.o_proj"),
        ScalingGroup("post_attention_layernorm", ("mlp.c_fc",), inspect="mlp"),
    ),
    clip_skip=("self_attn.q_proj", "self_attn.k_proj"),
    unscaled=(("mlp.c_proj", "GELU between c_fc and c_proj is not per-channel scalable"),),
    notes="v_proj->o_proj skipped under GQA.",
)
