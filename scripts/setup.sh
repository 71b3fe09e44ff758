#!/usr/bin/env bash
# Create .venv and install Braid with everything it needs (CPU build of torch, pinned so pip never
# pulls a multi-GB CUDA build). Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch==2.13.0 is the CPU build; naming it in the same command keeps the extras' "torch>=2.1" on it.
$PIP install -q "torch==2.13.0" -e ".[sparse,dense,onnx,serve,distributed,datasets,compare,mcp,bench,train,dev]"
if [ -f scripts/install_pyserini.sh ]; then
  PIP="$PIP" bash scripts/install_pyserini.sh || echo "setup: Pyserini (optional reference backend) could not be installed; its tests will be skipped" >&2
fi
echo "setup: done (.venv)" >&2
