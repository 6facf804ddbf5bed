#!/usr/bin/env bash
# One short check of every CUDA path, sized for one call on a lent GPU machine (<= 8 minutes wall time on one
# GPU with 16 cores; the budgets below were chosen for that, not yet timed on a GPU):
#   1. pixel-agent training throughput in fp32 and bf16, each eager and with --compile (SPS of the last
#      iteration, time split; 16 envs x 128 steps x 12 iterations per run);
#   2. memory-agent training throughput, eager and with --compile;
#   3. two short training runs of each agent on CUDA, and an evaluation of each checkpoint on CUDA;
#   4. the probe on CUDA with a tiny budget, on the shipped 500k pair.
# Prints one table and exits 1 if any CUDA path failed (0 when all passed).
#
#   bash bench/gpu_check.sh                 # on a GPU machine: the full check
#   bash bench/gpu_check.sh                 # on a CPU-only machine: prints what it skipped, exits 0
#   GPU_CHECK_CPU=1 bash bench/gpu_check.sh # runs the same commands on the CPU with tiny budgets, --compile
#                                           # rows skipped (a smoke test of this script: no figure means anything)
# Output: the table on stdout; each command's log under $GPU_CHECK_OUT (default: a temporary folder).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
HAS_CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
CPU_SMOKE=${GPU_CHECK_CPU:-0}
ROWS=()
FAILED=0

if [ "$HAS_CUDA" != "1" ] && [ "$CPU_SMOKE" != "1" ]; then
  echo "gpu_check: no CUDA device visible to torch ($($PY -c 'import torch; print(torch.__version__)' 2>/dev/null));"
  echo "skipped: pixel throughput fp32/bf16 x eager/--compile, RAM throughput eager/--compile, 2 training runs"
  echo "and an eval per agent on CUDA, the probe on CUDA. Run it on a GPU machine, or GPU_CHECK_CPU=1 for a smoke test."
  exit 0
fi

if [ "$HAS_CUDA" = "1" ]; then
  DEVICE="cuda: $($PY -c 'import torch; print(torch.cuda.get_device_name(0))')"
  NUM_ENVS=16; STEPS=$((16 * 128 * 12)); RAM_STEPS=$((16 * 128 * 24)); SHORT=$((16 * 128 * 4)); CUDA_FLAG="--cuda"
  PROBE_BUDGET="--num-base-states 16 --top-k 4 --rollout-steps 64 --importance-steps 32 --samples-per-var 4"
else
  DEVICE="cpu (GPU_CHECK_CPU=1 smoke test: tiny budgets, figures meaningless)"
  NUM_ENVS=2; STEPS=$((2 * 32 * 4)); RAM_STEPS=$((2 * 32 * 4)); SHORT=$((2 * 32 * 2)); CUDA_FLAG="--no-cuda --torch-threads 1"
  PROBE_BUDGET="--num-base-states 6 --top-k 2 --rollout-steps 16 --importance-steps 16 --samples-per-var 2"
fi
NUM_STEPS=$([ "$HAS_CUDA" = "1" ] && echo 128 || echo 32)
RAM_VARS=ram_vars/BreakoutNoFrameskip-v4.json

# row NAME LOG RC [TRAINING]: one table row from a run's log ("ok": exit 0, and a training run must say it ran
# on CUDA: "device cuda" in its first line)
row() {
  local name=$1 log=$2 rc=$3 training=${4:-} sps split status
  sps=$(grep -o "SPS=[0-9]*" "$log" | tail -1 | cut -d= -f2)
  split=$(grep "^time split:" "$log" | tail -1 | sed 's/^time split: //; s/; wall.*//')
  if [ "$rc" = "0" ] && { [ "$HAS_CUDA" != "1" ] || [ -z "$training" ] || grep -q "device cuda" "$log"; }; then
    status=ok
  else
    status="FAILED (exit $rc; $(grep -v '^\s*$' "$log" | tail -1 | cut -c1-80))"; FAILED=1
  fi
  ROWS+=("$(printf '%-44s %-8s %7s  %s' "$name" "$status" "${sps:--}" "${split:-}")")
}

