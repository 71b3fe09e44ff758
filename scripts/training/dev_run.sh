#!/usr/bin/env bash
# A tuning run on the scifact dev split (docs/benchmarks/training.md, rounds 3-5): supervised on train-fit
# (647 queries), 60 steps, seed 42, 1 torch thread, the chosen setting (KL T 4, 256 training tokens) plus OPTIONS,
# its own copy of the untrained index, --install, then sparse-if on dev (162 queries). Test is never read.
#   dev_run.sh NAME [OPTIONS...]          e.g. dev_run.sh r5-dev-dense --teachers dense
set -euo pipefail
cd "$(dirname "$0")"
source ./env.sh
NAME=$1; shift
[ -d "$W/scifact-dev/qrels" ] || "$PY" make_dev.py "$DATA/scifact" "$W/scifact-dev"
DATASET=$W/scifact-dev CHUNK=${CHUNK:-20} ./train.sh scifact "$NAME" --source supervised --split train-fit \
  --max-steps 60 --loss kl --kl-temperature 4 --max-length 256 "$@"
SPLIT=dev TRAIN_SPLIT= ./eval.sh "$W/scifact-dev" sparse-if untrained=$W/idx/scifact "$NAME=$W/idx/$NAME"
