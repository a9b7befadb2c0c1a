"""INT4 packing. Every packed layout is named and defined by one pack/unpack pair.

- :mod:`awq_ext.pack.interchange`: the AWQ "GEMM" checkpoint layout (:data:`INTERCHANGE_GEMM`).
- ``awq_ext.pack.kernel_layout``: the layout the CUDA GEMM consumes (imported on demand by WQLinear).
"""
from awq_ext.pack.interchange import (
    INTERCHANGE_GEMM,
    InterchangeGemmLayout,
    InterchangeTensors,
    dequantize_interchange,
    interchange_shapes,
    pack_int4,
    pack_interchange,
    to_interchange_precision,
    unpack_int4,
    unpack_interchange,
)

__all__ = [
    "INTERCHANGE_GEMM",
    "InterchangeGemmLayout",
    "InterchangeTensors",
    "dequantize_interchange",
    "interchange_shapes",
    "pack_int4",
    "pack_interchange",
    "to_interchange_precision",
    "unpack_int4",
    "unpack_interchange",
]
