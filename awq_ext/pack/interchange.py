"""The interchange INT4 layout: what transformers, vLLM and AutoAWQ read as AWQ "GEMM".

One pack/unpack pair per layout (DESIGN §8.4). The layout itself is described once, by
:data:`INTERCHANGE_GEMM` (see :class:`InterchangeGemmLayout` for exact shapes and bit order).

Conventions shared with :mod:`awq_ext.quant.quantizer`: a linear has ``in_features = K``,
``out_features = N``; its codes ``q`` are int32 ``[N, K]`` and its group parameters ``[N, n_groups]``.
The interchange layout stores everything transposed (input rows first), as the reference kernels want.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import QuantizedWeight, QuantSpec


@dataclass(frozen=True)
class InterchangeGemmLayout:
    """AWQ "GEMM" interchange layout, version tag ``"gemm"``.

    For one linear with in_features ``K``, out_features ``N`` (``N % 8 == 0``), group size ``G``
    (``G = K`` when ``group_size == -1``) and ``n_groups = K // G`` groups:

    * ``qweight`` int32 ``[K, N // 8]``: row ``k`` holds the 4-bit codes of input channel ``k``.
    * ``qzeros``  int32 ``[n_groups, N // 8]``: integer zero points, packed exactly like ``qweight``.
    * ``scales``  float16 ``[n_groups, N]``: one step size per group and output column (not packed).
    * ``g_idx``   int32 ``[K]`` (optional, GPTQ act-order / "GPTQ-R" only): the group of input
      row ``k``. Without it, row ``k`` belongs to group ``k // G``.

    Packing of one int32 word ``j`` of a row: it holds the eight output columns ``8j .. 8j+7``;
    nibble ``i`` (bits ``4i .. 4i+3``, ``i = 0`` least significant) holds column
    ``8j + column_order[i]`` with ``column_order = (0, 2, 4, 6, 1, 3, 5, 7)``. Codes are unsigned,
    ``0..15``; the word is reinterpreted as a signed int32 (nibble 7 >= 8 makes it negative).

    Dequantization of weight element ``W[n, k]`` (nn.Linear orientation ``[N, K]``)::

        g = g_idx[k] if g_idx is given else k // G
        W[n, k] = (code(qweight, k, n) - code(qzeros, g, n)) * scales[g, n]

    Symmetric quantization (``zero_point=False``) stores ``code = q + 8`` and every zero point
    as ``8``, so readers that always subtract zeros decode it correctly.
    """

    name: str = "awq-gemm-interchange"
    version: str = "gemm"
    bits: int = 4
    pack_factor: int = 8
    column_order: tuple[int, ...] = (0, 2, 4, 6, 1, 3, 5, 7)


INTERCHANGE_GEMM = InterchangeGemmLayout()
"""The one interchange layout instance; read its class docstring for shapes and bit order."""

# nibble index -> column within the word, and its inverse (column -> nibble index)
_ORDER = torch.tensor(INTERCHANGE_GEMM.column_order, dtype=torch.long)
_INVERSE_ORDER = torch.argsort(_ORDER)
_SYMMETRIC_OFFSET = 2 ** (INTERCHANGE_GEMM.bits - 1)  # 8: shifts signed codes [-8, 7] to [0, 15]
_NIBBLE_MAX = 2**INTERCHANGE_GEMM.bits - 1
_PACK_CHUNK_ELEMENTS = 2**20


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack unsigned 4-bit codes ``[R, C]`` (``C % 8 == 0``, values ``0..15``) into int32 ``[R, C // 8]``.

    Word ``j`` of row ``r`` holds ``codes[r, 8j + column_order[i]]`` at bits ``4i..4i+3``.
    """
    if codes.dim() != 2:
        raise AWQInputError(f"pack_int4: expected 2-D codes [rows, cols], got shape {tuple(codes.shape)}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise AWQInputError(f"pack_int4: expected integer codes, got dtype {codes.dtype}")
    rows, cols = codes.shape
    if cols % INTERCHANGE_GEMM.pack_factor != 0:
        raise AWQInputError(
            f"pack_int4: {cols} columns is not a multiple of 8; the interchange layout packs eight "
            "output channels per int32, so out_features must be divisible by 8"
        )
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > _NIBBLE_MAX):
        raise AWQInputError(
            f"pack_int4: codes must lie in [0, 15], got range [{int(codes.min())}, {int(codes.max())}]"
        )
    out = torch.empty(rows, cols // 8, dtype=torch.int32, device=codes.device)
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=codes.device)
    order = _ORDER.to(codes.device)
    # Row chunks keep the int64 temporaries to ~8 MiB, whatever the layer's size (a 8192 x 28672 layer
    # would otherwise take several GiB while packing).
    step = max(1, _PACK_CHUNK_ELEMENTS // max(cols, 1))
    for r0 in range(0, rows, step):
        # [r, C/8, 8] with the last axis permuted into nibble order, then shifted into place.
        c = codes[r0 : r0 + step].to(torch.int64).reshape(-1, cols // 8, 8)[:, :, order]
        words = (c << shifts).sum(dim=-1)  # disjoint bit fields: sum == bitwise or
        # Reinterpret the unsigned 32-bit value as a signed int32 (two's complement).
        out[r0 : r0 + step] = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
    return out


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int32 ``[R, W]`` -> int32 codes ``[R, 8 * W]`` in ``0..15``."""
    if packed.dim() != 2:
        raise AWQInputError(f"unpack_int4: expected 2-D packed words, got shape {tuple(packed.shape)}")
    if packed.dtype != torch.int32:
        raise AWQInputError(f"unpack_int4: expected int32 words, got dtype {packed.dtype}")
    rows, words = packed.shape
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=packed.device)
    # Arithmetic shift then mask: the sign-extended high bits are masked away.
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # [R, W, 8], nibble order
    return nibbles[:, :, _INVERSE_ORDER.to(packed.device)].reshape(rows, words * 8)


@dataclass
class InterchangeTensors:
    """The packed tensors of one linear in :data:`INTERCHANGE_GEMM` (shapes in its docstring)."""

    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    g_idx: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.qweight.shape[0]

    @property
    def out_features(self) -> int:
        return self.scales.shape[1]

    @property
    def n_groups(self) -> int:
        return self.scales.shape[0]

    def validate(self, group_size: int, name: str = "layer") -> None:
        """Refuse tensors whose dtypes or shapes disagree with the layout and ``group_size``."""
        for key in ("qweight", "qzeros", "scales"):
            if getattr(self, key).dim() != 2:
                raise AWQInputError(f"{name}.{key}: expected a 2-D tensor, got shape {tuple(getattr(self, key).shape)}")
        expected = interchange_shapes(self.in_features, self.scales.shape[-1], group_size, name)
        actual = {"qweight": self.qweight, "qzeros": self.qzeros, "scales": self.scales}
        dtypes = {"qweight": torch.int32, "qzeros": torch.int32, "scales": torch.float16}
        if self.g_idx is not None:
            actual["g_idx"] = self.g_idx
            dtypes["g_idx"] = torch.int32
        for key, tensor in actual.items():
            if tensor.dtype != dtypes[key]:
                raise AWQInputError(f"{name}.{key}: expected dtype {dtypes[key]}, got {tensor.dtype}")
            if tuple(tensor.shape) != expected[key]:
                raise AWQInputError(
                    f"{name}.{key}: expected shape {expected[key]} for in_features {self.in_features}, "
                    f"out_features {self.out_features}, group_size {group_size}; got {tuple(tensor.shape)}"
                )
        if self.g_idx is not None and self.g_idx.numel():
            lo, hi = int(self.g_idx.min()), int(self.g_idx.max())
            if lo < 0 or hi >= self.n_groups:
                raise AWQInputError(
                    f"{name}.g_idx: group indices must lie in [0, {self.n_groups - 1}], got [{lo}, {hi}]"
                )


def interchange_shapes(
    in_features: int, out_features: int, group_size: int, name: str = "layer"
) -> dict[str, tuple[int, ...]]:
    """Exact tensor shapes of one linear in the interchange layout (``g_idx`` included for act-order)."""
    if out_features % INTERCHANGE_GEMM.pack_factor != 0:
        raise AWQInputError(
            f"{name}: out_features {out_features} is not a multiple of 8, which the interchange layout "
            "needs (eight output channels per int32); keep this layer unquantized"
        )
    g = in_features if group_size == -1 else group_size
    if g <= 0 or in_features % g != 0:
        raise AWQInputError(
            f"{name}: in_features {in_features} is not divisible by group_size {group_size}; "
            "use a group size that divides it or -1"
        )
    n_groups = in_features // g
    words = out_features // INTERCHANGE_GEMM.pack_factor
    return {
        "qweight": (in_features, words),
        "qzeros": (n_groups, words),
        "scales": (n_groups, out_features),
        "g_idx": (in_features,),
    }


def to_interchange_precision(qw: QuantizedWeight) -> QuantizedWeight:
    """``qw`` with scales rounded to float16, exactly what the interchange layout can store.

    Use it to build a pseudo-quantized reference whose weights equal the packed model's bit for bit:
    ``to_interchange_precision(qw).dequantize()``.
    """
    scales = qw.scales.to(torch.float16).to(qw.scales.dtype)
    return QuantizedWeight(q=qw.q, scales=scales, zeros=qw.zeros, spec=qw.spec, g_idx=qw.g_idx)


def pack_interchange(qw: QuantizedWeight, name: str = "layer") -> InterchangeTensors:
    """Pack a 4-bit :class:`QuantizedWeight` (``q`` ``[N, K]``) into the interchange layout.

    Refuses bit widths other than 4: the layout has no room for them, so the pipeline keeps
    pseudo-quantized float weights for W2/W3/W5..W8.
    """
    spec = qw.spec
    if spec.bits != INTERCHANGE_GEMM.bits:
        raise AWQInputError(
            f"{name}: cannot pack {spec.bits}-bit codes; the interchange layout holds 4-bit codes only. "
            f"Keep W{spec.bits} layers pseudo-quantized (dequantized float weights) or quantize with --w-bit 4"
        )
    q = qw.q
    if q.dim() != 2:
        raise AWQInputError(f"{name}: expected codes q of shape [out_features, in_features], got {tuple(q.shape)}")
    n, k = q.shape
    shapes = interchange_shapes(k, n, spec.group_size, name)
    n_groups = shapes["scales"][0]
    if tuple(qw.scales.shape) != (n, n_groups):
        raise AWQInputError(f"{name}: scales shape {tuple(qw.scales.shape)} != expected {(n, n_groups)}")
    if qw.q.numel() and (int(q.min()) < spec.qmin or int(q.max()) > spec.qmax):
        raise AWQInputError(
            f"{name}: codes outside [{spec.qmin}, {spec.qmax}] for {spec}: range [{int(q.min())}, {int(q.max())}]"
        )
    scales16 = qw.scales.to(torch.float16)
    if not torch.isfinite(scales16).all():
        raise AWQInputError(f"{name}: scales are NaN/Inf or overflow float16 (max |scale| 65504)")

    if spec.zero_point:
        if qw.zeros is None:
            raise AWQInputError(f"{name}: spec has zero_point=True but zeros is None")
        if tuple(qw.zeros.shape) != (n, n_groups):
            raise AWQInputError(f"{name}: zeros shape {tuple(qw.zeros.shape)} != expected {(n, n_groups)}")
        zeros = qw.zeros
        if not torch.equal(zeros, torch.round(zeros.float()).to(zeros.dtype)):
            raise AWQInputError(f"{name}: zero points must be integers")
        zeros = zeros.to(torch.int32)
        codes = q.to(torch.int32)  # 0..15: int32 holds them; pack_int4 widens chunk by chunk
    else:
        if qw.zeros is not None:
            raise AWQInputError(f"{name}: spec has zero_point=False but zeros were given")
        codes = q.to(torch.int32) + _SYMMETRIC_OFFSET
        zeros = torch.full((n, n_groups), _SYMMETRIC_OFFSET, dtype=torch.int32, device=q.device)

    g_idx = None
    if qw.g_idx is not None:
        g_idx = qw.g_idx.to(torch.int32)
        if tuple(g_idx.shape) != (k,):
            raise AWQInputError(f"{name}: g_idx shape {tuple(g_idx.shape)} != expected {(k,)}")
    packed = InterchangeTensors(
        qweight=pack_int4(codes.t().contiguous()),
        qzeros=pack_int4(zeros.t().contiguous()),
        scales=scales16.t().contiguous(),
        g_idx=g_idx,
    )
    packed.validate(spec.group_size, name)
    return packed


def unpack_interchange(
    t: InterchangeTensors, group_size: int, zero_point: bool = True, name: str = "layer"
) -> QuantizedWeight:
    """Inverse of :func:`pack_interchange`: a :class:`QuantizedWeight` with ``q`` int32 ``[N, K]``.

    Scales come back as float32 (exact values of the stored float16). With ``zero_point=False``,
    codes are shifted back to ``[-8, 7]``; every stored zero must then be 8.
    """
    t.validate(group_size, name)
    spec = QuantSpec(bits=INTERCHANGE_GEMM.bits, group_size=group_size, zero_point=zero_point)
    codes = unpack_int4(t.qweight).t().contiguous()  # [N, K]
    zeros = unpack_int4(t.qzeros).t().contiguous()  # [N, n_groups]
    scales = t.scales.float().t().contiguous()
    if zero_point:
        return QuantizedWeight(q=codes, scales=scales, zeros=zeros.float(), spec=spec, g_idx=t.g_idx)
    if not bool((zeros == _SYMMETRIC_OFFSET).all()):
        raise AWQInputError(
            f"{name}: zero_point=False but qzeros are not all {_SYMMETRIC_OFFSET}; the tensors were "
            "packed asymmetrically - read them with zero_point=True"
        )
    return QuantizedWeight(q=codes - _SYMMETRIC_OFFSET, scales=scales, zeros=None, spec=spec, g_idx=t.g_idx)


def dequantize_interchange(t: InterchangeTensors, group_size: int, name: str = "layer") -> torch.Tensor:
    """Float32 weights ``[N, K]`` (nn.Linear orientation) the packed tensors stand for.

    Computed as ``(code - zero) * scale`` in float32 for every layout variant (the symmetric offset
    cancels), so it equals ``to_interchange_precision(qw).dequantize()`` bit for bit.
    """
    t.validate(group_size, name)
    codes = unpack_int4(t.qweight)  # [K, N]
    zeros = unpack_int4(t.qzeros)  # [n_groups, N]
    k = t.in_features
    if t.g_idx is not None:
        groups = t.g_idx.long()
    else:
        g = k if group_size == -1 else group_size
        groups = torch.arange(k, device=codes.device) // g
    w = (codes - zeros[groups]).float() * t.scales.float()[groups]  # [K, N]
    return w.t().contiguous()
