"""Build and load OpenFlamingo models from local parts, and generate from interleaved image/text prompts.

:func:`build_flamingo` does what open_flamingo's factory does to a language model (special tokens,
mixin, decoder-layer path, embedding resize), with two differences: the decoder-layer path comes from
our LM spec table (not a class-name lookup), and the mixin is the keyword-friendly one from
:mod:`vlm.compat`. The vision encoder is either open_clip's (when it imports) or transformers'
``CLIPVisionModel`` wrapped by :class:`HFCLIPVisual` to return what open_clip's ``visual`` returns with
``output_tokens=True``: ``(pooled, patch tokens after the final LayerNorm)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
from PIL import Image

from awq_ext.errors import AWQInputError
from awq_ext.models import SPECS
from vlm.compat import flamingo_lm_class, open_clip_available, open_flamingo_modules

MEDIA_TOKEN = "<image>"
EOC_TOKEN = "<|endofchunk|>"
PAD_TOKEN = "<PAD>"


class HFCLIPVisual(nn.Module):
    """transformers ``CLIPVisionModel`` -> open_clip-style ``visual``: ``x [B,3,H,W]`` ->
    ``(pooled [B, D], tokens [B, P, D])`` where tokens are the patch tokens (class token dropped)
    after ``post_layernorm``, as open_clip's ViT returns them (it applies ``ln_post`` to all tokens)."""

    def __init__(self, clip_vision: nn.Module):
        super().__init__()
        self.model = clip_vision

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=x)
        tokens = self.model.post_layernorm(out.last_hidden_state[:, 1:])
        return out.pooler_output, tokens


