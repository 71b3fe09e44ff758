#!/usr/bin/env bash
# One `braid train sparse` run on its own copy of an untrained index, in chunks, then --install.
#   train.sh COLLECTION NAME [braid train sparse options...]
# e.g.  train.sh scifact scifact-corpus --source corpus --max-queries 240 --epochs 1 --kl-temperature 4 --max-length 256
# Copies $W/idx/COLLECTION (the untrained index) to $W/idx/NAME, trains into $W/models/NAME with checkpoints in
# $W/ck/NAME, CHUNK steps per call (default 20; --stop-after/--checkpoint-every), each call under the lock and
# /usr/bin/time -v (log: $W/logs/NAME.log; per-call JSON summary: $W/logs/NAME.chunkK.json); the call that finishes
# the run also installs the model into $W/idx/NAME. THREADS (default 1) torch threads. DATASET (default
# $DATA/COLLECTION) overrides the BEIR folder (e.g. the dev split folder). Re-running resumes.
set -euo pipefail
source "$(dirname "$0")/env.sh"
COLL=$1; NAME=$2; shift 2
: "${CHUNK:=20}" "${THREADS:=1}" "${DATASET:=$DATA/$COLL}"
IDX=$W/idx/$NAME
if [ ! -e "$IDX/manifest.json" ]; then
  rm -rf "$IDX.tmp"; cp -a "$W/idx/$COLL" "$IDX.tmp" && mv "$IDX.tmp" "$IDX"
fi
LOG=$W/logs/$NAME.log
echo "== $(date -u +%FT%TZ) train.sh $COLL $NAME $* (CHUNK=$CHUNK THREADS=$THREADS DATASET=$DATASET)" >> "$LOG"
if grep -qs '"finished": true' "$W"/logs/"$NAME".chunk*.json; then echo "$NAME: already finished"; exit 0; fi
k=$(find "$W/logs" -maxdepth 1 -name "$NAME.chunk*.json" | wc -l)
while :; do
  k=$((k+1))
  OUT=$W/logs/$NAME.chunk$k.json
  locked /usr/bin/time -v "$BRAID" train sparse "$IDX" --dataset "$DATASET" --output "$W/models/$NAME" \
    --checkpoint-dir "$W/ck/$NAME" --threads "$THREADS" --stop-after "$CHUNK" --checkpoint-every "$CHUNK" \
    --install --json "$@" > "$OUT" 2>> "$LOG"
  echo "-- chunk $k: $(cat "$OUT")" >> "$LOG"
  if grep -q '"finished": true' "$OUT"; then echo "$NAME: finished"; break; fi
done
grep -E "Elapsed|Maximum resident" "$LOG" | tail -n 2
