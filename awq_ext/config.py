"""Configuration dataclasses; serialised next to every result they produce."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from awq_ext.errors import AWQInputError
from awq_ext.quant.awq import SCALE_MODES
from awq_ext.quant.quantizer import QuantSpec


@dataclass
class AWQConfig:
    """Knobs of the AWQ scale and clip searches (defaults follow the reference implementation)."""

    scale_mode: str = "duo"  # act: s_X^a | duo: s_X^a s_W^-(1-a) | weight: s_W^-b | joint: 2-D grid
    n_grid: int = 20
    clip: bool = True
    clip_n_grid: int = 20
    max_shrink: float = 0.5
    clip_tokens: int = 512  # tokens subsampled (evenly) for the clip search
    loss_samples: int | None = None  # calibration samples used in the scale-search loss (None = all)
    # Tokens (spread evenly over all samples) in the loss of per-token groups (MLP); None = as loss_samples.
    loss_tokens: int | None = 2048
    # Exact shortcuts (same loss, less work), e.g. the Gram form for single-linear groups; off only to
    # check them against the direct computation.
    exact_shortcuts: bool = True
    # Coarse-to-fine scale grid: every k-th point first, then around the best at half the stride (1 = the
    # full grid). The same choice as the full grid wherever the loss is unimodal in alpha; 1-D families
    # only (``joint`` always searches its full 2-D grid).
    refine_stride: int = 1
    # A group (a rarely routed MoE expert) whose input saw fewer calibration tokens keeps scale 1, and
    # its linears get plain RTN without clip search; reported per group in the block reports.
    min_tokens: int = 8

    def __post_init__(self) -> None:
        if self.scale_mode not in SCALE_MODES:
            raise AWQInputError(f"unknown scale mode {self.scale_mode!r}; choose one of {', '.join(SCALE_MODES)}")
        if self.loss_samples is not None and self.loss_samples < 1:
            raise AWQInputError(f"loss_samples must be >= 1 (or None for all), got {self.loss_samples}")
        if self.loss_tokens is not None and self.loss_tokens < 1:
            raise AWQInputError(f"loss_tokens must be >= 1 (or None for all), got {self.loss_tokens}")
        if self.refine_stride < 1:
            raise AWQInputError(f"refine_stride must be >= 1 (1 = full grid), got {self.refine_stride}")


@dataclass
class QuantizeConfig:
    method: str = "awq"
    w_bit: int = 4
    group_size: int = 64
    zero_point: bool = True
    awq: AWQConfig = field(default_factory=AWQConfig)
    # Next block's calibration inputs: outputs of the already-quantized block ("quantized") or of the
    # float block ("fp").
    propagate: str = "quantized"
    chunk_size: int = 4  # samples per forward pass during calibration (bounds activation memory)
    device: str | None = None  # where each block runs during calibration (default: cuda if present)
    extra: dict = field(default_factory=dict)  # method-specific options (e.g. GPTQ damping)

    def __post_init__(self) -> None:
        if self.propagate not in ("quantized", "fp"):
            raise AWQInputError(f"propagate must be 'quantized' or 'fp', got {self.propagate!r}")
        if self.chunk_size < 1:
            raise AWQInputError(f"chunk_size must be >= 1, got {self.chunk_size}")
        self.quant_spec()  # validates bits and group size early

    def quant_spec(self) -> QuantSpec:
        return QuantSpec(self.w_bit, self.group_size, self.zero_point)

    def to_dict(self) -> dict:
        return asdict(self)
