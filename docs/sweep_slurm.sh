#!/bin/bash
# The multi-game sweep on a Slurm cluster: one array task per game, then one job that rebuilds the index.
#
# Each task runs `sweep.py --only-index $SLURM_ARRAY_TASK_ID` (the game at that position of the game list,
# the same list on every task) in the shared sweep folder; the steps it finished are skipped when the task
# is re-submitted or requeued, and a training step cut short continues from its checkpoint. Submit from the
# repository root (the task runs `python sweep.py` in $SLURM_SUBMIT_DIR):
#
#   N=$(python sweep.py --list-games | wc -l)                 # 24 with the default list
#   jid=$(sbatch --parsable --array=0-$((N - 1))%8 docs/sweep_slurm.sh --total-timesteps 2000000)
#   sbatch --dependency=afterany:$jid --wrap "python sweep.py --index-only"   # sweep/index.html
#
# Every argument after the script name goes to sweep.py (the same on every task): --games, --out-dir,
# --total-timesteps, --extract-args=..., --train-args=..., --probe-args=..., --step-timeout, ...
# Only the extractor on every ROM ale-py ships:
#   N=$(python sweep.py --all-extract --list-games | wc -l)
#   sbatch --array=0-$((N - 1))%16 docs/sweep_slurm.sh --all-extract --extract-timeout 900
#
# The #SBATCH lines below are defaults; options on the sbatch command line replace them (your site's
# partition, account, GPUs, time limit): sbatch -p gpu --gres=gpu:1 -c 8 --mem=24G --time=12:00:00 --array=...
#
# --signal=B:TERM@300: five minutes before the time limit Slurm sends SIGTERM to sweep.py, which stops the
# running step with SIGINT (the training scripts then save checkpoint.pt), records it as interrupted in
# <game>/status.json and exits; `scontrol requeue <jid>_<task>` (or re-submitting the same array index)
# resumes it. scancel does the same (SIGTERM to every process of the task, SIGKILL after the site's KillWait).
# --open-mode=append: a requeued task adds to its slurm-%A_%a.out, so the log keeps every attempt.
# Run under a real slurmctld/slurmd by tests/test_slurm.py (docs/slurm/local_cluster.sh).
#SBATCH --job-name=mpi-sweep
#SBATCH --cpus-per-task=8
#SBATCH --mem=24G
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=slurm-%A_%a.out
#SBATCH --open-mode=append
##SBATCH --gres=gpu:1          # uncomment on GPU nodes: the training and probe scripts use CUDA when present
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo "error: submit as an array job: sbatch --array=0-N docs/sweep_slurm.sh [sweep.py args]" >&2
    exit 2
fi
echo "sweep_slurm.sh: job ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID}, attempt $((${SLURM_RESTART_COUNT:-0} + 1)), on $(hostname)"
exec python sweep.py --only-index "$SLURM_ARRAY_TASK_ID" --workers 1 "$@"
