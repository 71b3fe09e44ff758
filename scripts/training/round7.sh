#!/usr/bin/env bash
# Round 7 (docs/benchmarks/training.md): the corpus-only setting chosen on scifact's dev split, then measured once
# on test for scifact and the five small collections.
#   round7.sh dev      eight corpus-only runs (SETTINGS: a subset of a b c d e f g h) on the scifact corpus (no qrels read), each scored on dev (162 train
#                      queries); test is not read
#   round7.sh test SETTING
#                      the chosen SETTING (a to h) corpus-only on scifact (its dev run's model, scored on test)
#                      and on adi, medline, cranfield, cisi and cacm (200 pseudo-queries each, like rounds 2-6)
# Corpus-only training reads no qrels at all, so scifact's dev split (a part of its train qrels) is a clean place to
# choose among settings for it; before this round the corpus-only setting was the supervised one (round 4's choice).
set -euo pipefail
cd "$(dirname "$0")"
source ./env.sh
COMMON="--source corpus --epochs 1 --loss kl --kl-temperature 4"
setting() {
  case $1 in
    a) echo "$COMMON --max-length 256 --train-query-weights" ;;   # round 6's corpus-only setting
    b) echo "$COMMON --max-length 128 --train-query-weights" ;;   # round 3's 128 training tokens + query weights
    c) echo "$COMMON --max-length 128" ;;                         # round 3's setting as it was
    d) echo "$COMMON --max-length 128 --train-query-weights" ;;   # b with 480 pseudo-queries (60 steps)
    e) echo "$COMMON --max-length 256 --train-query-weights --lr 2e-5" ;;  # a at 2/5 of the learning rate
    f) echo "$COMMON --max-length 128 --exclude-source" ;;        # c without the pseudo-query's own document
    g) echo "$COMMON --max-length 128 --exclude-source --lr 2e-5" ;;  # f at 2/5 of the learning rate
    h) echo "$COMMON --max-length 256 --train-query-weights --lr 2e-5 --exclude-source" ;;  # e without the source
    *) echo "unknown setting $1" >&2; exit 2 ;;
  esac
}
queries() { [ "$1" = d ] && echo 480 || echo 240; }
[ -d "$W/scifact-dev/qrels" ] || "$PY" make_dev.py "$DATA/scifact" "$W/scifact-dev"
case ${1:?dev or test} in
  dev)
    for S in ${SETTINGS:-a b c d e f g h}; do
      # shellcheck disable=SC2046
      CHUNK=${CHUNK:-30} ./train.sh scifact "r7-scifact-$S" $(setting "$S") --max-queries "$(queries "$S")"
      SPLIT=dev TRAIN_SPLIT= ./eval.sh "$W/scifact-dev" sparse-if untrained=$W/idx/scifact "r7-$S=$W/idx/r7-scifact-$S"
    done ;;
  test)
    S=${2:?the chosen setting}
    ./eval.sh scifact sparse-if,docs/pipelines/hybrid-if.toml,hybrid untrained=$W/idx/scifact "r7-$S=$W/idx/r7-scifact-$S"
    for C in ${COLLECTIONS:-adi medline cranfield cisi cacm}; do
      ./build_untrained.sh "$C"
      # shellcheck disable=SC2046
      CHUNK=${CHUNK:-30} ./train.sh "$C" "r7-$C-$S" $(setting "$S") --max-queries 200
      ./eval.sh "$C" sparse-if untrained=$W/idx/$C "r7-$S=$W/idx/r7-$C-$S"
    done ;;
  *) echo "round7.sh dev | test SETTING" >&2; exit 2 ;;
esac
