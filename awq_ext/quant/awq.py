"""AWQ's searches as pure functions: per-input-channel scales and per-group clipping.

Scale search (paper Eq. 1-2): find ``s`` minimising ``||Q(W·diag(s)) (diag(s)^-1 X) - W X||`` over the
family ``s = s_X^α · s_W^-β`` where ``s_X`` is the mean |activation| per input channel and ``s_W`` the mean
group-normalised |weight| per input channel. The caller supplies the loss (it owns the module to run);
here we only generate candidates and keep the best.

Clip search: per output row and group, shrink the clipping range ``[-m·r, m·r]`` (``m`` = max |w| of the
group, ``r`` from 1 down to ``1 - max_shrink``) and keep the ratio with the least per-group output error
on a subsample of calibration tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Sequence

import torch

from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import QuantSpec, compute_qparams, fake_quantize_with

ScaleMode = Literal["act", "duo", "weight", "joint"]
SCALE_MODES: tuple[str, ...] = ("act", "duo", "weight", "joint")


def activation_scale(x: torch.Tensor) -> torch.Tensor:
    """``s_X``: mean |x| per input channel over all tokens of ``x`` ``[..., K]`` (float32 ``[K]``)."""
    return x.abs().reshape(-1, x.shape[-1]).float().mean(dim=0)


def weight_scale(weights: Sequence[torch.Tensor], spec: QuantSpec) -> torch.Tensor:
    """``s_W``: mean over output rows of |w| normalised by its group's max |w| (float32 ``[K]``).

    Normalising inside each group makes rows of different magnitude comparable, as the paper's W*.
    """
    w = torch.cat([wi.float() for wi in weights], dim=0).abs_()  # cat copies: in place from here on
    n, k = w.shape
    g = spec.effective_group(k)
    wg = w.view(n, k // g, g)
    wg.div_(wg.amax(dim=-1, keepdim=True).clamp(min=1e-8))
    return w.mean(dim=0)


def _normalise(s: torch.Tensor) -> torch.Tensor:
    # Centre the scales geometrically so W·s stays in the same range as W; only ratios matter.
    s = s.clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def candidate_scales(
    s_x: torch.Tensor, s_w: torch.Tensor, mode: ScaleMode, n_grid: int = 20
) -> list[tuple[float, float, torch.Tensor]]:
    """Grid of ``(alpha, beta, scales)`` to try; always starts with the identity ``s = 1``.

    ``act``: s_X^α; ``duo``: s_X^α · s_W^-(1-α); ``weight``: s_W^-β; ``joint``: s_X^α · s_W^-β on an
    ``n_grid x n_grid`` grid. α and β take ``i / n_grid`` for ``i in range(n_grid)``. The identity is kept
    so the searched loss can never exceed plain round-to-nearest's on the calibration data.
    """
    if mode not in SCALE_MODES:
        raise AWQInputError(f"unknown scale mode {mode!r}; choose one of {', '.join(SCALE_MODES)}")
    if n_grid < 1:
        raise AWQInputError(f"n_grid must be >= 1, got {n_grid}")
    grid = [i / n_grid for i in range(n_grid)]
    pairs: list[tuple[float, float]]
    if mode == "act":
        pairs = [(a, 0.0) for a in grid]
    elif mode == "duo":
        pairs = [(a, 1.0 - a) for a in grid]
    elif mode == "weight":
        pairs = [(0.0, b) for b in grid]
    else:
        pairs = [(a, b) for a in grid for b in grid]
    ones = torch.ones_like(s_x, dtype=torch.float32)
    out = [(0.0, 0.0, ones)]
    for a, b in pairs:
        if a == 0.0 and b == 0.0:
            continue
        s = s_x.float().clamp(min=1e-4).pow(a) / s_w.float().clamp(min=1e-4).pow(b)
        out.append((a, b, _normalise(s)))
    return out


def input_gram(x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """``C = X^T X`` (``[K, K]``, float32 or wider) of inputs ``x`` ``[..., K]``, accumulated over token chunks so no
    float32 copy of all of ``x`` is made."""
    flat = x.reshape(-1, x.shape[-1])
    dt = torch.promote_types(x.dtype, torch.float32)
    c = torch.zeros(flat.shape[1], flat.shape[1], dtype=dt, device=x.device)
    for i in range(0, flat.shape[0], chunk):
        xc = flat[i : i + chunk].to(dt)
        c.addmm_(xc.t(), xc)
    return c


def gram_output_sse(delta_w: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``sum_t ||ΔW x_t||^2 = tr(ΔW C ΔW^T)`` for a weight error ``ΔW`` ``[N, K]`` and ``C`` from
    :func:`input_gram`: a linear layer's summed squared output error, exact, in ``N·K²`` multiply-adds
    instead of ``T·N·K`` (the bias cancels in the difference)."""
    d = delta_w.to(gram.dtype)
    return ((d @ gram) * d).sum()


