"""open_flamingo on transformers 5: the factory-free import route and the keyword-friendly forward."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

pytest.importorskip("einops_exts")

from vlm.compat import base_lm_class, open_clip_available, open_flamingo_modules  # noqa: E402


def test_import_route_matches_open_clip_availability():
    mods = open_flamingo_modules()
    assert mods.route == ("package" if open_clip_available() else "alias")


def test_generate_without_attention_mask_needs_the_compat_forward(flamingo):
    model, tok = flamingo.model, flamingo.tokenizer
    ids = tok(["<image>Output:"], return_tensors="pt").input_ids
    vx = flamingo.vision_x([[Image.new("RGB", (32, 32), (0, 0, 255))]])
    out = model.generate(vision_x=vx, lang_x=ids, max_new_tokens=2, num_beams=2, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 2
    lm = model.lang_encoder
    compat_cls = type(lm)
    plain = type(compat_cls.__name__, (open_flamingo_modules().FlamingoLMMixin, base_lm_class(lm)), {})
    lm.__class__ = plain  # open_flamingo's own mixin: attention_mask is a required positional argument
    try:
        with pytest.raises(TypeError, match="attention_mask"):
            model.generate(vision_x=vx, lang_x=ids, max_new_tokens=2, pad_token_id=tok.pad_token_id)
    finally:
        lm.__class__ = compat_cls
        lm.clear_conditioned_layers()
        lm._use_cached_vision_x = False


def test_images_condition_the_output(flamingo):
    tok = flamingo.tokenizer
    ids = tok(["<image>Output:"], return_tensors="pt").input_ids
    a = flamingo.model(vision_x=flamingo.vision_x([[Image.new("RGB", (32, 32), (255, 0, 0))]]), lang_x=ids).logits
    b = flamingo.model(vision_x=flamingo.vision_x([[Image.new("RGB", (32, 32), (0, 0, 255))]]), lang_x=ids).logits
    assert not torch.allclose(a, b)  # the cross-attention gates are open in the tiny model
