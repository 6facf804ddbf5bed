#!/bin/bash
# The Breakout reference result: the pixel and the memory agent with their default arguments (10M steps),
# seeds 1-3, each evaluated on 10 full games, then compare_runs.py over all of them.
#
#   bash docs/reference_runs.sh                       # everything, to the end (one GPU: see the README)
#   MINUTES=9 bash docs/reference_runs.sh             # stop each training command after 9 minutes, saving
#                                                     # its checkpoint; run again to continue where it stopped
#   SEEDS="1" AGENTS="pixel" bash docs/reference_runs.sh
#
# Resumable: a run whose run.json says "finished" is skipped, an unfinished one continues with --resume,
# so the script can be re-run after a time limit (MINUTES, Slurm's SIGTERM, a device session's 10-minute
# commands) until it has done everything. Settings (environment variables):
#   RUNS      run folders go to $RUNS/<agent>/            (default runs/reference)
#   OUT       compare_runs.py output folder               (default docs/results/breakout_10M)
#   SEEDS     seeds                                       (default "1 2 3")
#   AGENTS    which agents, in this order                 (default "pixel ram")
#   STEPS     --total-timesteps                           (default 10000000, the scripts' default)
#   MINUTES   wall-clock limit per training command, 0 = none (default 0)
#   EVAL      full games played by --eval-checkpoint       (default 10)
#   EXTRA     more arguments for both training scripts, e.g. "--compile" (default none)
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/reference} OUT=${OUT:-docs/results/breakout_10M} SEEDS=${SEEDS:-1 2 3}
AGENTS=${AGENTS:-pixel ram} STEPS=${STEPS:-10000000} MINUTES=${MINUTES:-0} EVAL=${EVAL:-10} EXTRA=${EXTRA:-}
ENV_ID=BreakoutNoFrameskip-v4
RAM_VARS=ram_vars/$ENV_ID.json
PY=${PYTHON:-python}

status_of() {  # the "status" of a run folder's run.json ("" when there is none)
    [ -f "$1/run.json" ] && $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"])' "$1/run.json"
}

limited() {  # run a training command, stopped with SIGTERM (checkpoint saved, exit 130) after MINUTES
    if [ "$MINUTES" != 0 ]; then timeout --preserve-status -s TERM "${MINUTES}m" "$@"; else "$@"; fi
}

incomplete=0
for seed in $SEEDS; do
    for agent in $AGENTS; do
        script=ppo_${agent}_breakout.py
        extra=()
        [ "$agent" = ram ] && extra=(--ram-vars "$RAM_VARS")
        runs=$RUNS/$agent
        run_dir=$(ls -d "$runs/${ENV_ID}__ppo_${agent}_breakout__${seed}__"* 2>/dev/null | tail -n 1)
        status=$([ -n "$run_dir" ] && status_of "$run_dir")
        if [ "$status" = finished ]; then
            echo "== $agent seed $seed: finished already ($run_dir)"
        elif [ -n "$run_dir" ] && [ -f "$run_dir/checkpoint.pt" ]; then
            echo "== $agent seed $seed: resuming $run_dir"
            limited $PY "$script" --resume "$run_dir/checkpoint.pt" $EXTRA
        else
            echo "== $agent seed $seed: training $STEPS steps"
            limited $PY "$script" --env-id "$ENV_ID" --seed "$seed" --total-timesteps "$STEPS" --runs-dir "$runs" \
                "${extra[@]}" $EXTRA
        fi
        rc=$?
        run_dir=$(ls -d "$runs/${ENV_ID}__ppo_${agent}_breakout__${seed}__"* 2>/dev/null | tail -n 1)
        if [ -n "$run_dir" ] && [ "$(status_of "$run_dir")" = finished ]; then
            [ -f "$run_dir/eval.json" ] || $PY "$script" --eval-checkpoint "$run_dir/checkpoint.pt" --eval-episodes "$EVAL"
        else
            echo "== $agent seed $seed: not finished (exit $rc); run this script again to continue"
            incomplete=1
        fi
    done
done

[ -d "$RUNS" ] && $PY compare_runs.py "$RUNS" --out-dir "$OUT"
if [ "$incomplete" = 1 ]; then
    echo "some runs are not finished: run this script again (the comparison above is provisional)"
    exit 1
fi