@dataclass
class ScaleSearchResult:
    scales: torch.Tensor  # float32 [K]
    alpha: float
    beta: float
    loss: float
    identity_loss: float  # loss with s = 1 (round-to-nearest), for reports
    tried: list[tuple[float, float, float]] = field(default_factory=list)  # (alpha, beta, loss) in grid order


def _refine_order(n: int, stride: int, loss_at: Callable[[int], float]) -> None:
    """Coarse-to-fine over grid positions ``0..n-1``: every ``stride``-th position (and the last), then
    around the best so far at half the stride, down to 1. Finds the grid's minimum whenever the loss is
    unimodal along the grid, in about ``n/stride + 2·log2(stride)`` evaluations instead of ``n``."""
    done: dict[int, float] = {}

    def ev(i: int) -> None:
        if 0 <= i < n and i not in done:
            done[i] = loss_at(i)

    for i in [*range(0, n, stride), n - 1]:
        ev(i)
    step = stride
    while step > 1:
        step //= 2
        best = min(done, key=lambda i: (done[i], i))
        ev(best - step)
        ev(best + step)
    # +-1 rings around the best until it stops moving, so strides that are not powers of two (whose halving
    # leaves gaps) and the end of the grid are covered
    best = None
    while best != (best := min(done, key=lambda i: (done[i], i))):
        ev(best - 1)
        ev(best + 1)


def search_scales(
    candidates: Iterable[tuple[float, float, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor], float],
    refine_stride: int = 1,
) -> ScaleSearchResult:
    """Evaluate ``loss_fn(scales)`` over the candidates and return the best (first in grid order on ties).

    The first candidate must be the identity (as :func:`candidate_scales` yields); it is always tried.
    ``refine_stride`` 1 tries every candidate; ``k > 1`` searches the rest of the (1-D, ordered) grid
    coarse-to-fine (:func:`_refine_order`): the same answer as the full grid when the loss is unimodal
    along it, with about half the evaluations for ``k = 4`` on 20 points.
    """
    cands = list(candidates)
    if not cands:
        raise AWQInputError("scale search got no candidates")
    if refine_stride < 1:
        raise AWQInputError(f"refine_stride must be >= 1, got {refine_stride}")
    losses: dict[int, float] = {}

    def loss_at(i: int) -> float:
        a, b, s = cands[i]
        loss = float(loss_fn(s))
        if loss != loss:  # NaN means the module blew up; the caller's data is broken
            raise AWQInputError(
                f"scale search produced a NaN loss at alpha={a}, beta={b}; check calibration inputs "
                "and weights for NaN/Inf"
            )
        losses[i] = loss
        return loss

    loss_at(0)
    if refine_stride == 1 or len(cands) <= 2:
        for i in range(1, len(cands)):
            loss_at(i)
    else:
        _refine_order(len(cands) - 1, refine_stride, lambda j: loss_at(j + 1))
    best = min(losses, key=lambda i: (losses[i], i))
    a, b, s = cands[best]
    identity = cands[0][0] == 0.0 and cands[0][1] == 0.0
    tried = [(cands[i][0], cands[i][1], losses[i]) for i in sorted(losses)]
    return ScaleSearchResult(s, a, b, losses[best], losses[0] if identity else float("nan"), tried)


