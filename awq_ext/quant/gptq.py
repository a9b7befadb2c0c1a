"""GPTQ: second-order weight quantization with error feedback (pure tensor math).

For one linear with weight ``W`` ``[N, K]`` and calibration inputs ``X`` (tokens x K), GPTQ minimises
``||W X^T - W_hat X^T||^2`` column by column: it quantizes input channel ``k``, then spreads that
column's rounding error over the not-yet-quantized channels through the inverse Hessian
``H^-1`` (``H = 2/T · X^T X``), so later columns compensate for earlier ones.

Steps (Frantar et al., 2022, re-derived here):

1. ``H`` accumulated from the inputs as a running mean over token chunks (:class:`HessianAccumulator`;
   float64 by default, float32 as llm-compressor does); channels that never fire (``H[k, k] == 0``) get
   ``H[k, k] = 1`` and a zero weight column. Linears reading the same input (q/k/v, gate/up) share one
   Hessian through a caller-owned :class:`HessianCache`.
2. Act-order (GPTQ-R): channels are processed in descending ``diag(H)`` order (the most-activated,
   salient channels first, so they are never bent to compensate for others).
3. Dampening: ``H += damp · mean(diag(H)) · I``.
4. ``U = chol(H^-1)`` (upper Cholesky factor of the inverse): row ``i`` of ``U`` scaled by ``1/U[i,i]``
   is exactly the update that the optimal-brain-surgeon step applies to the remaining columns, so one
   factorisation replaces the per-column inverse downdates.
5. Lazy batches of ``block_size`` columns: updates inside a batch are applied column by column, the
   batch's accumulated errors are pushed to the columns after it in one matrix product.
6. Group parameters (scale/zero per ``group_size`` input channels) from an observer
   (:data:`~awq_ext.quant.quantizer.OBSERVERS`: ``minmax`` or the ``mse`` range search), in one of two ways:

   * static groups (``static_groups=True``): computed once, before the loop, from the original weights of
     the contiguous groups ``k // group_size`` (llm-compressor's act-order "static"). Act-order still picks
     the processing order, each column is quantized with its own contiguous group's parameters, and the
     export is the plain layout (no ``g_idx``) that the reorder-free kernel reads.
   * dynamic groups (``static_groups=False``, the reference GPTQ): computed when the loop reaches a group's
     first column, from the *already-updated* weights of that group's columns in processing order. With
     act-order, group ``j`` therefore holds the ``j``-th run of ``group_size`` channels in processing order
     and ``g_idx[k]`` (int32 ``[K]``) records each input channel's group. Lazy batches are rounded down to a
     multiple of the group size so a group's parameters always see its columns fully updated.

   Either way ``QuantizedWeight(q, scales, zeros, spec, g_idx).dequantize()`` reproduces the GPTQ weights
   bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import OBSERVERS, QuantizedWeight, QuantSpec, check_weight

HESSIAN_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class HessianAccumulator:
    """Running ``H = 2/T · Σ_t x_t x_t^T`` (``[K, K]``, ``dtype``) over calibration tokens.

    ``add`` takes any ``[..., K]`` tensor (e.g. ``[n_samples, seqlen, K]``); streaming keeps memory at one
    ``K x K`` matrix however much calibration data flows through. Each chunk's ``x^T x`` is a float32
    product; the mean is kept normalised after every chunk (``H <- H·T/(T+m) + 2/(T+m)·x^T x``), so a
    float32 ``H`` never grows with the token count.
    """

    CHUNK = 4096  # tokens per float32 product

    def __init__(self, in_features: int, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float64):
        if in_features < 1:
            raise AWQInputError(f"Hessian needs in_features >= 1, got {in_features}")
        if dtype not in HESSIAN_DTYPES.values():
            raise AWQInputError(f"Hessian dtype must be float64 or float32, got {dtype}")
        self.k = in_features
        self._h = torch.zeros(in_features, in_features, dtype=dtype, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.k:
            raise AWQInputError(f"Hessian: inputs have {x.shape[-1]} channels, the layer has {self.k}")
        flat = x.reshape(-1, self.k).to(device=self._h.device, dtype=torch.float32)
        if not torch.isfinite(flat).all():
            raise AWQInputError("GPTQ calibration inputs contain NaN/Inf; check the calibration data and the "
                                "float model")
        for i in range(0, flat.shape[0], self.CHUNK):
            c = flat[i : i + self.CHUNK]
            total = self.tokens + c.shape[0]
            self._h.mul_(self.tokens / total).add_((c.t() @ c).to(self._h.dtype), alpha=2.0 / total)
            self.tokens = total

    @property
    def hessian(self) -> torch.Tensor:
        if self.tokens == 0:
            raise AWQInputError("GPTQ needs calibration inputs for every linear; none were recorded")
        return self._h


def hessian_from_inputs(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``2/T · X^T X`` (``[K, K]``, ``dtype``) for inputs ``x`` ``[..., K]``."""
    acc = HessianAccumulator(x.shape[-1], device=x.device, dtype=dtype)
    acc.add(x)
    return acc.hessian


