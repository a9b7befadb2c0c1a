"""LLaVA through transformers (``LlavaForConditionalGeneration`` + its processor): load and generate."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

from awq_ext.errors import AWQInputError, OfflineError


class LlavaRunner:
    """One image per prompt; the processor expands the prompt's ``<image>`` to the image's patch tokens."""

    family = "llava"
    interleaved = False

    def __init__(self, model: nn.Module, processor, device: str = "cpu"):
        self.model = model
        self.processor = processor
        self.device = device
        self.processor.tokenizer.padding_side = "left"

    @torch.no_grad()
    def generate(self, images: list[list[Image.Image]], prompts: list[str], max_new_tokens: int = 64,
                 num_beams: int = 1, length_penalty: float = 1.0) -> list[str]:
        if any(len(ims) != 1 for ims in images):
            raise AWQInputError("LLaVA takes exactly one image per prompt")
        enc = self.processor(images=[ims[0].convert("RGB") for ims in images], text=prompts, return_tensors="pt",
                             padding=True)
        dtype = next(self.model.parameters()).dtype
        enc = {k: (v.to(self.device, dtype) if k == "pixel_values" else v.to(self.device)) for k, v in enc.items()}
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                  length_penalty=length_penalty, do_sample=False,
                                  pad_token_id=self.processor.tokenizer.pad_token_id)
        return self.processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def load_llava(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LlavaRunner:
    """A local LLaVA directory (e.g. a download of llava-hf/llava-1.5-7b-hf), or a hub name when online."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    local = Path(path).exists()
    if local and not (Path(path) / "config.json").is_file():
        raise AWQInputError(f"{path} holds no config.json; not a transformers LLaVA directory")
    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=local)
        model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, local_files_only=local)
    except OSError as e:
        if local:
            raise AWQInputError(f"could not load LLaVA from {path}: {e}") from e
        raise OfflineError(f"{path!r} is not a local directory and could not be fetched ({e})") from e
    return LlavaRunner(model.to(device).eval(), processor, device)
