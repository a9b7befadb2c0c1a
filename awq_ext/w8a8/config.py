"""Configuration of a W8A8 (or equalized weight-only) quantization run; serialised with its results."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from awq_ext.errors import AWQInputError
from awq_ext.quant.quantizer import QuantSpec
from awq_ext.quant.w8a8 import ACT_MODES

# method -> per-input-channel equalization folded into the previous op before quantizing
W8A8_METHODS: dict[str, str] = {
    "w8a8-rtn": "none: round-to-nearest INT8 weights (per output channel) and activations",
    "smoothquant": "SmoothQuant: s_j = max|X_j|^alpha / max|W_j|^(1-alpha), then INT8",
    "aweq": "AWEQ: s_j = sqrt(max|X_j| / max|W_j|) (activation-weight equalization), then INT8, + bias correction",
}


@dataclass
class W8A8Config:
    """``method``: one of :data:`W8A8_METHODS`. ``alpha``: SmoothQuant's migration strength (ignored by
    the others). ``act_quant``: ``static`` = one calibrated scale per tensor, ``dynamic`` = one scale per
    token at run time. ``bias_correction``: subtract the expected output shift through each layer's bias
    (``None`` = the method's default: on for ``aweq``, off otherwise).

    ``weight_only``: the ultra-low-bit use of the equalization - activations stay float and weights are
    fake-quantized group-wise with ``w_bit`` / ``group_size`` / ``zero_point`` (the core quantizer);
    otherwise those three are not used (W8A8 weights are always INT8 per output channel).
    """

    method: str = "aweq"
    alpha: float = 0.5
    act_quant: str = "dynamic"
    bias_correction: bool | None = None
    weight_only: bool = False
    w_bit: int = 4
    group_size: int = 64
    zero_point: bool = True
    chunk_size: int = 4
    device: str | None = None
    propagate: str = "quantized"

    def __post_init__(self) -> None:
        if self.method not in W8A8_METHODS:
            raise AWQInputError(f"unknown W8A8 method {self.method!r}; choose one of {', '.join(W8A8_METHODS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise AWQInputError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.act_quant not in ACT_MODES:
            raise AWQInputError(f"--act-quant must be one of {', '.join(ACT_MODES)}, got {self.act_quant!r}")
        if self.chunk_size < 1:
            raise AWQInputError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.propagate not in ("quantized", "fp"):
            raise AWQInputError(f"propagate must be 'quantized' or 'fp', got {self.propagate!r}")
        if self.weight_only:
            self.quant_spec()  # validates bits / group size early

    @property
    def use_bias_correction(self) -> bool:
        return self.method == "aweq" if self.bias_correction is None else bool(self.bias_correction)

    def quant_spec(self) -> QuantSpec:
        return QuantSpec(self.w_bit, self.group_size, self.zero_point)

    def label(self) -> str:
        """Short human-readable name, e.g. ``smoothquant(a=0.5) W8A8-static`` or ``aweq+bc W3g64``."""
        name = self.method + (f"(a={self.alpha:g})" if self.method == "smoothquant" else "")
        name += "+bc" if self.use_bias_correction else ""
        if self.weight_only:
            return f"{name} W{self.w_bit}g{self.group_size}"
        return f"{name} W8A8-{self.act_quant}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bias_correction"] = self.use_bias_correction
        return d
