#!/bin/bash
# Smoke run of every script on the oldest torch requirements.txt allows (2.5.1, the Docker image's torch),
# on the CPU, with tiny budgets: it shows the scripts run there, not that they learn. Not part of CI.
#
#   python3 -m venv /tmp/venv251                                        # a venv of its own, never CI's
#   /tmp/venv251/bin/pip install torch==2.5.1 -r requirements.txt       # PyPI's wheel brings CUDA libs (~3 GB)
#   PYTHON=/tmp/venv251/bin/python bash docs/docker/smoke_oldest_torch.sh   # 3-4 min on 2 cores
#
# The same from pytest: MPI_OLDEST_TORCH_PYTHON=/tmp/venv251/bin/python python -m pytest tests/test_oldest_torch.py
# Settings: PYTHON (the interpreter to test, default python), WORK (scratch folder, default a new temp dir,
# removed at the end unless KEEP=1), COMPILE=0 skips the --compile run (it needs a C++ compiler: g++).
# Ends with "smoke: all N steps passed" and exit 0, or names the step that failed and exits 1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python}
COMPILE=${COMPILE:-1}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/mpi-smoke.XXXXXX")}
mkdir -p "$WORK" && cd "$WORK" || exit 1
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
export CUDA_VISIBLE_DEVICES="" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
ENV_ID=BreakoutNoFrameskip-v4
TRAIN=(--num-envs 2 --num-steps 32 --total-timesteps 256 --seed 1 --torch-threads 1)
n=0
step() {  # step NAME CMD...: run it, log to $WORK/NAME.log, stop at the first failure
    local name=$1; shift
    n=$((n + 1))
    local t0=$SECONDS
    if "$@" >"$WORK/$name.log" 2>&1; then
        echo "ok   $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name: $* (exit $?); last lines of $WORK/$name.log:"
        tail -n 25 "$WORK/$name.log"
        trap - EXIT
        exit 1
    fi
}
run() { step "$1" "$PY" "$ROOT/$2" "${@:3}"; }

echo "smoke: $("$PY" -c 'import sys, torch; print(f"torch {torch.__version__}, Python {sys.version.split()[0]}")') in $WORK"

# the torch features the scripts use, each on its own so that a failure names it
step api "$PY" - <<'EOF'
import os, torch, torch.nn as nn
m = nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
opt = torch.optim.Adam(m.parameters(), lr=1e-3, eps=1e-5, fused=True)  # fused Adam on the CPU: torch >= 2.4
with torch.autocast("cpu", dtype=torch.bfloat16):                      # the pixel trunk's bf16 autocast
    y = m(torch.rand(2, 4, 12, 12).to(memory_format=torch.channels_last))
assert y.dtype == torch.bfloat16, y.dtype
y.float().sum().backward()
opt.step()
print("fused Adam (cpu), bf16 autocast (cpu), channels-last: ok;", len(os.sched_getaffinity(0)), "usable cores")
EOF

run extract extract_ram_vars.py --env-id $ENV_ID --total-frames 2000 --seed 1 --out-dir ram_vars
RV=ram_vars/$ENV_ID.json
run ram ppo_ram_breakout.py --env-id $ENV_ID --ram-vars $RV --runs-dir runs "${TRAIN[@]}"
run pixel ppo_pixel_breakout.py --env-id $ENV_ID --runs-dir runs "${TRAIN[@]}"            # --precision auto
run pixel-fp32 ppo_pixel_breakout.py --env-id $ENV_ID --runs-dir runs-fp32 --precision fp32 "${TRAIN[@]}"
run_of() { "$PY" -c 'import glob, json, os, sys
print(*[os.path.dirname(p) for p in sorted(glob.glob("runs/*/run.json")) if json.load(open(p))["agent"] == sys.argv[1]][:1])' "$1"; }
PIXEL=$(run_of pixel) RAM=$(run_of ram)
[ -n "$PIXEL" ] && [ -n "$RAM" ] || { echo "FAIL: no pixel / ram run folder under $WORK/runs"; exit 1; }
# checkpoints read back with torch.load(weights_only=True): resume and evaluation
run pixel-resume ppo_pixel_breakout.py --resume "$PIXEL/checkpoint.pt" --total-timesteps 320 --torch-threads 1
run ram-eval ppo_ram_breakout.py --eval-checkpoint "$RAM/checkpoint.pt" --eval-episodes 1 --eval-num-envs 1 \
    --eval-max-frames 400 --torch-threads 1
if [ "$COMPILE" = 1 ]; then
    run pixel-compile ppo_pixel_breakout.py --env-id $ENV_ID --runs-dir runs-compile --num-envs 2 --num-steps 32 \
        --total-timesteps 64 --torch-threads 1 --compile
fi
run compare compare_runs.py runs --out-dir compare --smooth 2
run probe probe_function_vectors.py --pixel-checkpoint "$PIXEL/checkpoint.pt" --ram-checkpoint "$RAM/checkpoint.pt" \
    --ram-vars $RV --out-dir probe --num-base-states 6 --samples-per-var 8 --top-k 4 --rollout-steps 60 \
    --importance-steps 64 --causal-pairs 16 --random-directions 3 --torch-threads 1
run report probe_report.py --out-dir probe
run sweep sweep.py --games $ENV_ID --workers 1 --total-timesteps 256 --out-dir sweep \
    "--extract-args=--total-frames 1500 --n-bases 3 --long-horizon 0" \
    "--train-args=--num-envs 2 --num-steps 32 --torch-threads 1" \
    "--probe-args=--num-envs 2 --importance-steps 16 --rollout-steps 16 --num-base-states 8 --samples-per-var 2 --top-k 2 --control-draws 1 --causal-pairs 4 --random-directions 1 --batch-size 64"

for f in compare/summary.json compare/index.html probe/results.json probe/report.html sweep/index.json; do
    [ -s "$f" ] || { echo "FAIL: $f was not written"; exit 1; }
done
echo "smoke: all $n steps passed"
