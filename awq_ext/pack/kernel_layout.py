"""The kernel INT4 layout: what the CUDA W4A16 kernels in ``csrc/`` read.

One pack/unpack pair (DESIGN §8.4): :func:`pack_kernel` and :func:`unpack_kernel`; the layout is
described once by :data:`KERNEL_W4_TC` (read :class:`KernelW4TCLayout` for shapes and bit order).

Conventions shared with :mod:`awq_ext.quant.quantizer`: a linear has ``in_features = K`` and
``out_features = N``; its codes ``q`` are int32 ``[N, K]`` (nn.Linear orientation) and its group
parameters ``[N, n_groups]``. ``W[n, k] = (q[n, k] - zeros[n, g(k)]) * scales[n, g(k)]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from awq_ext.errors import AWQInputError

KERNEL_GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class KernelW4TCLayout:
    """Tensor-core W4 layout, version tag ``"w4tc-v1"`` (``version_id`` 1 in ``meta``).

    For a linear with ``N`` outputs, ``K`` inputs, group size ``G`` in {32, 64, 128}:
    ``N_pad = ceil(N / 16) * 16`` and ``K_pad = ceil(K / 64) * 64`` (padding codes are 0 and padding
    scales/zeros are 0, so padded weights are exactly 0; the kernels also zero-fill activations past K).

    * ``qweight`` int32 ``[K_pad / 16, N_pad / 16, 32]``: one 16x16 weight block per ``(kt, nt)``,
      one 32-bit word per lane of a warp. With ``g = lane >> 2``, ``t = lane & 3``,
      ``n0 = 16 nt``, ``k0 = 16 kt``, the word of ``lane`` holds the eight codes

          e0 = W[n0+g,   k0+2t]    e1 = W[n0+g,   k0+2t+1]    e2 = W[n0+g,   k0+2t+8]    e3 = W[n0+g,   k0+2t+9]
          e4 = W[n0+8+g, k0+2t]    e5 = W[n0+8+g, k0+2t+1]    e6 = W[n0+8+g, k0+2t+8]    e7 = W[n0+8+g, k0+2t+9]

      and nibble ``i`` (bits ``4i .. 4i+3``, ``i = 0`` least significant) holds ``e[nibble_order[i]]``
      with ``nibble_order = (0, 2, 4, 6, 1, 3, 5, 7)``: the pairs ``(e0, e1), (e2, e3), (e4, e5),
      (e6, e7)`` sit in nibbles ``(0, 4), (1, 5), (2, 6), (3, 7)``, i.e. in the same bit position of
      the low and the high 16-bit half. So ``(word >> 4i) & 0x000f000f`` (or ``word & 0x00f000f0``
      for the odd pairs in fp16) puts one pair in the two halves of a register, and OR-ing a
      magic exponent (fp16 ``0x6400`` = 1024, bf16 ``0x4300`` = 128) makes an fp16x2/bf16x2 of
      ``magic + code`` with one ``lop3`` - no per-element lookups, no shuffles. Those four pairs are
      exactly the ``mma.m16n8k16`` B fragments ``b0,b1`` of the n8 tiles ``n0..n0+7`` and
      ``n0+8..n0+15`` for that lane. The word is stored as a signed int32.
    * ``scales`` (fp16 or bf16, the activation dtype) ``[n_groups_pad, N_pad]``: transposed, and within
      each run of 16 columns position ``16 nt + 2g + j`` holds column ``16 nt + 8j + g`` (``j`` in
      {0, 1}), so one 32-bit load gives a lane the scales of both its n8 tiles.
    * ``zeros``: same dtype, shape and column order as ``scales``; integer zero points 0..15.
    * ``g_idx`` int32 ``[K_pad]`` (GPTQ-R only; padded rows point to group 0): the group of input
      row ``k``. Without it row ``k`` is in group ``k // G`` and ``n_groups_pad = K_pad / G``
      (rounded up); with it ``n_groups_pad = n_groups``.
    * ``meta`` int32 ``[5]``: ``(version_id, N, K, G, has_g_idx)``.

    Bytes per weight at G = 128: 4 bits + 16/128 (scale) + 16/128 (zero) = 4.25 bits.
    """

    name: str = "awq-w4-tensorcore"
    version: str = "w4tc-v1"
    version_id: int = 1
    bits: int = 4
    nibble_order: tuple[int, ...] = (0, 2, 4, 6, 1, 3, 5, 7)
    n_align: int = 16
    k_align: int = 64


KERNEL_W4_TC = KernelW4TCLayout()
"""The one kernel layout instance; read its class docstring for shapes and bit order."""

_NIBBLE_ORDER = torch.tensor(KERNEL_W4_TC.nibble_order, dtype=torch.long)
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def padded_shape(n: int, k: int) -> tuple[int, int]:
    """``(N_pad, K_pad)`` of the kernel layout for a linear with ``n`` outputs and ``k`` inputs."""
    return _round_up(n, KERNEL_W4_TC.n_align), _round_up(k, KERNEL_W4_TC.k_align)


def _check_inputs(
    q: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    group_size: int,
    g_idx: torch.Tensor | None,
    dtype: torch.dtype,
) -> None:
    if dtype not in _SUPPORTED_DTYPES:
        raise AWQInputError(f"kernel layout dtype {dtype} is not supported: use torch.float16 or torch.bfloat16")
    if group_size not in KERNEL_GROUP_SIZES:
        raise AWQInputError(
            f"kernel layout group_size {group_size} is not supported: the CUDA kernels take "
            f"G in {KERNEL_GROUP_SIZES}; requantize with one of those"
        )
    if q.dim() != 2 or q.dtype not in (torch.int32, torch.int64, torch.uint8, torch.int16, torch.int8):
        raise AWQInputError(f"q must be an integer [N, K] tensor of codes, got {q.dtype} {tuple(q.shape)}")
    n, k = q.shape
    if k % group_size != 0:
        raise AWQInputError(f"K={k} is not divisible by group_size {group_size}; pick a group size dividing K")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise AWQInputError(
            f"q codes must lie in 0..15 (4-bit, zero-point form); got range [{int(q.min())}, {int(q.max())}]. "
            "For symmetric codes in [-8, 7] pass q + 8 and zeros = 8"
        )
    if zeros is None:
        raise AWQInputError("zeros is None: the kernel layout always stores zero points; for symmetric "
                            "quantization pass q + 8 and zeros filled with 8")
    n_groups = k // group_size if g_idx is None else scales.shape[-1]
    for name, t in (("scales", scales), ("zeros", zeros)):
        if t.dim() != 2 or t.shape[0] != n or (g_idx is None and t.shape[1] != n_groups):
            raise AWQInputError(
                f"{name} must be [N, n_groups] = [{n}, {n_groups}] for q of shape [{n}, {k}] and "
                f"group_size {group_size}; got {tuple(t.shape)}"
            )
        if not torch.isfinite(t.float()).all():
            raise AWQInputError(f"{name} holds NaN/Inf; the quantization parameters are corrupt")
    zf = zeros.float()
    if zf.numel() and (not torch.equal(zf, zf.round()) or float(zf.min()) < 0 or float(zf.max()) > 15):
        raise AWQInputError("zeros must hold integer values in 0..15 (4-bit zero points)")
    if g_idx is not None:
        if g_idx.dim() != 1 or g_idx.shape[0] != k or g_idx.is_floating_point():
            raise AWQInputError(f"g_idx must be an integer [K] = [{k}] tensor, got {g_idx.dtype} {tuple(g_idx.shape)}")
        if k and (int(g_idx.min()) < 0 or int(g_idx.max()) >= scales.shape[1]):
            raise AWQInputError(
                f"g_idx values must index the {scales.shape[1]} groups of scales; got range "
                f"[{int(g_idx.min())}, {int(g_idx.max())}]"
            )


def _permute_columns(t: torch.Tensor, n_pad: int, groups_pad: int, dtype: torch.dtype) -> torch.Tensor:
    """[N, n_groups] group parameters -> [groups_pad, N_pad] with the pair-interleaved column order."""
    n, ng = t.shape
    out = torch.zeros(n_pad, groups_pad, dtype=dtype, device=t.device)
    out[:n, :ng] = t.to(dtype)
    # [groups, NT, j, g] -> [groups, NT, g, j]: position 2g + j holds column 8j + g
    return out.t().reshape(groups_pad, n_pad // 16, 2, 8).transpose(2, 3).reshape(groups_pad, n_pad).contiguous()


def _unpermute_columns(t: torch.Tensor, n: int, ng: int) -> torch.Tensor:
    groups_pad, n_pad = t.shape
    cols = t.reshape(groups_pad, n_pad // 16, 8, 2).transpose(2, 3).reshape(groups_pad, n_pad)
    return cols.t()[:n, :ng]


def pack_kernel(
    q: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    group_size: int,
    g_idx: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float16,
) -> dict[str, torch.Tensor]:
    """Pack codes ``q`` int ``[N, K]`` (0..15), ``scales`` float ``[N, n_groups]``, ``zeros``
    integer-valued float ``[N, n_groups]`` and optional ``g_idx`` int32 ``[K]`` into :data:`KERNEL_W4_TC`.

    ``scales`` are rounded to ``dtype`` (the activation dtype the kernels will run in). Returns tensors
    ``{"qweight", "scales", "zeros", "meta"}`` plus ``"g_idx"`` when given, on ``q``'s device (``meta``
    always on the CPU); pack on the GPU for large layers, or move with ``{k: v.cuda() for k, v in packed.items()}``.
    """
    _check_inputs(q, scales, zeros, group_size, g_idx, dtype)
    n, k = q.shape
    n_pad, k_pad = padded_shape(n, k)
    nt, kt = n_pad // 16, k_pad // 16

    dev = q.device
    codes = torch.zeros(n_pad, k_pad, dtype=torch.int64, device=dev)
    codes[:n, :k] = q.to(torch.int64)
    # n = 16 nt + 8 j + g ; k = 16 kt + 8 h + 2 t + b ; element e = 4 j + 2 h + b
    c = codes.reshape(nt, 2, 8, kt, 2, 4, 2)  # (nt, j, g, kt, h, t, b)
    e = c.permute(3, 0, 2, 5, 1, 4, 6).reshape(kt, nt, 32, 8)  # (kt, nt, lane=(g,t), e=(j,h,b))
    shifts = 4 * torch.arange(8, dtype=torch.int64, device=dev)
    words = (e[..., _NIBBLE_ORDER.to(dev)] << shifts).sum(-1)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # reinterpret as signed

    if g_idx is None:
        groups_pad = -(-k_pad // group_size)
        gi = None
    else:
        groups_pad = scales.shape[1]
        gi = torch.zeros(k_pad, dtype=torch.int32, device=dev)
        gi[:k] = g_idx.to(device=dev, dtype=torch.int32)
    packed = {
        "qweight": words.contiguous(),
        "scales": _permute_columns(scales.detach().to(dev), n_pad, groups_pad, dtype),
        "zeros": _permute_columns(zeros.detach().to(dev), n_pad, groups_pad, dtype),
        "meta": torch.tensor(
            [KERNEL_W4_TC.version_id, n, k, group_size, int(g_idx is not None)], dtype=torch.int32
        ),
    }
    if gi is not None:
        packed["g_idx"] = gi
    return packed


def unpack_kernel(
    packed: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
    """Inverse of :func:`pack_kernel`: ``(q int32 [N, K], scales float32 [N, n_groups],
    zeros float32 [N, n_groups], group_size, g_idx int32 [K] or None)``.

    ``scales`` come back as the values stored (already rounded to the packed dtype), on the device of
    ``packed["qweight"]``.
    """
    for key in ("qweight", "scales", "zeros", "meta"):
        if key not in packed:
            raise AWQInputError(f"packed kernel weights lack {key!r}; build them with pack_kernel()")
    meta = packed["meta"].cpu().tolist()
    if len(meta) != 5 or meta[0] != KERNEL_W4_TC.version_id:
        raise AWQInputError(
            f"packed kernel weights have layout meta {meta}; this code reads version "
            f"{KERNEL_W4_TC.version_id} ({KERNEL_W4_TC.version}) - repack with pack_kernel()"
        )
    _, n, k, group_size, has_gidx = meta
    n_pad, k_pad = padded_shape(n, k)
    words = packed["qweight"]
    dev = words.device
    if tuple(words.shape) != (k_pad // 16, n_pad // 16, 32):
        raise AWQInputError(
            f"qweight has shape {tuple(words.shape)}, expected {(k_pad // 16, n_pad // 16, 32)} for N={n}, K={k}"
        )
    w64 = words.to(torch.int64) & 0xFFFFFFFF
    nib = (w64.unsqueeze(-1) >> (4 * torch.arange(8, dtype=torch.int64, device=dev))) & 0xF  # nibble i
    e = torch.empty_like(nib)
    e[..., _NIBBLE_ORDER.to(dev)] = nib  # element nibble_order[i] sits in nibble i
    kt, nt = k_pad // 16, n_pad // 16
    c = e.reshape(kt, nt, 8, 4, 2, 2, 2)  # (kt, nt, g, t, j, h, b)
    codes = c.permute(1, 4, 2, 0, 5, 3, 6).reshape(n_pad, k_pad)
    g_idx = packed["g_idx"].to(dev)[:k].clone() if has_gidx else None
    ng = packed["scales"].shape[0] if has_gidx else k // group_size
    scales = _unpermute_columns(packed["scales"].to(dev), n, ng).float().contiguous()
    zeros = _unpermute_columns(packed["zeros"].to(dev), n, ng).float().contiguous()
    return codes[:n, :k].to(torch.int32).contiguous(), scales, zeros, group_size, g_idx


def dequantize_kernel_reference(packed: dict[str, torch.Tensor]) -> torch.Tensor:
    """Float32 ``[N, K]`` weights the packed layout stands for, in fp32 on the packed tensors' device.

    The kernels round each weight to the activation dtype once: ``((q - z) * s).to(dtype)``.
    """
    q, scales, zeros, group_size, g_idx = unpack_kernel(packed)
    k = q.shape[1]
    gi = g_idx.long() if g_idx is not None else torch.arange(k, device=q.device) // group_size
    return (q.float() - zeros[:, gi]) * scales[:, gi]
