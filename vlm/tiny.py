"""Tiny random VLMs built in code (tests, examples, smoke runs): no download, seconds on a CPU.

Every size is chosen so the quantizer's group sizes 32 and 64 divide every language-tower linear.
The tokenizer is a byte-level BPE trained in memory on the caption words plus a slice of the offline
calibration text, so any text tokenizes without unknown tokens.
"""
from __future__ import annotations

from pathlib import Path

import torch

from awq_ext.data import pydoc_text

_WORDS = ("a photo of red green blue yellow circle square triangle on white black background small large "
          "picture shows the two one image with and in Output: Question: Short answer: what color is shape")


def tiny_tokenizer(extra_text: str = "", vocab_size: int = 400):
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, bos/eos ``<s>``/``</s>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([_WORDS, extra_text, pydoc_text()[:20000]], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def tiny_llama(vocab_size: int, seed: int = 0, layers: int = 2, max_positions: int = 2048):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_positions,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(cfg).eval()


def tiny_clip_vision_config(image_size: int = 32):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            image_size=image_size, patch_size=8, projection_dim=32)


def open_gates(model, value: float = 0.5) -> None:
    """Flamingo's cross-attention gates start at 0 (images ignored); open them so images matter."""
    with torch.no_grad():
        for layer in model.lang_encoder.gated_cross_attn_layers:
            if layer is not None:
                layer.attn_gate.fill_(value)
                layer.ff_gate.fill_(value)


def tiny_openflamingo(seed: int = 0, cross_attn_every_n_layers: int = 1, layers: int = 2):
    """``FlamingoRunner`` around a tiny OpenFlamingo: HF CLIP vision tower + tiny LLaMA, random weights."""
    from transformers import CLIPVisionModel

    from vlm.openflamingo import FlamingoRunner, HFCLIPVisual, build_flamingo, clip_image_processor

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    vcfg = tiny_clip_vision_config()
    visual = HFCLIPVisual(CLIPVisionModel(vcfg).eval())
    lm = tiny_llama(len(tok) + 3, seed=seed, layers=layers)
    model = build_flamingo(visual, lm, tok, vcfg.hidden_size, cross_attn_every_n_layers)
    open_gates(model)
    proc = clip_image_processor(vcfg.image_size)
    return FlamingoRunner(model, tok, lambda ims: proc(images=ims, return_tensors="pt")["pixel_values"])


def save_tiny_openflamingo(runner, out: str | Path) -> dict[str, str]:
    """Write the parts the CLI loads: ``lm/`` (HF LM + tokenizer, before Flamingo's special tokens),
    ``vision/`` (HF CLIPVision), ``checkpoint.pt`` (everything Flamingo adds, as OpenFlamingo ships it).
    Returns the CLI arguments that load it back."""
    out = Path(out)
    model = runner.model
    lm_dir, vis_dir = out / "lm", out / "vision"
    model.vision_encoder.model.save_pretrained(vis_dir)
    from vlm.quantize import flamingo_text_only

    lm = model.lang_encoder
    with flamingo_text_only(lm, lm.decoder_layers_attr_name):  # the plain LM, original blocks in place
        plain = {k: v for k, v in lm.state_dict().items()
                 if not k.startswith(("old_decoder_blocks.", "gated_cross_attn_layers."))}
        lm.save_pretrained(lm_dir, state_dict=plain)
    runner.tokenizer.save_pretrained(lm_dir)
    trained = {k: v for k, v in model.state_dict().items()
               if k.startswith(("perceiver.", "lang_encoder.gated_cross_attn_layers.", "lang_encoder.model.embed_tokens.",
                                "lang_encoder.lm_head."))}
    torch.save(trained, out / "checkpoint.pt")
    return {"lang_encoder": str(lm_dir), "vision_encoder": f"hf-clip:{vis_dir}", "checkpoint": str(out / "checkpoint.pt")}


def tiny_llava(seed: int = 0, layers: int = 2):
    """``LlavaRunner`` around a tiny random ``LlavaForConditionalGeneration`` and its processor."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from vlm.llava import LlavaRunner
    from vlm.openflamingo import clip_image_processor

    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"], "pad_token": "<pad>"})
    vcfg = tiny_clip_vision_config()
    tcfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                       tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
                       pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    processor = LlavaProcessor(image_processor=clip_image_processor(vcfg.image_size), tokenizer=tok,
                               patch_size=vcfg.patch_size, vision_feature_select_strategy="default",
                               image_token="<image>", num_additional_image_tokens=1)
    return LlavaRunner(model, processor)