train() {  # train NAME SCRIPT BUDGET EXTRA...: one training run, its row, and its run folder in $LAST_RUN
  local name=$1 script=$2 budget=$3; shift 3
  if [ "$HAS_CUDA" != "1" ] && [[ " $* " == *" --compile "* ]]; then  # CPU compile: ~40 s each, nothing learnt
    ROWS+=("$(printf '%-44s %-8s' "$name" "skipped (CPU smoke test)")"); return
  fi
  if [ "$HAS_CUDA" != "1" ] && [[ " $* " == *" bf16 "* ]] && ! grep -qwE "avx512_bf16|amx_bf16" /proc/cpuinfo 2>/dev/null; then
    ROWS+=("$(printf '%-44s %-8s' "$name" "skipped (this CPU has no native bf16)")"); return  # the script refuses it
  fi
  local runs="$OUT/runs_$(echo "$name" | tr -c 'a-zA-Z0-9' _)" log rc
  log="$runs.log"
  timeout 300 $PY "$script" --env-id BreakoutNoFrameskip-v4 --num-envs "$NUM_ENVS" --num-steps "$NUM_STEPS" \
      --total-timesteps "$budget" --save-interval 1000000 --runs-dir "$runs" $CUDA_FLAG "$@" >"$log" 2>&1
  rc=$?
  row "$name" "$log" "$rc" training
  LAST_RUN=$(ls -d "$runs"/*/ 2>/dev/null | head -1)
}

echo "gpu_check on $DEVICE; logs in $OUT" >&2
for precision in fp32 bf16; do
  train "pixel throughput $precision eager" ppo_pixel_breakout.py "$STEPS" --precision "$precision"
  train "pixel throughput $precision --compile" ppo_pixel_breakout.py "$STEPS" --precision "$precision" --compile
done
train "RAM throughput eager" ppo_ram_breakout.py "$RAM_STEPS" --ram-vars "$RAM_VARS"
train "RAM throughput --compile" ppo_ram_breakout.py "$RAM_STEPS" --ram-vars "$RAM_VARS" --compile
for seed in 1 2; do
  train "pixel short run seed $seed" ppo_pixel_breakout.py "$SHORT" --seed "$seed"
  PIXEL_RUN=$LAST_RUN
  train "RAM short run seed $seed" ppo_ram_breakout.py "$SHORT" --seed "$seed" --ram-vars "$RAM_VARS"
  RAM_RUN=$LAST_RUN
done
for pair in "pixel ppo_pixel_breakout.py ${PIXEL_RUN:-missing/}" "RAM ppo_ram_breakout.py ${RAM_RUN:-missing/}"; do
  set -- $pair
  log="$OUT/eval_$1.log"
  timeout 300 $PY "$2" --eval-checkpoint "${3}checkpoint.pt" --eval-episodes 2 --eval-max-frames 4000 $CUDA_FLAG >"$log" 2>&1
  row "$1 eval on the short run's checkpoint" "$log" $?
done
log="$OUT/probe.log"
timeout 300 $PY probe_function_vectors.py --pixel-checkpoint models/breakout_pixel_ppo_500k.pt \
    --ram-checkpoint models/breakout_ram_ppo_500k.pt --ram-vars "$RAM_VARS" --out-dir "$OUT/probe" \
    $PROBE_BUDGET $CUDA_FLAG >"$log" 2>&1
row "probe (tiny budget) on the 500k pair" "$log" $?

printf '%-44s %-8s %7s  %s\n' "check" "status" "SPS" "time split (training runs)"
printf '%s\n' "${ROWS[@]}"
if [ "$FAILED" = "1" ]; then
  echo "gpu_check: FAILED: see the rows above and the logs in $OUT"
  exit 1
fi
echo "gpu_check: all passed on $DEVICE"
