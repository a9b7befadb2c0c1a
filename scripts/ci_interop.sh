#!/usr/bin/env bash
# Interchange check for CI: transformers' own AWQ loader (through gptqmodel, as users load AWQ checkpoints
# with transformers 5) reads a checkpoint that the streaming path writes, logits equal to ours
# (tests/io/test_stream.py::test_transformers_awq_loader_reads_a_streamed_checkpoint; it skips wherever
# gptqmodel is not importable, as in the main venv).
# gptqmodel 7.7 needs torch >= 2.14.1, so it lives in the CUDA venv of scripts/ci_kernels.sh (CUDA torch runs
# on the CPU too); BUILD_CUDA_EXT=0: its kernels are not needed to load and run an AWQ model on the CPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cuda_venv.sh"
BUILD_CUDA_EXT=0 "$VENV/bin/pip" install -q "$TORCH_SPEC" "transformers>=5.0,<6" accelerate gguf safetensors tqdm \
  matplotlib sentencepiece pytest hypothesis gptqmodel==7.7.0
cd "$ROOT"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/io/test_stream.py -k transformers_awq_loader "$@"
