#!/usr/bin/env bash
# One GPU: the whole experiment. Usage: scripts/gpu.sh [CONFIG] [section.key=value ...]
# Install first with: pip install -e ".[cuda12]"   (or cuda13)
set -euo pipefail
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
# JAX's persistent compilation cache: a rerun (an ablation, a resumed stage) loads the programs
# it compiled before instead of compiling them again.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/climit/jax}
exec climit run --config "${1:-configs/darkroom.yaml}" "${@:2}"
