#!/usr/bin/env bash
# A Cloud TPU pod slice: run the same command on every host, e.g.
#   gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd climit && scripts/tpu_pod.sh configs/darkroom.yaml"
# JAX detects the slice (CLIMIT_DISTRIBUTED=auto -> jax.distributed.initialize()); runs_dir must be
# on storage every host sees (e.g. a mounted bucket or NFS). Install with: pip install -e ".[tpu]"
set -euo pipefail
export CLIMIT_DISTRIBUTED=auto
exec climit run --config "${1:-configs/darkroom.yaml}" "${@:2}"
