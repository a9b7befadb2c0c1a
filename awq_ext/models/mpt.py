"""MPT (OpenFlamingo-9B v2's language model, MPT-7B): LayerNorm blocks, fused Wqkv, GELU MLP."""
from awq_ext.models.spec import ModelSpec, ScalingGroup

# MPT (OpenFlamingo-9B v2's language model, MPT-7B). The names match transformers' native
# MptForCausalLM and MosaicML's remote code alike. Only norm -> linear groups are scaled: Wqkv's fused
# rows cannot feed out_proj channel-for-channel, and GELU between up_proj and down_proj is not a
# per-channel-scalable prev-op (the reference folds into a ScaledActivation - a new prev-op kind that
# awq_ext.calibrate.fold does not have yet).
MPT = ModelSpec(
    name="mpt",
    model_types=("mpt",),
    blocks="transformer.blocks",
    groups=(
        ScalingGroup("norm_1", ("attn.Wqkv",), inspect="attn", inspect_kwargs=True),
        ScalingGroup("norm_2", ("ffn.up_proj",), inspect="ffn.up_proj"),
    ),
    clip_skip=("attn.Wqkv",),  # holds q and k rows: same reason as LLaMA's q/k clip skip
    unscaled=(("attn.out_proj", "reads attention over the fused Wqkv (v rows not folded)"),
              ("ffn.down_proj", "GELU between up_proj and down_proj is not per-channel scalable")),
    notes="v->o and up->down groups are not scaled (see the comment above)",
)
