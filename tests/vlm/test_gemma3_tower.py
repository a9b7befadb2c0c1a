"""Gemma 3 multimodal: its gemma3_text language tower quantizes through the VLM adapter table."""
import torch

from awq_ext.config import AWQConfig, QuantizeConfig
from tests.models.tiny_archs import GENERIC, calib_ids
from vlm.adapters import family_of, keep_fp_modules
from vlm.quantize import quantize_language_tower


def tiny_gemma3_vlm():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig
    from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig

    text = Gemma3TextConfig(**GENERIC)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=5,
                       boi_token_index=6, eoi_token_index=7)
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    torch.manual_seed(0)
    return Gemma3ForConditionalGeneration(cfg).eval()


def test_gemma3_language_tower_quantizes_and_vision_stays_float():
    model = tiny_gemma3_vlm()
    assert family_of(model) == "gemma3"
    vision = {n: p.detach().clone() for n, p in model.model.vision_tower.named_parameters()}
    res = quantize_language_tower(model, calib_ids(), QuantizeConfig(
        method="awq", group_size=64, device="cpu", awq=AWQConfig(n_grid=4, clip_n_grid=4)))
    assert res.lm_spec == "gemma2"  # the gemma3_text spec (offset norms)
    assert len(res.quantized) == 2 * 7 and all(n.startswith("model.language_model.layers.") for n in res.quantized)
    assert all(torch.equal(p, vision[n]) for n, p in model.model.vision_tower.named_parameters())
    assert "model.vision_tower" in keep_fp_modules(model)
