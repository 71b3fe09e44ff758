#!/usr/bin/env bash
# Round 5 of issue 16 (docs/benchmarks/training.md): the chosen setting (KL T 4, 256 training tokens), corpus-only,
# on scifact (test measured once) and on the five small collections. Sequential; each heavy step under the lock.
set -euo pipefail
cd "$(dirname "$0")"
source ./env.sh
SET=(--source corpus --epochs 1 --loss kl --kl-temperature 4 --max-length 256)
./build_untrained.sh scifact adi medline cisi cranfield cacm
for C in adi medline cisi cranfield cacm; do  # (skipped for a collection whose untrained row is already there)
  grep -qs "\"dataset\": \"$DATA/$C\"" "$W/results.jsonl" || ./eval.sh $C sparse-if untrained=$W/idx/$C
done
# train only the collections whose untrained figures are training.md's (scifact was checked first)
MATCH=$("$PY" check_untrained.py "$W/results.jsonl" adi medline cranfield cisi cacm)
echo "untrained figures match for: $MATCH"
# 1. scifact corpus-only: 240 pseudo-queries, 1 epoch = 30 steps (round 3's corpus-only run)
CHUNK=15 ./train.sh scifact r5-scifact-corpus "${SET[@]}" --max-queries 240
./eval.sh scifact sparse-if,docs/pipelines/hybrid-if.toml,hybrid untrained=$W/idx/scifact r5-corpus=$W/idx/r5-scifact-corpus
# 2. the small collections: 200 pseudo-queries (adi has 163), 1 epoch
for C in ${SMALL:-$MATCH}; do
  CHUNK=13 ./train.sh $C r5-$C-corpus "${SET[@]}" --max-queries 200
  ./eval.sh $C sparse-if untrained=$W/idx/$C r5-corpus=$W/idx/r5-$C-corpus
done
