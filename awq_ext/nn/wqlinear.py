"""WQLinear: a linear layer holding 4-bit weights in the interchange layout.

Buffers (names and shapes are those of the AWQ "GEMM" checkpoint, see
:class:`awq_ext.pack.interchange.InterchangeGemmLayout`): ``qweight`` int32 ``[K, N/8]``,
``qzeros`` int32 ``[K/G, N/8]``, ``scales`` float16 ``[K/G, N]``, ``g_idx`` int32 ``[K]`` (act-order
only, else ``None``), ``bias`` ``[N]`` or ``None``.

Forward, chosen per call from :attr:`WQLinear.backend`:

* ``"torch"``: reference - dequantize once to the activation dtype (cached until a buffer changes),
  then ``F.linear``. Works for float32/float16/bfloat16 activations on any device.
* ``"cuda"``: the W4A16 kernel from ``awq_ext.kernels`` (raises :class:`KernelUnavailableError` when
  it is not built or the input is not on a GPU).
* ``"auto"`` (default): the kernel for fp16/bf16 CUDA inputs when it is available, the reference
  otherwise (with a one-time warning when a CUDA input had to fall back).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from awq_ext.errors import AWQInputError, KernelUnavailableError
from awq_ext.pack.interchange import (
    INTERCHANGE_GEMM,
    InterchangeTensors,
    dequantize_interchange,
    interchange_shapes,
    pack_interchange,
    unpack_interchange,
)
from awq_ext.quant.quantizer import SUPPORTED_GROUP_SIZES, QuantizedWeight

BACKENDS = ("auto", "torch", "cuda")
_ACTIVATION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_KERNEL_DTYPES = (torch.float16, torch.bfloat16)
_KERNEL_GROUP_SIZES = (32, 64, 128)
_fallback_warned = False


def _load_kernels() -> tuple[Any, Any] | None:
    """``(ops, pack_kernel)`` when the CUDA extension can run here, else ``None``.

    Imported lazily: CPU-only installs never touch the extension or its build machinery.
    """
    try:
        from awq_ext import kernels
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("awq_ext.kernels"):
            return None
        raise
    is_available = getattr(kernels, "is_available", None)
    if is_available is None or not is_available():
        return None  # a partial install (no is_available) counts as unavailable
    from awq_ext.kernels import ops
    from awq_ext.pack.kernel_layout import pack_kernel

    return ops, pack_kernel


class WQLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` ``[N, K]`` stored as 4-bit codes in the interchange layout."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int,
        bias: bool = False,
        zero_point: bool = True,
        desc_act: bool = False,
        bias_dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
        backend: str = "auto",
    ) -> None:
        """An empty (zero-filled) layer of the given geometry; fill it with :meth:`from_packed`
        or :meth:`from_quantized`, or by ``load_state_dict``."""
        super().__init__()
        if group_size not in SUPPORTED_GROUP_SIZES:
            raise AWQInputError(f"group_size {group_size} is not one of {SUPPORTED_GROUP_SIZES}")
        shapes = interchange_shapes(in_features, out_features, group_size)
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.w_bit = INTERCHANGE_GEMM.bits
        self.zero_point = zero_point
        self.desc_act = desc_act
        self.backend = backend
        self.register_buffer("qweight", torch.zeros(shapes["qweight"], dtype=torch.int32, device=device))
        self.register_buffer("qzeros", torch.zeros(shapes["qzeros"], dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.zeros(shapes["scales"], dtype=torch.float16, device=device))
        g_idx = torch.zeros(shapes["g_idx"], dtype=torch.int32, device=device) if desc_act else None
        self.register_buffer("g_idx", g_idx)
        b = torch.zeros(out_features, dtype=bias_dtype, device=device) if bias else None
        self.register_buffer("bias", b)
        # (tensors the cache was built from, their versions, dtype) -> dequantized weight / packed kernel data
        self._weight_cache: tuple[tuple, torch.Tensor] | None = None
        self._kernel_cache: tuple[tuple, Any] | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_packed(
        cls,
        packed: InterchangeTensors,
        group_size: int,
        bias: torch.Tensor | None = None,
        zero_point: bool = True,
        backend: str = "auto",
        name: str = "layer",
    ) -> WQLinear:
        """Wrap already-packed interchange tensors (validated against ``group_size``)."""
        packed.validate(group_size, name)
        n, k = packed.out_features, packed.in_features
        if bias is not None and tuple(bias.shape) != (n,):
            raise AWQInputError(f"{name}: bias shape {tuple(bias.shape)} != ({n},)")
        layer = cls(
            k,
            n,
            group_size,
            bias=bias is not None,
            zero_point=zero_point,
            desc_act=packed.g_idx is not None,
            bias_dtype=bias.dtype if bias is not None else torch.float16,
            device="meta",
            backend=backend,
        )
        layer.qweight = packed.qweight
        layer.qzeros = packed.qzeros
        layer.scales = packed.scales
        layer.g_idx = packed.g_idx
        layer.bias = bias.detach().clone() if bias is not None else None
        return layer

    @classmethod
    def from_quantized(
        cls, qw: QuantizedWeight, bias: torch.Tensor | None = None, backend: str = "auto", name: str = "layer"
    ) -> WQLinear:
        """Pack a 4-bit :class:`QuantizedWeight` (``q`` ``[N, K]``); non-4-bit specs are refused."""
        packed = pack_interchange(qw, name)
        return cls.from_packed(packed, qw.spec.group_size, bias, qw.spec.zero_point, backend, name)

    def packed(self) -> InterchangeTensors:
        return InterchangeTensors(self.qweight, self.qzeros, self.scales, self.g_idx)

    def to_quantized(self) -> QuantizedWeight:
        """Unpack back to integer codes ``q`` ``[N, K]`` and float32 group parameters."""
        return unpack_interchange(self.packed(), self.group_size, self.zero_point)

    # ----------------------------------------------------------------- backend
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise AWQInputError(f"WQLinear backend must be one of {BACKENDS}, got {value!r}")
        self._backend = value

    def _resolve_backend(self, x: torch.Tensor) -> str:
        if self._backend == "torch":
            return "torch"
        if self._backend == "cuda":
            if not x.is_cuda:
                raise KernelUnavailableError(
                    f"backend='cuda' needs CUDA inputs, got a tensor on {x.device}; move the model to a GPU "
                    "or set backend='torch'"
                )
            if x.dtype not in _KERNEL_DTYPES or self.group_size not in _KERNEL_GROUP_SIZES:
                raise KernelUnavailableError(
                    f"the W4A16 kernel takes fp16/bf16 activations and group sizes {_KERNEL_GROUP_SIZES}; got "
                    f"{x.dtype}, group_size {self.group_size} - cast the input or use backend='torch'"
                )
            if _load_kernels() is None:
                raise KernelUnavailableError(
                    "backend='cuda' but the CUDA kernels are unavailable (awq_ext.kernels.is_available() is "
                    "False: extension not built, no GPU or no compiler); use backend='auto' or 'torch'"
                )
            return "cuda"
        # auto: the kernel only where it applies; fp32 or group_size -1 take the reference silently.
        if not x.is_cuda or x.dtype not in _KERNEL_DTYPES or self.group_size not in _KERNEL_GROUP_SIZES:
            return "torch"
        if _load_kernels() is None:
            global _fallback_warned
            if not _fallback_warned:
                _fallback_warned = True
                warnings.warn(
                    "WQLinear: CUDA kernels unavailable (awq_ext.kernels.is_available() is False); using the "
                    "slow torch reference (dequantize + matmul) on the GPU",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return "torch"
        return "cuda"

    # ----------------------------------------------------------------- caches
    def _cache_key(self, tag: Any) -> tuple:
        tensors = (self.qweight, self.qzeros, self.scales, self.g_idx)
        # Holding the tensors (compared with `is`) rules out a freed address being reused; the
        # version counters catch in-place writes such as load_state_dict's copy_.
        return (tag, tensors, tuple(t._version if t is not None else -1 for t in tensors))

    @staticmethod
    def _key_matches(cached: tuple, key: tuple) -> bool:
        return (
            cached[0] == key[0]
            and all(a is b for a, b in zip(cached[1], key[1]))
            and cached[2] == key[2]
        )

    def clear_cache(self) -> None:
        self._weight_cache = None
        self._kernel_cache = None

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight ``[N, K]`` in ``dtype`` on the buffers' device; cached for the reference forward."""
        key = self._cache_key((dtype, self.qweight.device))
        if self._weight_cache is not None and self._key_matches(self._weight_cache[0], key):
            return self._weight_cache[1]
        with torch.no_grad():
            w = dequantize_interchange(self.packed(), self.group_size).to(dtype)
        self._weight_cache = (key, w)
        return w

    def _kernel_data(self, dtype: torch.dtype) -> Any:
        """The weights in the kernel layout for ``dtype`` activations, on the buffers' device (cached)."""
        key = self._cache_key(("kernel", dtype, self.qweight.device))
        if self._kernel_cache is not None and self._key_matches(self._kernel_cache[0], key):
            return self._kernel_cache[1]
        loaded = _load_kernels()
        if loaded is None:
            raise KernelUnavailableError("CUDA kernels became unavailable after backend selection")
        _, pack_kernel = loaded
        qw = self.to_quantized()
        # The kernel layout takes unsigned codes and explicit zeros (the symmetric offset is 8).
        offset = 2 ** (self.w_bit - 1)
        codes = qw.q if self.zero_point else qw.q + offset
        zeros = qw.zeros if qw.zeros is not None else torch.full_like(qw.scales, offset)
        packed = pack_kernel(codes, self.scales.t().float(), zeros, self.group_size, self.g_idx, dtype=dtype)
        data = {name: t.to(self.qweight.device) for name, t in packed.items()}
        self._kernel_cache = (key, data)
        return data

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in _ACTIVATION_DTYPES:
            raise AWQInputError(f"WQLinear takes float32/float16/bfloat16 activations, got {x.dtype}")
        if x.shape[-1] != self.in_features:
            raise AWQInputError(
                f"WQLinear({self.in_features}->{self.out_features}): input's last dim is {x.shape[-1]}, "
                f"expected {self.in_features}"
            )
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        if self._resolve_backend(x) == "cuda":
            loaded = _load_kernels()
            if loaded is None:
                raise KernelUnavailableError("CUDA kernels became unavailable after backend selection")
            ops = loaded[0]
            x2 = x.reshape(-1, self.in_features)
            y = ops.w4a16_linear(x2, self._kernel_data(x.dtype), self.group_size, self.out_features, self.in_features)
            y = y.reshape(*x.shape[:-1], self.out_features)
            return y + bias if bias is not None else y
        w = self.dequantized_weight(x.dtype)
        if w.device != x.device:
            raise AWQInputError(f"WQLinear buffers are on {w.device} but the input is on {x.device}; move the model")
        return F.linear(x, w, bias)

    # ----------------------------------------------------------------- dtype/device moves
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> WQLinear:
        """Move like any module, but keep ``scales`` float16: ``model.to(torch.bfloat16)`` or
        ``.float()`` must not re-round (or change the stored dtype of) the group scales."""
        order = list(self._buffers)
        scales = self._buffers.pop("scales")
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers["scales"] = scales
            # restore registration order so state_dict() keys keep their order
            for key in order:
                self._buffers[key] = self._buffers.pop(key)
        target = self.qweight.device
        if scales is not None and scales.device != target:
            if scales.is_meta:
                self._buffers["scales"] = torch.empty_like(scales, device=target)
            else:
                self._buffers["scales"] = scales.to(target)
        self.clear_cache()
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, w_bit={self.w_bit}, "
            f"group_size={self.group_size}, zero_point={self.zero_point}, desc_act={self.desc_act}, "
            f"bias={self.bias is not None}, backend={self._backend!r}"
        )


