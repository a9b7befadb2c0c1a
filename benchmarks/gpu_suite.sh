#!/usr/bin/env bash
# One command for a bare GPU machine (a CUDA torch, nvcc, ninja; no network):
#   bash benchmarks/gpu_suite.sh OUT_DIR [--quick] [--budget-s SECONDS]
# JIT-builds the kernels, runs the correctness sweep, compute-sanitizer and the benchmark, and writes
# OUT_DIR/gpu_suite.json (+ PNGs when matplotlib is installed). See benchmarks/gpu_suite.py.
set -euo pipefail
OUT=${1:?usage: bash benchmarks/gpu_suite.sh OUT_DIR [--quick] [--budget-s SECONDS]}
shift
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export AWQ_EXT_COMMIT=${AWQ_EXT_COMMIT:-$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)}
# JIT cache in the checkout's ignored build/ unless told otherwise (a bare machine may have no writable $HOME).
export AWQ_EXT_CACHE_DIR=${AWQ_EXT_CACHE_DIR:-$ROOT/build/awq_ext_cache}
exec "$PY" "$ROOT/benchmarks/gpu_suite.py" "$OUT" "$@"