class HessianCache:
    """Hessians of the input tensors seen so far, one per distinct tensor object and dtype.

    The calibration driver hands linears that read the same activation (q/k/v, gate/up) the very same
    tensor, so their Hessian is built once. The cache holds a reference to each tensor (its ``id`` cannot
    be reused while cached); the owner drops the cache with the block's activations.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        key = (id(x), dtype)
        if key not in self._entries:
            self._entries[key] = (x, hessian_from_inputs(x, dtype))
        return self._entries[key][1]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class GPTQResult:
    quantized: QuantizedWeight
    weight: torch.Tensor  # float32 [N, K]: the GPTQ weights (== quantized.dequantize(), bit for bit)
    perm: torch.Tensor | None  # int64 [K] processing order (act-order only): perm[j] = j-th channel done
    damp_used: float  # absolute dampening added to the diagonal


def _inverse_cholesky(h: torch.Tensor, damp: float) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of ``(H + λI)^-1`` with ``λ = damp · mean(diag H)``."""
    lam = damp * float(torch.diagonal(h).mean())
    hd = h.clone()
    hd.diagonal().add_(lam)
    l, info = torch.linalg.cholesky_ex(hd)
    if int(info) != 0:
        raise AWQInputError(
            f"GPTQ: the dampened Hessian is not positive definite (damp={damp}); the calibration inputs are "
            "degenerate for this layer - raise the dampening (e.g. extra damp=0.1) or use more calibration data"
        )
    hinv = torch.cholesky_inverse(l)
    u, info = torch.linalg.cholesky_ex(hinv, upper=True)
    if int(info) != 0:
        raise AWQInputError(f"GPTQ: inverse Hessian factorisation failed (damp={damp}); raise the dampening")
    return u, lam


