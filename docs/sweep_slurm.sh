#!/bin/bash
# The multi-game sweep on a Slurm cluster: one array task per game, then one job that rebuilds the index.
#
# Each task runs `sweep.py --only-index $SLURM_ARRAY_TASK_ID` (the game at that position of the game list,
# the same list on every task) in the shared sweep folder; the steps it finished are skipped when the task
# is re-submitted or requeued, and a training step cut short continues from its checkpoint.
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
# --signal=B:TERM@300: five minutes before the time limit Slurm sends SIGTERM to sweep.py, which stops the
# running step with SIGINT (the training scripts then save checkpoint.pt), records it as interrupted in
# <game>/status.json and exits; re-submitting the same array index resumes it.
#SBATCH --job-name=mpi-sweep
#SBATCH --cpus-per-task=8
#SBATCH --mem=24G
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=slurm-%A_%a.out
##SBATCH --gres=gpu:1          # uncomment on GPU nodes: the training and probe scripts use CUDA when present
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo "error: submit as an array job: sbatch --array=0-N docs/sweep_slurm.sh [sweep.py args]" >&2
    exit 2
fi
exec python sweep.py --only-index "$SLURM_ARRAY_TASK_ID" --workers 1 "$@"
