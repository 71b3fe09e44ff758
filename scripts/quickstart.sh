#!/usr/bin/env bash
# Set everything up, then index scifact with BM25 + learned sparse + dense and evaluate the hybrid
# pipeline on its test queries (embedded: no server to start). Progress bars on a terminal.
#
# Where the collection and the models come from:
# - $BRAID_SHARED (default ../shared) holds data/scifact and models/: both are used from there, offline;
# - otherwise scifact is fetched by name (beir/scifact: the public BEIR zip, about 2.7 MB, md5-checked,
#   cached in $BRAID_DATA or ~/.cache/braid) and the two default models by hub id (rasyosef/splade-tiny,
#   about 18 MB, and sentence-transformers/all-MiniLM-L6-v2, about 88 MB, into the Hugging Face cache;
#   HF_ENDPOINT and HF_HOME are honoured). A second run reads both caches and needs no network.
#
# Usage: bash scripts/quickstart.sh [--no-setup] [DATASET]
#   --no-setup  use the existing .venv as it is (skip scripts/setup.sh)
#   DATASET     a BEIR folder or a name (beir/NAME, irds:ID) instead of scifact
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--no-setup" ]; then
  shift
else
  bash scripts/setup.sh
fi
PY=.venv/bin/python
SHARED=${BRAID_SHARED:-../shared}
if [ -d "$SHARED/data/scifact" ] && [ -d "$SHARED/models" ]; then
  echo "quickstart: collections and models from $SHARED (nothing is downloaded)" >&2
  export BRAID_MODEL_PATH=${BRAID_MODEL_PATH:-$SHARED/models}
  export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
  DATASET=${1:-$SHARED/data/scifact}
else
  echo "quickstart: no $SHARED/data/scifact here: scifact comes by name (beir/scifact, ~3 MB, into" \
    "${BRAID_DATA:-~/.cache/braid}) and the models by hub id (rasyosef/splade-tiny ~18 MB," \
    "sentence-transformers/all-MiniLM-L6-v2 ~88 MB, into the Hugging Face cache); later runs reuse them offline" >&2
  DATASET=${1:-beir/scifact}
fi
"$PY" -m braid.cli.main eval "$DATASET" --retrievers bm25,sparse,dense --pipeline hybrid
"$PY" -m braid.cli.main search indexes/"$(basename "$DATASET")" "microglia activation in the brain" -k 5
