#!/usr/bin/env bash
# Every climit benchmark beside its peer or floor, in one command on one GPU (the README's
# performance figures). Usage: scripts/bench_gpu.sh [ANCHORS_DIR] [OUT_DIR]
#   ANCHORS_DIR: a copy of ../shared/anchors (default: that folder); OUT_DIR: where the JSON lines go.
# Each step has its own time limit, so one that overruns costs only itself; all lines also go to
# stdout. SMALL=1 shrinks every size for a CPU dry run of the script itself.
set -u
ANCHORS=${1:-$(dirname "$0")/../../shared/anchors}
OUT=${2:-bench_out}
mkdir -p "$OUT"
ANCHORS=$(cd "$ANCHORS" && pwd) OUT=$(cd "$OUT" && pwd)
# Two processes (climit and its peer) share the GPU in turn: neither may grab it all.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
CLIMIT="$PY -m climit"  # the same interpreter as the anchors' (and the peer climit starts)
REPO=$(cd "$(dirname "$0")/.." && pwd)

if [ "${SMALL:-0}" = 1 ]; then
  LEARNERS="1 4"; UNROLL_LEARNERS="1"; T_STEPS=6000; FLOOR_UPD=20000; SHIPPED=4; RB=4; RBATCH=2
  ROLL="--context 64 --steps 50 --d-model 64 --layers 2 --heads 4"
  IMIT="--reduced --steps 2 --repeats 1"; IMIT_FLAGS="--small"; IMIT_SEEDS="--reduced --sizes documented --seeds 2 --steps 2 --repeats 1"; DR_STEPS=2000; DR_SEEDS=1; BREAKDOWN="--small"
else
  LEARNERS="1 64 512 4096"; UNROLL_LEARNERS="1 64"; T_STEPS=30000; FLOOR_UPD=4000000; SHIPPED=64; RB=4096; RBATCH=256
  ROLL="--context 1024 --steps 1000 --d-model 256 --layers 4 --heads 8 --dtype bfloat16"
  IMIT="--sizes documented default --steps 10 --repeats 3"; IMIT_FLAGS=""
  IMIT_SEEDS="--sizes documented --seeds 5 --steps 5 --repeats 2"; DR_STEPS=${DR_STEPS:-98000}; DR_SEEDS=16
  BREAKDOWN=""
fi

step() {  # step NAME SECONDS CMD...: run with a limit, keep its output in $OUT/NAME.jsonl
  local name=$1 limit=$2 ext=${STEP_EXT:-jsonl}; shift 2  # STEP_EXT=log: output that is not JSON
  case " ${ONLY:-$name} " in *" $name "*) ;; *) return 1 ;; esac  # ONLY="a b": just those steps
  echo "## $name ($(date -u +%H:%M:%S))"
  timeout "$limit" "$@" 2>"$OUT/$name.err" | tee "$OUT/$name.$ext"
  local rc=${PIPESTATUS[0]}
  echo "## $name rc=$rc ($(date -u +%H:%M:%S))"; tail -n 3 "$OUT/$name.err"; return "$rc"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
} | tee "$OUT/machine.txt"

# Teacher: climit vs rejax (uniform sampler) at every learner count, then the update floor
# with the same batch and buffer, then the peer's shipped sampler at a count it can finish.
step teacher 220 $CLIMIT bench teacher --learners $LEARNERS --steps $T_STEPS --histories off \
  --peer uniform --peer-script "$ANCHORS/rejax_dqn_bench.py"
# The latency-bound end (1 and 64 learners) with unrolled scans: fewer loop iterations per step.
step teacher_unroll 300 $CLIMIT bench teacher --learners $UNROLL_LEARNERS --steps $T_STEPS \
  --histories off --peer uniform --peer-script "$ANCHORS/rejax_dqn_bench.py" teacher.scan_unroll=5
