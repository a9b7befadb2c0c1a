"""Mixture-of-experts families: Mixtral, Qwen2-MoE (shared expert + shared-expert gate), Qwen3-MoE.

Experts are per-expert linears (``mlp.experts.{e}.gate_proj`` ...; transformers 5's fused 3-D storage
is converted by :mod:`awq_ext.models.experts`). The norm before the MoE block feeds the router and every
expert: one group whose routers take ``s`` on their input columns (routing unchanged) and stay float;
its input and loss are the MoE block's (each expert sees only its routed tokens). Each expert's up ->
down is its own group. Layers listed in ``mlp_only_layers`` are dense: their groups bind instead.
"""
from awq_ext.models.llama import QK_CLIP_SKIP, attention_groups, swiglu_groups
from awq_ext.models.spec import ModelSpec, ScalingGroup

ROUTER = "router: routing decisions stay in float (the reference and vLLM keep it unquantized)"


def expert_groups(shared: str | None = None, routers: tuple[str, ...] = ("mlp.gate",)) -> tuple[ScalingGroup, ...]:
    shared_in = () if shared is None else (f"{shared}.gate_proj", f"{shared}.up_proj")
    groups = [ScalingGroup("post_attention_layernorm",
                           (*shared_in, "mlp.experts.*.gate_proj", "mlp.experts.*.up_proj"),
                           inspect="mlp", routers=routers, source="mlp")]
    if shared is not None:
        groups.append(ScalingGroup(f"{shared}.up_proj", (f"{shared}.down_proj",), inspect=f"{shared}.down_proj"))
    groups.append(ScalingGroup("mlp.experts.*.up_proj", ("mlp.experts.*.down_proj",),
                               inspect="mlp.experts.*.down_proj"))
    return tuple(groups)


MIXTRAL = ModelSpec(
    name="mixtral",
    model_types=("mixtral",),
    blocks="model.layers",
    groups=(*attention_groups(), *expert_groups()),
    clip_skip=QK_CLIP_SKIP,
    keep_float=(("mlp.gate", ROUTER),),
    notes="router folded (columns * s), kept float; v_proj->o_proj skipped under GQA.",
)

QWEN2_MOE = ModelSpec(
    name="qwen2_moe",
    model_types=("qwen2_moe",),
    blocks="model.layers",
    groups=(*attention_groups(), *expert_groups("mlp.shared_expert", ("mlp.gate", "mlp.shared_expert_gate")),
            *swiglu_groups()),
    clip_skip=QK_CLIP_SKIP,
    keep_float=(("mlp.gate", ROUTER), ("mlp.shared_expert_gate", "shared-expert gate: one output, a router"
                                                                  " of the shared expert")),
    notes="router and shared_expert_gate folded, kept float; dense mlp_only_layers use the SwiGLU groups.",
)

QWEN3_MOE = ModelSpec(
    name="qwen3_moe",
    model_types=("qwen3_moe",),
    blocks="model.layers",
    groups=(*attention_groups(), *expert_groups(), *swiglu_groups()),
    clip_skip=QK_CLIP_SKIP,
    keep_float=(("mlp.gate", ROUTER),),
    notes="router folded, kept float; dense mlp_only_layers use the SwiGLU groups.",
)