def clip_weight(w: torch.Tensor, max_val: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Clamp each group of ``w`` ``[N, K]`` to ``[-max_val, max_val]`` (``max_val`` ``[N, K/G]``)."""
    n, k = w.shape
    g = spec.effective_group(k)
    wg = w.reshape(n, k // g, g)
    m = max_val.to(w.dtype).unsqueeze(-1)
    return torch.max(torch.min(wg, m), -m).reshape(n, k)


def group_grams(x: torch.Tensor, g: int) -> torch.Tensor:
    """Per-group second moments ``C[j] = X_j^T X_j / T`` (``[K/G, G, G]``) of inputs ``x`` ``[T, K]``."""
    t, k = x.shape
    xg = x.reshape(t, k // g, g).transpose(0, 1)  # [J, T, G]
    return torch.bmm(xg.transpose(1, 2), xg) / t


def group_output_errors(d: torch.Tensor, grams: torch.Tensor) -> torch.Tensor:
    """Mean squared per-group output error ``E_t[(x_{t,j} . d_{n,j})^2] = d_{n,j}^T C_j d_{n,j}``.

    ``d`` ``[N, K]`` is a weight error, ``grams`` from :func:`group_grams`; returns ``[N, K/G]``. The Gram form
    costs N*K*G multiply-adds per call instead of T*N*K for the per-group partial products (T >> G).
    """
    j, g, _ = grams.shape
    dg = d.reshape(d.shape[0], j, g).transpose(0, 1)  # [J, N, G]
    return (torch.bmm(dg, grams) * dg).sum(-1).transpose(0, 1)  # [N, J]


def _group_outputs(x: torch.Tensor, w: torch.Tensor, g: int) -> torch.Tensor:
    # Per-group partial products: out[t, n, j] = sum_{k in group j} x[t, k] w[n, k]  -> [T, N, K/G]
    t, k = x.shape
    n = w.shape[0]
    xg = x.reshape(t, k // g, g).transpose(0, 1)  # [J, T, G]
    wg = w.reshape(n, k // g, g).permute(1, 2, 0)  # [J, G, N]
    return torch.bmm(xg, wg).permute(1, 2, 0)  # [T, N, J]


@dataclass
class ClipSearchResult:
    max_val: torch.Tensor  # [N, K/G]: clamp bound per group (the group's own max |w| = no clipping)
    error_before: float  # layer output MSE on the sample without clipping
    error_after: float  # ... with the chosen clipping (never larger)


def search_clip(
    w: torch.Tensor,
    x: torch.Tensor,
    spec: QuantSpec,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    row_batch: int = 1024,
) -> ClipSearchResult:
    """Search per-group clipping of ``w`` ``[N, K]`` against sample inputs ``x`` ``[T, K]``.

    Per group the shrink ratio with the least group output MSE wins. Groups interact in the row's output
    (errors of groups add before squaring), so afterwards each output row keeps the clipping only if it
    lowers that row's full output MSE on the sample; the layer's error can therefore never rise.
    """
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise AWQInputError(f"clip search: inputs {tuple(x.shape)} do not match weight {tuple(w.shape)}")
    if not 0.0 <= max_shrink < 1.0:
        raise AWQInputError(f"max_shrink must be in [0, 1), got {max_shrink}")
    w32, x32 = w.float(), x.float()
    n, k = w32.shape
    g = spec.effective_group(k)
    steps = max(1, int(max_shrink * n_grid))
    max_vals, err_before, err_after = [], 0.0, 0.0
    # Gram form while a group is narrower than the token sample (the usual case); with no groups (G = K
    # larger than T) the direct per-group products are cheaper.
    grams = group_grams(x32, g) if g < x32.shape[0] else None
    for r0 in range(0, n, row_batch):
        wb = w32[r0 : r0 + row_batch]
        org = _group_outputs(x32, wb, g) if grams is None else None  # [T, B, J]
        org_max = wb.reshape(wb.shape[0], k // g, g).abs().amax(dim=-1)  # [B, J]
        best_err = torch.full_like(org_max, float("inf"))
        best_max = org_max.clone()
        for i in range(steps):
            m = org_max * (1 - i / n_grid)
            q = dequantize_clipped(wb, m, spec)
            if grams is None:
                err = (_group_outputs(x32, q, g) - org).pow(2).mean(dim=0)  # [B, J]
            else:
                err = group_output_errors(q - wb, grams)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, m, best_max)
        # Row-level guard: keep clipping only for rows where it lowers the full output error.
        ref = x32 @ wb.t()
        e_none = (x32 @ dequantize_clipped(wb, org_max, spec).t() - ref).pow(2).mean(dim=0)
        e_clip = (x32 @ dequantize_clipped(wb, best_max, spec).t() - ref).pow(2).mean(dim=0)
        keep = (e_clip <= e_none).unsqueeze(1)
        max_vals.append(torch.where(keep, best_max, org_max))
        err_before += float(e_none.sum())
        err_after += float(torch.minimum(e_clip, e_none).sum())
    return ClipSearchResult(torch.cat(max_vals), err_before / n, err_after / n)


def dequantize_clipped(w: torch.Tensor, max_val: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Fake-quantize ``w`` after clamping each group to ``±max_val``."""
    wc = clip_weight(w, max_val, spec)
    sc, z = compute_qparams(wc, spec)
    return fake_quantize_with(wc, spec, sc, z)