step floor 60 $PY "$ANCHORS/mlp_update_bench.py" --seeds $LEARNERS --batch 100 --buffer 50000 \
  --target-updates $FLOOR_UPD --repeats 2
step shipped 60 $PY "$ANCHORS/rejax_dqn_bench.py" --total-timesteps $T_STEPS --num-seeds $SHIPPED \
  --eval-mode none --sampler rejax --force-vmap
# In-context rollout: KV cache vs recompute and vs the reference decode, same sizes.
step rollout 90 $CLIMIT bench rollout --batch $RB $ROLL --mode kv_cache --repeats 2 --peer \
  --peer-script "$ANCHORS/icrl_rollout_bench.py"
step imitator 90 $CLIMIT bench imitator $IMIT
# The documented size as the presets train it: 5 imitators vmapped in one step (imitator.seeds).
step imitator_seeds 120 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 $CLIMIT bench imitator $IMIT_SEEDS
# The documented imitator step taken apart: matmuls, attention, optimizer (the MFU work).
step breakdown 90 $PY "$(dirname "$0")/imitator_breakdown.py" $BREAKDOWN
# The documented train step under XLA flags that change GEMM and scheduling choices, and the
# float32 residual stream the model had before (the MFU work; only when named:
# ONLY="imitator_flags"). An unknown flag ends its own variant only.
if [ -n "${ONLY:-}" ]; then
  step imitator_flags 300 bash -c 'for f in "" "--xla_gpu_enable_triton_gemm=false" \
      "--xla_gpu_triton_gemm_any=true" "--xla_gpu_enable_cublaslt=true" \
      "--xla_gpu_enable_latency_hiding_scheduler=true" "--xla_gpu_enable_command_buffer="; do
    XLA_FLAGS="$f" timeout 50 '"$PY"' "'"$(dirname "$0")"'/imitator_variants.py" committed \
      f32_stream '"$IMIT_FLAGS"' || echo "{\"failed\": \"$f\"}"
  done'
  # The latency-bound teacher (1 and 64 learners; climit and its peer under the same flags) with
  # whole scan loops and conditionals recorded as CUDA graphs. (A scan's known trip count needs
  # no host; a lax.cond copies its predicate to the host, and since 2026-11-27 the teacher runs
  # none per step past learning_starts.) Only when named: ONLY="teacher_flags".
  step teacher_flags 300 bash -c 'for f in "" "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" \
      "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL --xla_gpu_command_buffer_unroll_loops=true"; do
    echo "{\"xla_flags\": \"$f\"}"
    XLA_FLAGS="$f" timeout 90 '"$CLIMIT"' bench teacher --learners '"$UNROLL_LEARNERS"' --steps '"$T_STEPS"' \
      --histories off --peer uniform --peer-script "'"$ANCHORS"'/rejax_dqn_bench.py" \
      || echo "{\"failed\": \"$f\"}"
  done'
fi
# Headline: Dark Room histories on disk at 1024 learners; a tenth of the 1e9-step run (rate).
DR=$(mktemp -d)
STEP_EXT=log step darkroom ${DR_LIMIT:-120} $CLIMIT teach --config "$REPO/configs/teacher_darkroom_1b.yaml" --no-progress \
  run.runs_dir="$DR" teacher.total_env_steps=$DR_STEPS teacher.seeds=$DR_SEEDS &&
  cp "$DR/teacher_darkroom_1b/teacher/summary.json" "$OUT/darkroom_summary.json" &&
  du -sb "$DR/teacher_darkroom_1b/teacher/histories" |
  awk '{print "{\"bench\": \"darkroom_histories\", \"bytes_on_disk\": " $1 "}"}' | tee "$OUT/darkroom_histories.jsonl"
rm -rf "$DR"
# The cache against recomputing the whole window each step, at fewer envs (recompute's memory).
step cache_ratio 60 $CLIMIT bench rollout --batch $RBATCH $ROLL --recompute-steps 20 --repeats 2
