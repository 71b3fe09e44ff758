#!/usr/bin/env bash
# Untrained indexes (bm25 + sparse splade-tiny + dense MiniLM flat) into $W/idx/NAME.
#   build_untrained.sh scifact            # from the pre-encoded vectors in $VECTORS/scifact
#   build_untrained.sh adi medline ...    # encoded with the models (a few minutes each)
set -euo pipefail
source "$(dirname "$0")/env.sh"
for NAME in "$@"; do
  OUT=$W/idx/$NAME
  [ -e "$OUT/manifest.json" ] && { echo "$OUT exists"; continue; }
  EXTRA=()
  if [ "$NAME" = scifact ]; then
    EXTRA=(--sparse-vectors "$VECTORS/scifact/splade-tiny-docs.npz" --dense-vectors "$VECTORS/scifact/minilm-docs.npy")
  fi
  [ "$NAME" = cranfield ] && EXTRA+=(--allow-empty)   # two empty documents in the original
  locked /usr/bin/time -v "$BRAID" index "$DATA/$NAME" -o "$OUT" --retrievers bm25,sparse,dense \
    --sparse-model "$MODELS/splade-tiny" --dense-model "$MODELS/all-MiniLM-L6-v2" "${EXTRA[@]}" \
    > "$W/logs/index-$NAME.log" 2>&1
  grep -E "indexed|Elapsed|Maximum resident" "$W/logs/index-$NAME.log"
done
