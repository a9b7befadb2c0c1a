"""DeepSeek-V2/V3 (and V2-Lite): multi-head latent attention (MLA) and MoE after dense leading layers.

MLA: the input norm feeds ``q_a_proj`` (or ``q_proj`` without a q LoRA rank) and
``kv_a_proj_with_mqa``; ``q_a_layernorm`` feeds ``q_b_proj`` and ``kv_a_layernorm`` feeds ``kv_b_proj``.
``o_proj`` reads the attention over kv_b_proj's per-head interleaved [k_nope | v] rows: no exact fold.
The first ``first_k_dense_replace`` layers have a dense SwiGLU MLP; the rest a MoE block with shared
experts (the expert groups apply there, the dense ones in the leading layers).
"""
from awq_ext.models.llama import swiglu_groups
from awq_ext.models.moe import ROUTER, expert_groups
from awq_ext.models.spec import ModelSpec, ScalingGroup

_KV_A = "self_attn.kv_a_proj_with_mqa"

DEEPSEEK = ModelSpec(
    name="deepseek",
    model_types=("deepseek_v2", "deepseek_v3"),
    blocks="model.layers",
    groups=(
        ScalingGroup("input_layernorm", ("self_attn.q_a_proj", _KV_A), inspect="self_attn", inspect_kwargs=True),
        ScalingGroup("input_layernorm", ("self_attn.q_proj", _KV_A), inspect="self_attn", inspect_kwargs=True),
        ScalingGroup("self_attn.q_a_layernorm", ("self_attn.q_b_proj",), inspect="self_attn.q_b_proj"),
        ScalingGroup("self_attn.kv_a_layernorm", ("self_attn.kv_b_proj",), inspect="self_attn.kv_b_proj"),
        *swiglu_groups(),
        *expert_groups("mlp.shared_experts"),
    ),
    clip_skip=("self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.q_proj", _KV_A),
    keep_float=(("mlp.gate", ROUTER),),
    unscaled=(("self_attn.o_proj", "reads attention over kv_b_proj's per-head interleaved k/v rows"),),
    notes="MLA q_a/q_b and kv_a/kv_b groups; dense leading layers and MoE layers bind different MLP groups.",
)
