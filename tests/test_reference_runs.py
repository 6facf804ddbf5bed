"""docs/reference_runs.sh: trains both agents, evaluates them, compares; re-running skips finished runs, and a
run stopped by its time limit (SIGTERM -> checkpoint) is continued with --resume by the next call."""
import json
import os
import subprocess
from pathlib import Path

import torch

from conftest import ROOT

TINY = "--num-envs 2 --num-steps 32 --torch-threads 1"


def reference(tmp_path, **settings):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               RUNS=str(tmp_path / "runs"), OUT=str(tmp_path / "compare"), EVAL="1", EXTRA=TINY,
               **{k: str(v) for k, v in settings.items()})
    return subprocess.run(["bash", str(ROOT / "docs" / "reference_runs.sh")], env=env, capture_output=True,
                          text=True, timeout=600)


def run_dirs(tmp_path, agent):
    return sorted((tmp_path / "runs" / agent).glob(f"BreakoutNoFrameskip-v4__ppo_{agent}_breakout__*"))


def test_trains_evaluates_and_compares_both_agents_then_skips_them(tmp_path):
    proc = reference(tmp_path, SEEDS="1", STEPS=128)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for agent in ("pixel", "ram"):
        (run_dir,) = run_dirs(tmp_path, agent)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
        assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 1
    summary = json.loads((tmp_path / "compare" / "summary.json").read_text())
    assert sorted((g["agent"], g["n_seeds"], g["env_steps"]["max"]) for g in summary["groups"]) == [
        ("pixel", 1, 128), ("ram", 1, 128)]
    assert (tmp_path / "compare" / "return_vs_steps.png").stat().st_size > 1000

    again = reference(tmp_path, SEEDS="1", STEPS=128)
    assert again.returncode == 0 and again.stdout.count("finished already") == 2, again.stdout[-3000:]
    assert len(run_dirs(tmp_path, "pixel")) == len(run_dirs(tmp_path, "ram")) == 1


def test_a_time_limited_run_is_resumed_by_the_next_call(tmp_path):
    first = reference(tmp_path, SEEDS="3", AGENTS="ram", STEPS=10_000_000, MINUTES=0.25)
    assert first.returncode == 1 and "not finished (exit 130)" in first.stdout, first.stdout[-3000:] + first.stderr[-2000:]
    (run_dir,) = run_dirs(tmp_path, "ram")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    step1 = torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"]
    assert step1 > 0

    second = reference(tmp_path, SEEDS="3", AGENTS="ram", STEPS=10_000_000, MINUTES=0.25)
    assert second.returncode == 1 and f"resuming {run_dir}" in second.stdout, second.stdout[-3000:]
    assert run_dirs(tmp_path, "ram") == [run_dir]  # the same run folder, continued
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] > step1
