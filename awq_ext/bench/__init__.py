"""`python -m awq_ext.bench`: kernel, end-to-end and quantization-cost benchmarks (DESIGN §5).

Submodules: :mod:`timing` (CUDA-event / wall-clock timers), :mod:`ceilings` (roofline arithmetic and
measured ceilings), :mod:`kernels`, :mod:`e2e`, :mod:`quant_cost`, :mod:`report`, and
:mod:`triton_w4a16` (the Triton "compiler" baseline). Nothing here is imported by the library itself.
"""
