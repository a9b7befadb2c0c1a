# Sourced by scripts/ci_kernels.sh and scripts/ci_interop.sh: the CUDA-torch venv they share (.venv-cuda, so the
# project venv keeps its CPU torch). Sets ROOT, VENV and TORCH_SPEC; creates the venv if missing.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${AWQ_EXT_CUDA_VENV:-$ROOT/.venv-cuda}
TORCH_SPEC=${AWQ_EXT_CUDA_TORCH:-torch==2.14.1}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
