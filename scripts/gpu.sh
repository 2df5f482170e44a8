#!/usr/bin/env bash
# One GPU: the whole experiment. Usage: scripts/gpu.sh [CONFIG] [section.key=value ...]
# Install first with: pip install -e ".[cuda12]"   (or cuda13)
set -euo pipefail
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec climit run --config "${1:-configs/darkroom.yaml}" "${@:2}"
