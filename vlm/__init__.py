"""Quantize the language tower of vision-language models (OpenFlamingo, LLaVA) with awq_ext, and check
that the quantized model still sees and says the same things: COCO captioning (CIDEr) and side-by-side
visual-reasoning reports. Imports nothing heavy at package import time."""
