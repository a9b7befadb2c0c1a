"""Token windows for evaluation and calibration, kept disjoint.

Evaluation (the GPTQ/AWQ protocol): the source's eval text is tokenized once and cut into the first
``max_windows`` non-overlapping windows of ``seqlen`` tokens. Calibration: ``n_samples`` non-overlapping
blocks of ``seqlen`` tokens; when calibration and evaluation share one text, the blocks start after the
reserved evaluation region, so no token is used for both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from awq_ext.errors import AWQInputError
from awq_ext.data.sources import TextSource

# Protocol P's evaluation region: calibration on a shared text always starts after it, so a model
# calibrated without evaluating can still be evaluated on the protocol later without overlap.
PROTOCOL_WINDOWS = 16
PROTOCOL_SEQLEN = 1024


def tokenize(text: str, tokenizer) -> torch.Tensor:
    """1-D int64 token ids of ``text`` as the model's tokenizer produces them."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    return ids.to(torch.long)


@dataclass(frozen=True)
class TokenRange:
    start: int
    stop: int

    def overlaps(self, other: "TokenRange") -> bool:
        return self.start < other.stop and other.start < self.stop


def eval_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None) -> tuple[torch.Tensor, TokenRange]:
    """``[W, seqlen]`` windows from the start of ``ids`` and the token range they use."""
    if seqlen < 2:
        raise AWQInputError(f"eval seqlen must be >= 2, got {seqlen}")
    n = ids.numel() // seqlen
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise AWQInputError(f"eval text has {ids.numel()} tokens, fewer than one window of {seqlen}")
    return ids[: n * seqlen].view(n, seqlen), TokenRange(0, n * seqlen)


def calib_blocks(ids: torch.Tensor, n_samples: int, seqlen: int, start: int) -> tuple[torch.Tensor, TokenRange]:
    """``[n_samples, seqlen]`` contiguous blocks from ``ids[start:]`` and their token range."""
    if n_samples < 1 or seqlen < 1:
        raise AWQInputError(f"need n_samples >= 1 and seqlen >= 1, got {n_samples} x {seqlen}")
    need = n_samples * seqlen
    have = ids.numel() - start
    if have < need:
        raise AWQInputError(
            f"calibration needs {n_samples} x {seqlen} = {need} tokens but only {max(have, 0)} remain after "
            f"token {start} (tokens before it are reserved for evaluation); lower --n-samples/--seqlen, "
            "use fewer --max-windows, or calibrate on another text with --calib"
        )
    return ids[start : start + need].view(n_samples, seqlen), TokenRange(start, start + need)


def calib_start(source: TextSource, eval_source: TextSource | None, eval_tokens: int | None) -> int:
    """First calibration token: after the evaluation region when the two share a text."""
    if not source.shared:
        return 0
    reserved = PROTOCOL_WINDOWS * PROTOCOL_SEQLEN
    if eval_source is not None and eval_source.name == source.name:
        if eval_tokens is None:
            raise AWQInputError(
                "calibration and evaluation use the same text and evaluation takes all of it; "
                "set --max-windows so calibration can use the tokens after the evaluation windows"
            )
        reserved = max(reserved, eval_tokens)
    return reserved