def replace_linears(
    model: nn.Module, quantized: dict[str, QuantizedWeight], backend: str = "auto"
) -> nn.Module:
    """Swap each named ``nn.Linear`` of ``model`` for a :class:`WQLinear` holding its packed codes.

    ``quantized`` maps dotted module names (as in ``model.named_modules()``) to 4-bit
    :class:`QuantizedWeight` with ``q`` of the linear's ``[out_features, in_features]`` shape.
    The new module lives on the linear's device (the codes' device if the linear is on meta).
    Returns ``model`` (modified in place).
    """
    for name, qw in quantized.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise AWQInputError(f"replace_linears: the model has no module named {name!r}") from None
        if not isinstance(module, nn.Linear):
            raise AWQInputError(
                f"replace_linears: {name!r} is a {type(module).__name__}, not an nn.Linear"
            )
        expected = (module.out_features, module.in_features)
        if tuple(qw.q.shape) != expected:
            raise AWQInputError(
                f"replace_linears: {name!r} has weight [out, in] = {expected} but its codes are {tuple(qw.q.shape)}"
            )
        device = module.weight.device if not module.weight.is_meta else qw.q.device
        bias = module.bias.detach() if module.bias is not None else None
        new = WQLinear.from_quantized(qw, bias, backend=backend, name=name).to(device)
        model.set_submodule(name, new)
    return model


def wq_linears(model: nn.Module) -> dict[str, WQLinear]:
    """All :class:`WQLinear` modules of ``model`` by dotted name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WQLinear)}


def set_backend(model: nn.Module, backend: str) -> None:
    """Set :attr:`WQLinear.backend` on every WQLinear of ``model`` (run-time override)."""
    if backend not in BACKENDS:
        raise AWQInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for m in wq_linears(model).values():
        m.backend = backend
