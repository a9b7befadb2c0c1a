#!/usr/bin/env bash
# Everything that needs a GPU in one short device call (see benchmarks/gpu_suite.py for the plan):
#   bash benchmarks/gpu_suite.sh --prebuild        here, no GPU needed: build the torch-free checker
#                                                  (csrc/tools/w4a16_check.cu) for sm_90 with cudart static
#                                                  into build/gpu_suite/ (carry build/gpu_suite/w4a16_check)
#   bash benchmarks/gpu_suite.sh OUT_DIR [--smoke] on the GPU machine: <= 6 min (--smoke: <= 90 s)
#   bash benchmarks/gpu_suite.sh --dry-run [--smoke]  print the plan (steps, time budgets) as JSON
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prebuild" ]; then
  NVCC=${CUDACXX:-$(command -v nvcc)}
  # the real toolkit, not a wrapper script (cmake needs its include/ and lib64/)
  NVCC=$(grep -o '/[^ ]*/bin/nvcc' "$NVCC" 2>/dev/null | head -1 || true)
  NVCC=${NVCC:-$(command -v nvcc)}
  CUDA_ROOT=$(dirname "$(dirname "$NVCC")")
  # CMakeLists.txt links CUDA::cudart; pointing that target at the static archive makes the binary
  # independent of the device machine's libcudart (it still needs the driver's libcuda, loaded at run time)
  nice -n 10 cmake -S "$ROOT" -B "$ROOT/build/gpu_suite" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES=90a -DCMAKE_CUDA_RUNTIME_LIBRARY=Static \
    -DCUDA_cudart_LIBRARY="$CUDA_ROOT/lib64/libcudart_static.a"
  nice -n 10 cmake --build "$ROOT/build/gpu_suite" --target w4a16_check -j "$(nproc)"
  if ldd "$ROOT/build/gpu_suite/w4a16_check" | grep -q libcudart; then
    echo "error: w4a16_check still links libcudart dynamically" >&2
    exit 1
  fi
  echo "built $ROOT/build/gpu_suite/w4a16_check (sm_90a, cudart static); carry build/gpu_suite/w4a16_check to the device"
  exit 0
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/benchmarks/gpu_suite.py" "$@"
