"""Gemma 1/2/3: LLaMA layout with offset RMSNorm ``y = norm(x) * (1 + w)`` and GeGLU MLP.

Gemma 2/3 add sandwich norms: ``post_attention_layernorm`` / ``post_feedforward_layernorm`` normalise
the branch outputs (no linear reads them), and ``pre_feedforward_layernorm`` feeds gate/up. Gemma 3's
per-head q/k norms sit after q/k_proj and feed no linear, so they are never folded into.
"""
from awq_ext.models.llama import QK_CLIP_SKIP, attention_groups, swiglu_groups
from awq_ext.models.spec import ModelSpec

GEMMA = ModelSpec(
    name="gemma",
    model_types=("gemma",),
    blocks="model.layers",
    groups=(*attention_groups(kind="offset_norm"), *swiglu_groups(kind="offset_norm")),
    clip_skip=QK_CLIP_SKIP,
    notes="norms are offset RMSNorm (1 + w); v_proj->o_proj skipped under GQA.",
)

GEMMA2 = ModelSpec(
    name="gemma2",
    model_types=("gemma2", "gemma3_text"),
    blocks="model.layers",
    groups=(*attention_groups(kind="offset_norm"),
            *swiglu_groups(norm="pre_feedforward_layernorm", kind="offset_norm")),
    clip_skip=QK_CLIP_SKIP,
    notes="offset RMSNorm; pre_feedforward_layernorm feeds the MLP; v_proj->o_proj skipped under GQA.",
)
