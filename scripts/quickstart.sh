#!/usr/bin/env bash
# Set everything up, then index scifact with BM25 + learned sparse + dense and evaluate the hybrid
# pipeline on its test queries (embedded: no server to start). Progress bars on a terminal.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SHARED=${BRAID_SHARED:-../shared}
export BRAID_MODEL_PATH=${BRAID_MODEL_PATH:-$SHARED/models}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
DATASET=${1:-$SHARED/data/scifact}
.venv/bin/braid eval "$DATASET" --retrievers bm25,sparse,dense --pipeline hybrid
.venv/bin/braid search indexes/"$(basename "$DATASET")" "microglia activation in the brain" -k 5
