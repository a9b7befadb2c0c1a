#!/usr/bin/env bash
# Set up and run every test that this machine can run: the CPU suite (CUDA tests skip without a GPU),
# then the kernel build checks (nvcc compile for sm_80/sm_90, SASS inspection, JIT build of the torch
# extension with a CUDA build of torch) when nvcc is present, then transformers' AWQ loader (gptqmodel) on a
# streamed checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# vlm's needs (open-flamingo and friends with --no-deps, so torch is never replaced)
PYTHON=.venv/bin/python bash scripts/install_vlm.sh
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider tests --ignore=tests/kernels "$@" || status=$?
if [ -f scripts/ci_kernels.sh ] && command -v nvcc >/dev/null 2>&1; then
  bash scripts/ci_kernels.sh || status=$?
else
  echo "nvcc not found: kernel build tests skipped"
fi
bash scripts/ci_interop.sh || status=$?
exit $status
