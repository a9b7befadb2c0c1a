#!/usr/bin/env bash
# Main job, offline: set up, then compare fp32 vs RTN vs AWQ at W4 and W3 (group 64) on
# SmolLM2-135M-Instruct with Protocol P (pydoc text, 16 x 1024-token windows). Extra arguments go to
# `python -m awq_ext compare`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
mkdir -p runs
exec .venv/bin/python -m awq_ext compare --json runs/compare.json "$@"