def build_flamingo(
    visual: nn.Module, lang_encoder: nn.Module, tokenizer, vis_dim: int, cross_attn_every_n_layers: int
) -> nn.Module:
    """Wrap ``lang_encoder`` (an HF causal LM) and ``visual`` into ``open_flamingo.Flamingo``.

    ``tokenizer`` gains ``<|endofchunk|>``, ``<image>`` (and ``<PAD>`` when it has no pad token), and the
    LM's embeddings are resized to match, exactly as OpenFlamingo checkpoints expect.
    """
    if cross_attn_every_n_layers < 1:
        raise AWQInputError(f"cross_attn_every_n_layers must be >= 1, got {cross_attn_every_n_layers}")
    model_type = getattr(lang_encoder.config, "model_type", None)
    if model_type not in SPECS:
        raise AWQInputError(f"no LM spec for the language model's model_type {model_type!r}; supported: "
                            f"{', '.join(sorted(SPECS))}")
    of = open_flamingo_modules()
    tokenizer.add_special_tokens({"additional_special_tokens": [EOC_TOKEN, MEDIA_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    lang_encoder.__class__ = flamingo_lm_class(type(lang_encoder))
    lang_encoder.set_decoder_layers_attr_name(SPECS[model_type].blocks)
    lang_encoder.resize_token_embeddings(len(tokenizer))
    eoc_id = tokenizer.convert_tokens_to_ids(EOC_TOKEN)
    media_id = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    model = of.Flamingo(SimpleNamespace(visual=visual), lang_encoder, eoc_id, media_id, vis_dim=vis_dim,
                        cross_attn_every_n_layers=cross_attn_every_n_layers)
    return model.eval()


@dataclass(frozen=True)
class VisionSource:
    """Where the vision encoder comes from: ``open_clip:NAME:PRETRAINED`` (PRETRAINED a local file or an
    open_clip tag when online) or ``hf-clip:DIR`` (a transformers CLIP / CLIPVision directory)."""

    kind: str
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, text: str) -> "VisionSource":
        kind, _, rest = text.partition(":")
        if kind == "hf-clip" and rest:
            return cls(kind, rest)
        if kind == "open_clip":
            name, _, pretrained = rest.partition(":")
            if name and pretrained:
                return cls(kind, name, pretrained)
        raise AWQInputError(f"--vision-encoder {text!r}: expected open_clip:NAME:PRETRAINED "
                            "(e.g. open_clip:ViT-L-14:/ckpt/openai-vit-l-14.pt) or hf-clip:DIR")


def clip_image_processor(image_size: int):
    """CLIP preprocessing (resize shortest side bicubic, centre crop, OpenAI mean/std) without torchvision."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": image_size},
                              crop_size={"height": image_size, "width": image_size})


def load_vision(source: VisionSource, dtype: torch.dtype):
    """``(visual module, vis_dim, preprocess)``; ``preprocess(list[PIL]) -> [N, 3, H, W]``."""
    if source.kind == "open_clip":
        if not open_clip_available():
            raise AWQInputError("open_clip cannot be imported here (it needs a torchvision that matches the installed "
                                "torch; see vlm/README.md), use --vision-encoder hf-clip:DIR instead")
        import open_clip

        clip, _, transform = open_clip.create_model_and_transforms(source.name, pretrained=source.pretrained)
        clip.visual.output_tokens = True
        width = open_clip.get_model_config(source.name)["vision_cfg"]["width"]
        return clip.visual.to(dtype).eval(), width, lambda ims: torch.stack([transform(im) for im in ims])
    from transformers import CLIPVisionConfig, CLIPVisionModel

    path = Path(source.name)
    if not (path / "config.json").is_file():
        raise AWQInputError(f"hf-clip:{path}: not a transformers CLIP directory (no config.json)")
    cfg = CLIPVisionConfig.from_pretrained(path)
    vision = CLIPVisionModel.from_pretrained(path, config=cfg, dtype=dtype).eval()
    proc = clip_image_processor(cfg.image_size)
    return HFCLIPVisual(vision), cfg.hidden_size, lambda ims: proc(images=ims, return_tensors="pt")["pixel_values"]


def load_openflamingo(lang_encoder: str, tokenizer: str | None, vision: str, checkpoint: str | None,
                      cross_attn_every_n_layers: int, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """``FlamingoRunner`` for a model assembled from local parts (never touches the network for local paths).

    ``checkpoint``: OpenFlamingo's ``checkpoint.pt`` (perceiver, gated cross-attention, embeddings);
    loaded non-strictly, but every key it holds must exist in the model and match in shape.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for p in (lang_encoder, tokenizer or lang_encoder):
        if not Path(p).exists():
            raise AWQInputError(f"{p} does not exist; pass local directories for the language model and tokenizer")
    tok = AutoTokenizer.from_pretrained(tokenizer or lang_encoder, local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(lang_encoder, dtype=dtype, local_files_only=True)
    visual, vis_dim, preprocess = load_vision(VisionSource.parse(vision), dtype)
    model = build_flamingo(visual, lm, tok, vis_dim, cross_attn_every_n_layers)
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise AWQInputError(f"checkpoint {checkpoint} does not exist")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        own = model.state_dict()
        unknown = [k for k in state if k not in own]
        bad = [k for k in state if k in own and own[k].shape != state[k].shape]
        if unknown or bad:
            raise AWQInputError(f"{checkpoint} does not fit this model: unknown keys {unknown[:5]}, shape mismatches "
                                f"{bad[:5]}; check --cross-attn-every-n-layers and the language model")
        model.load_state_dict(state, strict=False)
    model.to(device=device, dtype=dtype).eval()
    return FlamingoRunner(model, tok, preprocess, device)


class FlamingoRunner:
    """Generation from interleaved prompts: each ``<image>`` in a prompt takes the next image of its list."""

    family = "openflamingo"
    interleaved = True

    def __init__(self, model: nn.Module, tokenizer, preprocess, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = device
        self.tokenizer.padding_side = "left"  # generation appends on the right

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def vision_x(self, images: list[list[Image.Image]]) -> torch.Tensor:
        """``[B, T_img, 1, 3, H, W]``; every sample must hold the same number of images."""
        counts = {len(ims) for ims in images}
        if len(counts) != 1 or 0 in counts:
            raise AWQInputError(f"every prompt in a batch needs the same, non-zero number of images; got {sorted(counts)}")
        x = torch.stack([self.preprocess([im.convert("RGB") for im in ims]) for ims in images])
        return x.unsqueeze(2).to(self.device, self.dtype)

    @torch.no_grad()
    def generate(self, images: list[list[Image.Image]], prompts: list[str], max_new_tokens: int = 20,
                 num_beams: int = 3, length_penalty: float = 0.0) -> list[str]:
        """Continuations of ``prompts`` (prompt removed, special tokens skipped)."""
        for im, p in zip(images, prompts):
            if p.count(MEDIA_TOKEN) != len(im):
                raise AWQInputError(f"prompt has {p.count(MEDIA_TOKEN)} {MEDIA_TOKEN} tokens but {len(im)} images")
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True)
        out = self.model.generate(
            vision_x=self.vision_x(images), lang_x=enc.input_ids.to(self.device),
            attention_mask=enc.attention_mask.to(self.device), max_new_tokens=max_new_tokens, num_beams=num_beams,
            length_penalty=length_penalty, pad_token_id=self.tokenizer.pad_token_id, do_sample=False,
        )
        return self.tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
