#!/usr/bin/env bash
# One host with several GPUs: one process sees them all; the teacher's learner axis and the
# imitator's batch axis shard over every device (climit/parallel.py).
# Usage: scripts/multigpu.sh [CONFIG] [section.key=value ...]
set -euo pipefail
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd,)}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec climit run --config "${1:-configs/darkroom.yaml}" "${@:2}"
