#!/usr/bin/env bash
# Quality of indexes with scripts/bench_train_sparse.py (no latency), rows appended to $W/results.jsonl.
#   eval.sh DATASET RETRIEVERS LABEL=INDEX...      e.g. eval.sh scifact sparse-if,docs/pipelines/hybrid-if.toml,hybrid untrained=$W/idx/scifact
# DATASET: a folder under $DATA or a path. Set SPLIT (default test) and TRAIN_SPLIT (default train when the
# dataset has qrels/train.tsv, else '') to change the split evaluated / the seen-unseen reference.
set -euo pipefail
source "$(dirname "$0")/env.sh"
DS=$1; RET=$2; shift 2
[ -d "$DS" ] || DS=$DATA/$DS
: "${SPLIT:=test}"
if [ -z "${TRAIN_SPLIT+x}" ]; then TRAIN_SPLIT=""; [ -f "$DS/qrels/train.tsv" ] && TRAIN_SPLIT=train; fi
cd "$REPO"
locked "$PY" scripts/bench_train_sparse.py --dataset "$DS" --split "$SPLIT" --train-split "$TRAIN_SPLIT" \
  --retrievers "$RET" --latency-queries 0 --out "$W/results.jsonl" "$@"