def _quantize_column(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, spec: QuantSpec
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    # Same arithmetic as quantizer.quantize/dequantize, so QuantizedWeight.dequantize() matches bit for bit.
    q = torch.round(w / scale)
    if zero is not None:
        q = q + zero
    q = q.clamp(spec.qmin, spec.qmax)
    deq = q - zero if zero is not None else q
    return q, deq * scale


@torch.no_grad()
def gptq_quantize(
    w: torch.Tensor,
    h: torch.Tensor,
    spec: QuantSpec,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    static_groups: bool = False,
    observer: str = "minmax",
    name: str = "weight",
) -> GPTQResult:
    """Quantize ``w`` ``[N, K]`` with GPTQ given its Hessian ``h`` ``[K, K]`` (from :class:`HessianAccumulator`).

    Returns codes ``q`` int32 ``[N, K]`` in input-channel order and ``scales``/``zeros`` ``[N, K/G]``: with
    static groups (or no act-order) group ``j`` is channels ``j·G .. (j+1)·G - 1``; with act-order and dynamic
    groups group ``j`` is the ``j``-th group in processing order and ``g_idx`` int32 ``[K]`` maps channels to
    groups. Computation is float32 on ``w``'s device; ``w`` is not modified.
    """
    check_weight(w, spec, name)
    n, k = w.shape
    if h.shape != (k, k):
        raise AWQInputError(f"{name}: Hessian shape {tuple(h.shape)} does not match in_features {k}")
    if not 0.0 <= damp:
        raise AWQInputError(f"{name}: GPTQ damp must be >= 0, got {damp}")
    if block_size < 1:
        raise AWQInputError(f"{name}: GPTQ block_size must be >= 1, got {block_size}")
    if observer not in OBSERVERS:
        raise AWQInputError(f"{name}: unknown GPTQ observer {observer!r}; choose one of {', '.join(OBSERVERS)}")
    find_qparams = OBSERVERS[observer]
    dev = w.device
    W = w.detach().float().clone()
    H = h.detach().to(device=dev, dtype=torch.float64).clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    g = spec.effective_group(k)
    n_groups = spec.groups(k)
    # Per-row parameters (no groups) are fixed up front either way: there is one group, seen whole.
    static = static_groups or spec.group_size == -1

    perm = None
    if act_order:
        perm = torch.argsort(torch.diagonal(H), descending=True, stable=True)
    scales = torch.zeros(n, n_groups, dtype=torch.float32, device=dev)
    zeros = torch.zeros(n, n_groups, dtype=torch.float32, device=dev) if spec.zero_point else None
    col_s = col_z = None
    if static:
        # Parameters of the contiguous groups of the (dead-zeroed) original weights, then each column's
        # own group's parameters laid out in processing order.
        scales, zeros = find_qparams(W, spec)
        col_group = (perm if perm is not None else torch.arange(k, device=dev)) // g
        col_s = scales[:, col_group]
        col_z = None if zeros is None else zeros[:, col_group]
    if perm is not None:
        W = W[:, perm]
        H = H[perm][:, perm]
    U, lam = _inverse_cholesky(H, damp)
    U = U.float()
    del H

    Q = torch.empty_like(W)  # integer codes (as float) in processing order
    W_hat = torch.empty_like(W)
    if not static:
        # Dynamic groups never straddle a lazy batch (their parameters need this batch's updates).
        block_size = max(g, block_size // g * g)
    group_spec = QuantSpec(spec.bits, -1, spec.zero_point)
    cur_s = cur_z = None
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.empty_like(W1)
        U1 = U[i1:i2, i1:i2]
        d = torch.diagonal(U1)
        for i in range(i2 - i1):
            j = i1 + i
            if static:
                cur_s = col_s[:, j]
                cur_z = None if col_z is None else col_z[:, j]
            elif j % g == 0:
                # Dynamic group: parameters from the current (error-updated) weights of its columns.
                s_, z_ = find_qparams(W1[:, i : i + g], group_spec)
                cur_s, cur_z = s_[:, 0], (None if z_ is None else z_[:, 0])
                scales[:, j // g] = cur_s
                if zeros is not None:
                    zeros[:, j // g] = cur_z
            col = W1[:, i]
            q, deq = _quantize_column(col, cur_s, cur_z, spec)
            Q[:, j] = q
            W_hat[:, j] = deq
            err = (col - deq) / d[i]
            W1[:, i:].addr_(err, U1[i, i:], alpha=-1.0)
            Err1[:, i] = err
        if i2 < k:
            W[:, i2:].addmm_(Err1, U[i1:i2, i2:], alpha=-1.0)

    g_idx = None
    if perm is not None:
        inv = torch.argsort(perm)
        Q, W_hat = Q[:, inv], W_hat[:, inv]
        if not static:
            g_idx = (inv // g).to(torch.int32)  # channel perm[j] sits at position j -> group j // g
    qw = QuantizedWeight(Q.to(torch.int32), scales.float(), None if zeros is None else zeros.float(), spec, g_idx)
    return GPTQResult(qw, W_hat, perm, lam)


def output_error(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared output error ``||x W^T - x W_hat^T||^2 / (T·N)`` for inputs ``x`` ``[..., K]``."""
    xf = x.reshape(-1, x.shape[-1]).float()
    return float((xf @ (w.float() - w_hat.float()).t()).pow(2).mean())
