#!/usr/bin/env bash
# One host with several GPUs: one process sees them all; the teacher's learner axis and the
# imitator's batch axis shard over every device (climit/parallel.py).
# Usage: scripts/multigpu.sh [CONFIG] [section.key=value ...]
set -euo pipefail
# Every GPU is visible unless CUDA_VISIBLE_DEVICES says otherwise. (Filling it from nvidia-smi
# here hid them all where nvidia-smi is missing: JAX then fell back to the CPU with a warning.)
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
# JAX's persistent compilation cache: a rerun (an ablation, a resumed stage) loads the programs
# it compiled before instead of compiling them again.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/climit/jax}
exec climit run --config "${1:-configs/darkroom.yaml}" "${@:2}"
