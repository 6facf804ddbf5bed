#!/bin/bash
# Is the memory agent a fair baseline? Breakout, the memory agent's input and width varied, everything else at the
# defaults (the pixel agent's PPO hyperparameters), 3M steps each (the learning rate annealed over the 3M).
#
#   bash docs/results/breakout_memory_ablation/run_ablation.sh                 # everything, to the end
#   UNTIL=$(date -d '+150 min' +%s) taskset -c 0 bash .../run_ablation.sh      # stop (checkpoint saved) at a time
#   VARIANTS="selected stack2" SEEDS="1" bash .../run_ablation.sh
#
# Resumable: a run whose run.json says "finished" is skipped, an unfinished one continues with --resume, so the
# script is re-run in each session until everything is done. Seed 1 of every variant comes before seed 2.
# Settings (environment variables):
#   RUNS      run folders go to $RUNS/<variant>/          (default docs/results/breakout_memory_ablation/runs)
#   SEEDS     seeds                                       (default "1 2")
#   VARIANTS  which variants, in this order               (default: all of them, as listed below)
#   STEPS     --total-timesteps                           (default 3000000)
#   UNTIL     stop the training command (SIGTERM: checkpoint saved, exit 130) at this Unix time; 0 = never
#   EXTRA     more arguments for every run, e.g. "--torch-threads 1 --env-processes 1"
set -uo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-docs/results/breakout_memory_ablation/runs} SEEDS=${SEEDS:-1 2} STEPS=${STEPS:-3000000}
UNTIL=${UNTIL:-0} EXTRA=${EXTRA:-}
ENV_ID=BreakoutNoFrameskip-v4
PY=${PYTHON:-python}

declare -A FLAGS=(
    [selected]=""                       # today's input: the 64 selected bytes of ram_vars/, value + bits
    [all128]="--ram-bytes all"          # the raw RAM: does the extractor's selection help at all?
    [nobitmaps]="--drop-bitmaps"        # the selection less its 36 bitmap (brick) bytes: 28 bytes
    [stack2]="--ram-stack 2"            # the last two RAM reads: velocities the game does not store
    [wide512]="--hidden 512"            # a wider MLP (RAM-input DQN work varied the networks' size: arXiv:1605.01335)
    [lr1e-4]="--learning-rate 1e-4"     # a smaller step than the CNN's 2.5e-4 for an MLP on 0..1 features (to test)
)
VARIANTS=${VARIANTS:-selected all128 nobitmaps stack2 wide512 lr1e-4}

status_of() {  # the "status" of a run folder's run.json ("" when there is none)
    [ -f "$1/run.json" ] && $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$1/run.json"
}

limited() {  # run a training command, stopped with SIGTERM (checkpoint saved, exit 130) at UNTIL
    if [ "$UNTIL" != 0 ]; then
        local left=$((UNTIL - $(date +%s)))
        [ "$left" -gt 60 ] || { echo "== UNTIL reached"; exit 0; }
        timeout --preserve-status -s TERM "$left" "$@"
    else "$@"; fi
}

for seed in $SEEDS; do
    for variant in $VARIANTS; do
        runs=$RUNS/$variant
        run_dir=$(ls -d "$runs/${ENV_ID}__${variant}__${seed}__"* 2>/dev/null | tail -n 1)
        status=$([ -n "$run_dir" ] && status_of "$run_dir")
        if [ "$status" = finished ]; then
            echo "== $variant seed $seed: finished already ($run_dir)"
            continue
        elif [ -n "$run_dir" ] && [ -f "$run_dir/checkpoint.pt" ]; then
            echo "== $variant seed $seed: resuming $run_dir ($(date))"
            limited $PY ppo_ram_breakout.py --resume "$run_dir/checkpoint.pt" $EXTRA
        else
            echo "== $variant seed $seed: training $STEPS steps ($(date))"
            # shellcheck disable=SC2086
            limited $PY ppo_ram_breakout.py --env-id "$ENV_ID" --exp-name "$variant" --seed "$seed" \
                --total-timesteps "$STEPS" --runs-dir "$runs" ${FLAGS[$variant]} $EXTRA
        fi
        rc=$?
        [ "$rc" = 0 ] || { echo "== $variant seed $seed: stopped (exit $rc)"; exit "$rc"; }
    done
done
echo "== all done"
