"""docs/sweep_slurm.sh under a real Slurm: slurmctld + slurmd + munged started on this machine by
docs/slurm/local_cluster.sh (one node, proctrack/linuxproc, no cgroups).

The sweep is submitted as the README says (`sbatch --array ... docs/sweep_slurm.sh`, then the index job with
`--dependency=afterany`) for 2 games with tiny budgets. While array task 0 runs, the same task is submitted
again (the game's lock keeps it out, and it says so); then task 0 is cancelled (`scancel`) while its pixel agent
trains and requeued (`scontrol requeue`): it must resume from the checkpoint, every env step logged exactly once.

Skipped, with the reason, where the cluster cannot start (Slurm or munge not installed, not root);
MPI_REQUIRE_SLURM=1 (set by .ci/run once it has installed the packages) makes that a failure instead.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_script

GAMES = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4"]
STEPS, BATCH = 1024, 64  # env steps per agent; one PPO iteration = --num-envs 2 x --num-steps 32 env steps
SWEEP_ARGS = [
    "--games", *GAMES, "--total-timesteps", str(STEPS),
    "--extract-args=--total-frames 1500 --n-bases 3 --long-horizon 0",
    "--train-args=--num-envs 2 --num-steps 32 --torch-threads 1",
    "--probe-args=--num-envs 2 --importance-steps 16 --rollout-steps 16 --num-base-states 8 --samples-per-var 2 --torch-threads 1"
    " --top-k 2 --control-draws 1 --causal-pairs 4 --random-directions 1 --batch-size 64",
]
# What a cluster user sets per site on the sbatch line (it overrides the script's #SBATCH defaults): here one
# CPU and 2 GB per task, a 30-minute limit (the script's --signal=B:TERM@300 then stops the sweep at 25 minutes).
RESOURCES = ["--cpus-per-task=1", "--mem=2G", "--time=30"]
CLUSTER = ROOT / "docs" / "slurm" / "local_cluster.sh"
WAIT = 1200  # seconds any one phase may take: generous, the test shares a busy core here


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node cluster; yields the environment that sbatch/squeue/scancel/scontrol need."""
    state = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, MPI_SLURM_DIR=str(state))
    t0 = time.time()
    proc = subprocess.run(["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        why = ([l for l in proc.stderr.splitlines() if l.strip()] or ["no output"])[-1]
        subprocess.run(["bash", str(CLUSTER), "stop"], env=env, capture_output=True, timeout=180)
        if os.environ.get("MPI_REQUIRE_SLURM") == "1":
            pytest.fail(f"local Slurm cluster did not start: {why}\n{proc.stdout}")
        pytest.skip(f"local Slurm cluster cannot start here: {why}")
    print(f"\n{proc.stdout.strip()}\n(start-up as the test saw it: {time.time() - t0:.1f}s)")
    env.update(SLURM_CONF=str(state / "slurm.conf"), CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # the jobs' `python`
    try:
        yield env
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop"], env=env, capture_output=True, timeout=180)


def slurm(env, *cmd):
    """Run a Slurm client command in the repository root (the jobs' SLURM_SUBMIT_DIR); its stdout, stripped."""
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}: exit {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout.strip()


def state(env, job):
    """The job's (or array task's) state as squeue names it: PENDING, RUNNING, CANCELLED, COMPLETED, ..."""
    return slurm(env, "squeue", "-h", "-t", "all", "-j", job, "-o", "%T") or "GONE"


def wait_for(what, check, on_timeout, timeout=WAIT):
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"{what}: not after {timeout}s\n{on_timeout()}"
        time.sleep(0.25)


def read(path):
    return Path(path).read_text(errors="replace") if Path(path).exists() else ""


def status(out, game):
    return json.loads(read(out / game / "status.json") or '{"steps": {}}')


def logged_steps(run_dir):
    """The env steps at which each process of a run logged a PPO update: one list per TensorBoard event file
    (one file per process: the first run, then each resume), raw, before TensorBoard's purge on resume."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = []
    for path in run_dir.glob("events.out.tfevents.*"):
        events = list(EventFileLoader(str(path)).Load())
        steps = [e.step for e in events for v in e.summary.value if v.tag == "losses/value_loss"]
        files.append((min(e.wall_time for e in events), steps))
    return [steps for _, steps in sorted(files)]


def test_sweep_job_array_with_requeue_and_lock(cluster, tmp_path):
    env, out = cluster, tmp_path / "sweep"
    args = [*SWEEP_ARGS, "--out-dir", out]
    logs = lambda: "\n".join(f"--- {p.name}\n{read(p)[-2500:]}" for p in sorted(tmp_path.glob("*.out")))

    # 1. the README's commands: the array (one task per game, here one task at a time) and the index job after it
    n = len(run_script("sweep.py", *args, "--list-games").stdout.splitlines())
    assert n == len(GAMES)
    array = slurm(env, "sbatch", "--parsable", f"--array=0-{n - 1}%1", *RESOURCES,
                  f"--output={tmp_path}/slurm-%A_%a.out", "docs/sweep_slurm.sh", *args)
    index_job = slurm(env, "sbatch", "--parsable", f"--dependency=afterany:{array}", *RESOURCES,
                      f"--output={tmp_path}/index-%j.out", "--wrap", f"python sweep.py --index-only --out-dir {out}")
    task0, first = f"{array}_0", GAMES[0]

    # 2. the same task submitted again while task 0 runs its game: the game's lock keeps the second one out
    running = lambda: "running" in {s.get("status") for s in status(out, first)["steps"].values()}
    wait_for("task 0 running a step", running, logs)
    again = slurm(env, "sbatch", "--parsable", "--array=0", *RESOURCES, f"--output={tmp_path}/again-%A_%a.out",
                  "docs/sweep_slurm.sh", *args)
    wait_for("the second task on the same game to end", lambda: state(env, f"{again}_0") == "COMPLETED", logs)
    said = read(tmp_path / f"again-{again}_0.out")
    assert f"{first}] busy: another sweep is running this game now; left to it" in said, said
    assert "extract: start" not in said and state(env, task0) == "RUNNING"

    # 3. cancel task 0 while its pixel agent trains (after its first PPO update), then requeue it
    pixel_log = out / first / "logs" / "pixel.stdout.log"
    wait_for("task 0's pixel agent to log an update", lambda: "global_step=" in read(pixel_log)
             or state(env, task0) != "RUNNING", logs)
    assert state(env, task0) == "RUNNING", "task 0 ended before it could be cancelled mid-training\n" + logs()
    slurm(env, "scancel", task0)
    wait_for("the cancelled task to end", lambda: state(env, task0) == "CANCELLED", logs, timeout=120)
    rec = status(out, first)["steps"]["pixel"]
    assert rec["status"] == "interrupted", rec
    run_dir = out / first / rec["partial_run"]
    run = json.loads(read(run_dir / "run.json"))
    assert run["status"] == "interrupted" and 0 < run["global_step"] < STEPS, run
    saved_at = run["global_step"]
    slurm(env, "scontrol", "requeue", task0)

    # 4. everything runs to the end: the requeued task after the other one, then the index job
    wait_for("the index job to end", lambda: state(env, index_job) in ("COMPLETED", "FAILED", "CANCELLED"), logs)
    assert state(env, index_job) == "COMPLETED", logs()
    assert [state(env, f"{array}_{i}") for i in range(n)] == ["COMPLETED"] * n, logs()
    assert "Restarts=1 " in slurm(env, "scontrol", "show", "job", task0)

    # the requeued task resumed the run from its checkpoint: every PPO update logged once, none lost
    st = status(out, first)["steps"]
    assert st["pixel"]["status"] == "done" and st["pixel"]["resumed_from"] == rec["partial_run"], st["pixel"]
    assert st["pixel"]["outputs"]["run_dir"] == rec["partial_run"]
    before, after = logged_steps(run_dir)
    assert before == list(range(BATCH, saved_at + 1, BATCH)), (before, saved_at)
    assert after == list(range(saved_at + BATCH, STEPS + 1, BATCH)), (after, saved_at)
    assert f"resuming {run_dir.name} from global_step {saved_at}" in read(pixel_log)
    assert json.loads(read(run_dir / "run.json"))["global_step"] == STEPS
    # ... and ran none of the finished steps again; its log (--open-mode=append) holds both attempts
    task_log = read(tmp_path / f"slurm-{array}_0.out")
    expected = [f"job {array}_0, attempt 1,", "pixel: INTERRUPTED", f"job {array}_0, attempt 2,", "extract: skip",
                "ram: skip", f"--resume {rec['partial_run']}/checkpoint.pt", "pixel: done", "probe: done"]
    at = [task_log.find(line) for line in expected]
    assert -1 not in at and at == sorted(at), (dict(zip(expected, at)), task_log[-4000:])
    sweep_log = read(out / first / "logs" / "sweep.log")
    assert [sweep_log.count(f"] {s}: start") for s in ("extract", "ram", "pixel", "compare", "probe")] == [1, 1, 2, 1, 1]
    assert len(list((out / first / "runs").iterdir())) == 2  # one memory agent run, one pixel agent run

    # 5. the index job's index: both games done, with their reports
    assert f"index of {n} games" in read(tmp_path / f"index-{index_job}.out")
    index = json.loads(read(out / "index.json"))
    assert [(g["env_id"], g["status"]) for g in index["games"]] == [(g, "done") for g in GAMES], index["counts"]
    page = read(out / "index.html")
    for g in index["games"]:
        assert all(s["status"] == "done" for s in g["steps"].values()), g["steps"]
        assert g["compare"]["pixel"]["env_steps"] == STEPS and g["probe"]
        for name in ("compare", "probe"):
            assert (out / g["links"][name]).is_file() and f"href='{g['links'][name]}'" in page
