# Common settings of the issue-16 training scripts (sourced). Override any of them in the environment.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
: "${PY:=/work/main/.venv/bin/python}"
: "${BRAID:=/work/main/.venv/bin/braid}"
: "${DATA:=/work/shared/data}"
: "${MODELS:=/work/shared/models}"
: "${VECTORS:=/work/shared/vectors}"
: "${W:=/work/scratch/train5}"          # working data: idx/ models/ ck/ logs/ results.jsonl
: "${REPO:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
mkdir -p "$W/idx" "$W/models" "$W/ck" "$W/logs"
# Heavy commands share the CPU with timing benchmarks: wait at the gate (lets an exclusive locker in), then hold
# the lock shared.
locked() { flock /work/bench.gate true; flock -s /work/bench.lock "$@"; }
