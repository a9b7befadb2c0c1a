"""Parallel-block families: one norm feeds attention and MLP side by side (Cohere, GPT-J, Falcon with
``parallel_attn``), so its consumers form one group and the search inspects the whole block."""
from awq_ext.models.spec import ModelSpec, ScalingGroup

COHERE = ModelSpec(
    name="cohere",
    model_types=("cohere",),
    blocks="model.layers",
    groups=(
        ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "mlp.gate_proj", "mlp.up_proj"), inspect="", inspect_kwargs=True),
        ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",), inspect="self_attn.o_proj"),
        ScalingGroup("mlp.up_proj", ("mlp.down_proj",), inspect="mlp.down_proj"),
    ),
    clip_skip=("self_attn.q_proj", "self_attn.k_proj"),
    notes="parallel block: one group for input_layernorm's five consumers; v_proj->o_proj skipped under GQA.",
)

GPTJ = ModelSpec(
    name="gptj",
    model_types=("gptj",),
    blocks="transformer.h",
    groups=(
        ScalingGroup("ln_1", ("attn.q_proj", "attn.k_proj", "attn.v_proj", "mlp.fc_in"), inspect="",
                     inspect_kwargs=True),
        ScalingGroup("attn.v_proj", ("attn.out_proj",), inspect="attn.out_proj"),
    ),
    clip_skip=("attn.q_proj", "attn.k_proj"),
    unscaled=(("mlp.fc_out", "GELU between fc_in and fc_out is not per-channel scalable"),),
    notes="parallel block: ln_1 feeds attention and MLP.",
)

_INTERLEAVED = "reads attention over query_key_value's per-head interleaved q/k/v rows: no exact fold"
_GELU = "GELU between dense_h_to_4h and dense_4h_to_h is not per-channel scalable"

FALCON = ModelSpec(
    name="falcon",
    model_types=("falcon",),
    blocks="transformer.h",
    groups=(
        # new_decoder_architecture with two norms: ln_attn and ln_mlp feed their branch.
        ScalingGroup("ln_attn", ("self_attention.query_key_value",), inspect="", inspect_kwargs=True),
        ScalingGroup("ln_mlp", ("mlp.dense_h_to_4h",), inspect="mlp"),
        # parallel_attn with one norm: it feeds both branches (exactly when there is no second norm).
        ScalingGroup("input_layernorm", ("self_attention.query_key_value", "mlp.dense_h_to_4h"), inspect="",
                     inspect_kwargs=True, when_absent=("post_attention_layernorm", "ln_attn")),
        # sequential blocks (parallel_attn false).
        ScalingGroup("input_layernorm", ("self_attention.query_key_value",), inspect="", inspect_kwargs=True,
                     when_present=("post_attention_layernorm",)),
        ScalingGroup("post_attention_layernorm", ("mlp.dense_h_to_4h",), inspect="mlp"),
    ),
    clip_skip=("self_attention.query_key_value",),
    unscaled=(("self_attention.dense", _INTERLEAVED), ("mlp.dense_4h_to_h", _GELU)),
    notes="fused per-head query_key_value: its v rows are not folded into dense (skipped).",
)
