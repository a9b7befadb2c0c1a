#!/usr/bin/env bash
# Kernel build checks that need no GPU, for CI:
#   - the kernels compile for sm_80 and sm_90, their SASS holds HMMA/LDSM/LDGSTS and no local memory
#     (tests/kernels/test_sass.py: nvcc + cuobjdump/nvdisasm from PyPI);
#   - the torch extension builds through the same JIT path users take (awq_ext.kernels.load) and
#     imports, with its ops and Meta kernels registered (tests/kernels/test_jit_build.py);
#   - the CPU emulation of the device dequantization and the kernel-layout round trip;
#   - the CPU SIMT emulator on the real kernel sources, bit for bit, with CTAs also run concurrently on host
#     threads and in a ThreadSanitizer build (g++ -fsanitize=thread) for the split-K reduction.
# The JIT build needs a CUDA build of torch, which lives in its own venv (.venv-cuda, ~5.5 GB) so the
# project venv keeps its CPU torch. Needs nvcc (CUDA 12.x/13.x) on the machine.
# Cold run on 2 idle cores: venv ~1 min, SASS ~2-4 min, JIT build ~1-2 min, emulator builds (plain + TSan)
# ~1.5 min; warm runs reuse every cache. The slow tests (-m slow: full emulator sweep, the missing-fence
# TSan check) are left to manual runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/cuda_venv.sh"
"$VENV/bin/pip" install -q "$TORCH_SPEC" ninja pybind11 numpy pytest hypothesis \
  nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
"$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'torch in $VENV has no CUDA')"

cd "$ROOT"
# python -m puts the repo root on sys.path, so awq_ext imports from the checkout without installing it
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/kernels/test_sass.py tests/kernels/test_jit_build.py \
  tests/kernels/test_dequant_emulation.py tests/pack/test_kernel_layout.py \
  tests/kernels/test_simt_emulation.py tests/kernels/test_wgmma_emulation.py tests/kernels/test_static_model.py \
  -m "not slow" "$@"
