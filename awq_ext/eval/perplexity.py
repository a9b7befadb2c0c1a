"""Perplexity by the GPTQ/AWQ protocol: non-overlapping windows, ppl = exp(mean token NLL)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


@dataclass
class PerplexityResult:
    ppl: float
    mean_nll: float
    n_tokens: int
    n_windows: int
    seqlen: int
    window_nll: list[float] = field(default_factory=list)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, progress: bool = True, desc: str = "perplexity") -> PerplexityResult:
    """Score ``windows`` ``[W, L]``: each window predicts its tokens 2..L from the ones before."""
    device = next(model.parameters()).device
    total, count, per_window = 0.0, 0, []
    for w in tqdm(windows, desc=desc, disable=not progress, leave=False):
        ids = w.unsqueeze(0).to(device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        nll = F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        if not math.isfinite(nll):
            raise FloatingPointError(
                "the model produced non-finite logits; the quantized weights or the dtype overflowed "
                "(try float32, or check the checkpoint)"
            )
        total += nll
        count += ids.shape[1] - 1
        per_window.append(nll / (ids.shape[1] - 1))
    mean = total / count
    return PerplexityResult(math.exp(mean), mean, count, len(windows), windows.shape[1], per_window)
