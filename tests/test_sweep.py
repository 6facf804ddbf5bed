"""End-to-end tests of sweep.py: the real scripts on Breakout and Pong with tiny budgets, plus a game that
cannot exist (the extractor's own `unknown env id` error), an interruption mid-sweep and a resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, assert_clean_error, run_script

GOOD = ["BreakoutNoFrameskip-v4", "PongNoFrameskip-v4"]
BAD = "NoSuchGameNoFrameskip-v4"  # a well-formed id of a ROM ale-py does not ship: fails at the extractor
PROBE_TINY = ("--num-envs 2 --importance-steps 16 --rollout-steps 16 --num-base-states 8 --samples-per-var 2"
              " --torch-threads 1 --top-k 2 --control-draws 1 --causal-pairs 4 --random-directions 1 --batch-size 64")
TINY = [
    "--total-timesteps", "256", "--workers", "2",
    "--extract-args=--total-frames 1500 --n-bases 3 --long-horizon 0",
    "--train-args=--num-envs 2 --num-steps 32 --torch-threads 1",
    f"--probe-args={PROBE_TINY}",
]
ENV = {"CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}


def status(out, game):
    p = out / game / "status.json"
    return json.loads(p.read_text()) if p.exists() else {"steps": {}}


def step_state(out, game, step):
    return (status(out, game)["steps"].get(step) or {}).get("status")


def procs_under(folder):
    """PIDs of processes whose working directory is inside folder (the steps run in their game folder)."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "cwd").startswith(str(folder)):
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def test_sweep_interrupt_resume_and_failure(tmp_path):
    out = tmp_path / "sweep"
    args = ["--games", *GOOD, BAD, "--out-dir", out, *TINY]

    # 1. start the sweep, stop it (SIGTERM to its process group, as Slurm does) while Breakout's pixel agent trains
    env = dict(os.environ, **ENV)
    proc = subprocess.Popen([sys.executable, str(ROOT / "sweep.py"), *map(str, args)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while step_state(out, GOOD[0], "pixel") != "running":
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "Breakout's pixel step never started"
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout[-3000:], stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    assert step_state(out, GOOD[0], "extract") == "done" and step_state(out, GOOD[0], "ram") == "done"
    assert step_state(out, GOOD[0], "pixel") == "interrupted"
    assert "INTERRUPTED" in stdout
    assert not procs_under(tmp_path / "sweep"), "a step process outlived the stopped sweep"
    index = json.loads((out / "index.json").read_text())
    assert {g["env_id"]: g["status"] for g in index["games"]}[GOOD[0]] == "interrupted"

    # what must not run again
    st = status(out, GOOD[0])["steps"]
    ram_vars = out / GOOD[0] / st["extract"]["outputs"]["ram_vars"]
    ram_ckpt = out / GOOD[0] / st["ram"]["outputs"]["run_dir"] / "checkpoint.pt"
    mtimes = {p: p.stat().st_mtime_ns for p in (ram_vars, ram_ckpt)}

    # 2. re-run the same command: finished steps are skipped, the rest completes, the bad game is reported
    proc = run_script("sweep.py", *args, cwd=tmp_path, check=False, timeout=400)
    assert proc.returncode == 1, (proc.stdout[-3000:], proc.stderr[-3000:])  # 1: a game failed
    assert f"[1/3 {GOOD[0]}] extract: skip" in proc.stdout and f"[1/3 {GOOD[0]}] ram: skip" in proc.stdout
    assert f"[1/3 {GOOD[0]}] pixel: start" in proc.stdout
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items()), "a finished step was re-run"
    assert "skip" in (out / GOOD[0] / "logs" / "sweep.log").read_text()

    index = json.loads((out / "index.json").read_text())
    games = {g["env_id"]: g for g in index["games"]}
    assert list(games) == [*GOOD, BAD]
    page = (out / "index.html").read_text()
    for g in GOOD:
        e = games[g]
        assert e["status"] == "done", (g, e["status"], e["reason"], e["stderr_tail"])
        assert all(s["status"] == "done" and s["seconds"] > 0 for s in e["steps"].values()), e["steps"]
        # selected may exceed "changing": a latent byte never changed in play (extractor version 2)
        assert e["extract"]["selected"] > 0 and 0 < e["extract"]["changing"] <= 128
        assert sum(e["extract"]["excluded_by_reason"].values()) == 128 - e["extract"]["selected"]
        for agent in ("ram", "pixel"):  # (256 steps may end no Pong game: a final return may be None)
            assert e["compare"][agent]["env_steps"] == 256 and "final_return" in e["compare"][agent]
        assert e["probe"] and all("score" in v for v in e["probe"].values())
        for name in ("compare", "probe"):
            assert (out / e["links"][name]).is_file(), e["links"]
            assert f"href='{e['links'][name]}'" in page
    bad = games[BAD]
    assert bad["status"] == "failed" and bad["failed_step"] == "extract"
    assert "unknown env id" in bad["reason"].lower() and bad["stderr_tail"]
    assert BAD in page and "unknown env id" in page.lower()

    # 3. once more: nothing left to do for the good games; --index-only rebuilds the same index from disk
    proc = run_script("sweep.py", *args, cwd=tmp_path, check=False, timeout=200)
    assert proc.returncode == 1
    for g in GOOD:
        assert sum(f"{g}] {s}: skip" in proc.stdout for s in ("extract", "ram", "pixel", "compare", "probe")) == 5
        assert f"{g}] " in proc.stdout and f"{g}] extract: start" not in proc.stdout
    (out / "index.json").unlink()
    (out / "index.html").unlink()
    run_script("sweep.py", "--index-only", "--out-dir", out, cwd=tmp_path)
    rebuilt = json.loads((out / "index.json").read_text())
    assert {g["env_id"]: g["status"] for g in rebuilt["games"]} == {GOOD[0]: "done", GOOD[1]: "done", BAD: "failed"}
    assert (out / "index.html").is_file()


def test_extract_timeout_is_recorded(tmp_path):
    """--all-extract with a per-game timeout: a too slow extractor is stopped, named with the reason and the time."""
    out = tmp_path / "sweep"
    proc = run_script("sweep.py", "--all-extract", "--games", "PongNoFrameskip-v4", "--extract-timeout", "1",
                      "--out-dir", out, cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "extractor time per game" in proc.stdout and "PongNoFrameskip-v4" in proc.stdout
    e = json.loads((out / "index.json").read_text())["games"][0]
    assert e["status"] == "timeout" and e["steps"]["extract"]["status"] == "timeout"
    assert "timeout" in e["reason"] and 1 <= e["steps"]["extract"]["seconds"] < 30
    assert not procs_under(out)


def test_game_lists():
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    default = [l.split("\t")[1] for l in run_script("sweep.py", "--list-games").stdout.splitlines()]
    assert len(default) >= 20 and len(set(default)) == len(default)
    for g in ("Breakout", "Pong", "SpaceInvaders", "MsPacman", "Seaquest", "Freeway", "Boxing"):
        assert f"{g}NoFrameskip-v4" in default
    assert all(g in gym.registry for g in default)
    every = run_script("sweep.py", "--all-extract", "--list-games").stdout.splitlines()
    assert len(every) == len(ale_py.roms.get_all_rom_ids())
    one = run_script("sweep.py", "--list-games", "--games", "PongNoFrameskip-v4", "ALE/Breakout-v5").stdout
    assert one.splitlines() == ["0\tPongNoFrameskip-v4", "1\tALE/Breakout-v5"]


@pytest.mark.parametrize("bad_args, needle", [
    (["--workers", "0"], "--workers"),
    (["--steps", "extract", "train"], "unknown step"),
    (["--games", "PongNoFrameskip-v4", "--only-index", "3"], "out of range"),
    (["--games", "../../etc"], "bad env id"),
    (["--games", "PongNoFrameskip-v4", "PongNoFrameskip-v4"], "twice"),
    (["--extract-args=--total-frames '10"], "--extract-args"),
    (["--findings"], "--index-only"),
])
def test_bad_input(tmp_path, bad_args, needle):
    proc = run_script("sweep.py", *bad_args, "--out-dir", tmp_path / "s", cwd=tmp_path, check=False)
    assert_clean_error(proc, needle)
    assert proc.returncode == 2 and not (tmp_path / "s").exists()


def test_slurm_array_script_runs_one_game(tmp_path):
    """docs/sweep_slurm.sh as Slurm would start array task 1: the second game of the list, and only it."""
    env = dict(os.environ, **ENV, SLURM_ARRAY_TASK_ID="1", SLURM_SUBMIT_DIR=str(ROOT))
    cmd = ["bash", str(ROOT / "docs" / "sweep_slurm.sh"), "--games", *GOOD, "--dry-run", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"[1] {GOOD[1]}" in proc.stdout and GOOD[0] not in proc.stdout
    assert "python extract_ram_vars.py --env-id PongNoFrameskip-v4" in proc.stdout
    env.pop("SLURM_ARRAY_TASK_ID")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")


def test_game_held_by_another_sweep_is_left_alone(tmp_path):
    """Two sweeps on one folder (a local run and a Slurm task, a requeued task): a game runs in one only."""
    import fcntl

    out = tmp_path / "sweep"
    (out / "PongNoFrameskip-v4" / "logs").mkdir(parents=True)
    with open(out / "PongNoFrameskip-v4" / "logs" / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the other sweep's worker holds it
        proc = run_script("sweep.py", "--games", "PongNoFrameskip-v4", "--steps", "extract", "--out-dir", out,
                          cwd=tmp_path)
        assert "busy" in proc.stdout and "extract: start" not in proc.stdout
        assert not (out / "PongNoFrameskip-v4" / "ram_vars").exists()
        assert json.loads((out / "index.json").read_text())["games"][0]["status"] == "running"


def test_five_games_index(tmp_path):
    """docs/results/five_games/run_game.sh's stage `index` on a game folder made by the real scripts (tiny budgets),
    laid out as run_game.sh lays it out but outside the index folder, as Breakout's 10M pair is: status.json says each
    step is done from the files alone, and sweep.py --index-only shows the game with links that resolve and the
    evaluations' own figures; the other four games are "not started"; a missing output or an unfinished run is no
    longer "done"."""
    env_id = "BreakoutNoFrameskip-v4"
    index_dir, res = tmp_path / "results" / "five", tmp_path / "results" / "breakout_tiny"
    ram_vars = tmp_path / "ram_vars" / f"{env_id}.json"  # the shipped file, a copy (an extraction: about 20 s)
    ram_vars.parent.mkdir()
    ram_vars.write_bytes((ROOT / "ram_vars" / f"{env_id}.json").read_bytes())
    train = ["--env-id", env_id, "--total-timesteps", "256", "--num-envs", "2", "--num-steps", "32",
             "--torch-threads", "1"]
    run_script("ppo_ram_breakout.py", *train, "--ram-vars", ram_vars, "--runs-dir", res / "runs" / "memory",
               cwd=tmp_path)
    run_script("ppo_pixel_breakout.py", *train, "--runs-dir", res / "runs" / "pixel", cwd=tmp_path)
    (memory,), (pixel,) = [list((res / "runs" / a).iterdir()) for a in ("memory", "pixel")]
    evals = {("ram", "sampled"): ("ppo_ram_breakout.py", memory, res / "eval" / "memory_sampled.json"),
             ("pixel", "greedy"): ("ppo_pixel_breakout.py", pixel, res / "eval" / "pixel_greedy.json")}
    for (agent, mode), (script, run, out) in evals.items():
        run_script(script, "--eval-checkpoint", run / "checkpoint.pt", "--eval-episodes", "2",
                   "--eval-max-frames", "400", *(["--eval-greedy"] if mode == "greedy" else []), "--eval-out", out, cwd=tmp_path)
    run_script("compare_runs.py", res / "runs", "--out-dir", res / "compare", cwd=tmp_path)
    run_script("probe_function_vectors.py", "--pixel-checkpoint", pixel / "checkpoint.pt", "--ram-checkpoint",
               memory / "checkpoint.pt", "--ram-vars", ram_vars, "--out-dir", res / "probe", *PROBE_TINY.split(),
               "--no-report", cwd=tmp_path)  # no atlas: the index links the results themselves

    def index_stage():
        env = dict(os.environ, **ENV, STAGES="index", RESULTS_DIR=str(res), INDEX_DIR=str(index_dir),
                   RAM_VARS=str(ram_vars), PYTHON=sys.executable)
        proc = subprocess.run(["bash", str(ROOT / "docs" / "results" / "five_games" / "run_game.sh"), "Breakout"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
        assert not (res / "logs").exists(), "the index stage alone made folders in the results folder"
        index = json.loads((index_dir / "index.json").read_text())
        return index, {g["env_id"]: g for g in index["games"]}, (index_dir / "index.html").read_text()

    shorter = pixel.parent / f"{pixel.name}_shorter"  # a finished run of fewer steps, last in path order: not shown
    shorter.mkdir()
    (shorter / "run.json").write_text(json.dumps(dict(json.loads((pixel / "run.json").read_text()), global_step=128)))
    index, games, page = index_stage()
    st = json.loads((index_dir / "breakout" / "status.json").read_text())
    assert st["steps"]["pixel"]["outputs"]["run_dir"] == f"runs/pixel/{pixel.name}", st["steps"]["pixel"]
    assert st["env_id"] == env_id and st["folder"] == "../breakout_tiny"
    assert (index_dir / st["folder"] / st["ram_vars"]).resolve() == ram_vars.resolve()
    assert list(games) == [f"{g}NoFrameskip-v4" for g in ("Breakout", "Pong", "Freeway", "MsPacman", "SpaceInvaders")]
    assert all(g["status"] == "not started" and not g["links"] and g["eval"] is None for g in index["games"][1:])
    e = games[env_id]
    assert e["status"] == "done" and all(s["status"] == "done" for s in e["steps"].values()), e["steps"]
    assert e["folder"] == "../breakout_tiny" and index["counts"] == {"done": 1, "not started": 4}
    where = {"ram_vars": ram_vars, "compare": res / "compare" / "index.html",
             "probe results": res / "probe" / "results.json"}
    assert "probe" not in e["links"] and st["steps"]["probe"]["outputs"]["report"] is None  # (no report.html)
    for name, path in where.items():  # links relative to the index folder, reaching the files themselves
        assert (index_dir / e["links"][name]).resolve() == path.resolve() and path.is_file(), e["links"]
        assert f"href='{e['links'][name]}'" in page
    assert e["extract"]["selected"] == len(json.loads(ram_vars.read_text())["selected"])
    assert e["compare"]["ram"]["env_steps"] == 256 and e["compare"]["pixel"]["env_steps"] == 256
    assert e["probe"] and all("score" in v for v in e["probe"].values())
    assert set(e["eval"]) == {"ram", "pixel"} and set(e["eval"]["ram"]) == {"sampled"} \
        and set(e["eval"]["pixel"]) == {"greedy"}
    for (agent, mode), (_, _, out) in evals.items():
        ev, got = json.loads(out.read_text()), e["eval"][agent][mode]
        assert (got["mean"], got["std"], got["n"]) == (ev["mean"], ev["std"], ev["episodes"]) and got["n"] == 2
        assert (index_dir / got["href"]).resolve() == out.resolve() and f"href='{got['href']}'" in page
    assert "30-game eval" in page

    # the status follows the files: compare's summary gone and the pixel run unfinished -> neither is done any more
    (res / "compare" / "summary.json").unlink()
    (shorter / "run.json").unlink()
    meta = json.loads((pixel / "run.json").read_text())
    (pixel / "run.json").write_text(json.dumps(dict(meta, status="interrupted", global_step=128)))
    index, games, page = index_stage()
    e = games[env_id]
    assert e["status"] == "partial: extract, ram, probe", e["steps"]
    assert e["steps"]["pixel"]["status"] == "in progress" and e["steps"]["compare"]["status"] == "not run"
    assert "compare" not in e["links"] and e["compare"] is None and "probe results" in e["links"]


def test_findings_across_games(tmp_path):
    """sweep.py --index-only --findings on a game folder laid out as run_game.sh lays it out (the real scripts, tiny
    budgets, enough steps for finished games): the per-kind table adds up to the probe's variables and follows its
    verdicts, the common level is the lower final return less 10% and compare_runs.py measured both agents against
    it, and the aggregate is rliable's interquartile mean of the evaluation scores, normalised per game."""
    from scipy.stats import trim_mean

    env_id = "BreakoutNoFrameskip-v4"
    index_dir, res = tmp_path / "results" / "five", tmp_path / "results" / "breakout"
    ram_vars = tmp_path / "ram_vars" / f"{env_id}.json"
    ram_vars.parent.mkdir()
    ram_vars.write_bytes((ROOT / "ram_vars" / f"{env_id}.json").read_bytes())
    train = ["--env-id", env_id, "--total-timesteps", "2048", "--num-envs", "2", "--num-steps", "64",
             "--torch-threads", "1"]
    run_script("ppo_ram_breakout.py", *train, "--ram-vars", ram_vars, "--runs-dir", res / "runs" / "memory", cwd=tmp_path)
    run_script("ppo_pixel_breakout.py", *train, "--runs-dir", res / "runs" / "pixel", cwd=tmp_path)
    (memory,), (pixel,) = [list((res / "runs" / a).iterdir()) for a in ("memory", "pixel")]
    for script, run, name in (("ppo_ram_breakout.py", memory, "memory"), ("ppo_pixel_breakout.py", pixel, "pixel")):
        run_script(script, "--eval-checkpoint", run / "checkpoint.pt", "--eval-episodes", "3", "--eval-max-frames",
                   "2000", "--eval-out", res / "eval" / f"{name}_sampled.json", cwd=tmp_path)
    run_script("compare_runs.py", res / "runs", "--out-dir", res / "compare", cwd=tmp_path)
    run_script("probe_function_vectors.py", "--pixel-checkpoint", pixel / "checkpoint.pt", "--ram-checkpoint",
               memory / "checkpoint.pt", "--ram-vars", ram_vars, "--out-dir", res / "probe", *PROBE_TINY.split(),
               "--no-report", cwd=tmp_path)
    env = dict(os.environ, **ENV, STAGES="index", RESULTS_DIR=str(res), INDEX_DIR=str(index_dir),
               RAM_VARS=str(ram_vars), PYTHON=sys.executable)
    subprocess.run(["bash", str(ROOT / "docs" / "results" / "five_games" / "run_game.sh"), "Breakout"], env=env,
                   check=True, capture_output=True, timeout=300)
    proc = run_script("sweep.py", "--index-only", "--out-dir", index_dir, "--findings", "--games", env_id,
                      "PongNoFrameskip-v4", cwd=tmp_path)
    assert "findings over 1 games (Breakout)" in proc.stdout, proc.stdout[-2000:]
    found = json.loads((index_dir / "findings.json").read_text())
    (g,) = found["games"]
    assert g["env_id"] == env_id and found["not_yet"] == ["PongNoFrameskip-v4"]

    # the per-kind table: every probed variable once, and the counts are the probe's own verdicts
    results = json.loads((res / "probe" / "results.json").read_text())
    assert sum(k["n"] for k in g["kinds"].values()) == len(results["variables"])
    assert sorted(n for k in g["kinds"].values() for n in k["variables"]) == sorted(v["name"] for v in results["variables"])
    by_name = {v["name"]: v for v in results["variables"]}
    for kind in g["kinds"].values():
        vs = [by_name[n] for n in kind["variables"]]
        nat = [any(d["decodable"] for d in v["verdict"]["natural"].values()) for v in vs if v["verdict"].get("natural")]
        itv = [any(d["decodable"] for d in v["verdict"]["interventions"].values()) for v in vs
               if v["verdict"].get("interventions")]
        steer = [v["verdict"]["steering"]["relu_fc"]["steers"] == "with" for v in vs
                 if (v["verdict"].get("steering") or {}).get("relu_fc")]
        assert kind["natural"] == [sum(nat), len(nat)] and kind["interventions"] == [sum(itv), len(itv)]
        assert kind["steering"] == [sum(steer), len(steer)]

    # the common level, and both agents measured against it by compare_runs.py
    summ = json.loads((res / "compare" / "summary.json").read_text())
    finals = {x["agent"]: x["final_return"]["mean"] for x in summ["groups"]}
    low = min(finals.values())
    c = g["common_level"]
    assert c["level"] == round(low - 0.1 * abs(low), 3), (c, finals)
    common = json.loads((res / "compare_common_level" / "summary.json").read_text())
    assert common["args"]["threshold"] == c["level"]
    got = {x["agent"]: x["steps_to_converge"]["mean"] for x in common["groups"]}
    assert got == {"ram": c["ram"]["steps"], "pixel": c["pixel"]["steps"]}

    # scores: the evaluations' own; normalised by one increasing affine map; rliable's IQM is the 25% trimmed mean
    for agent, name in (("ram", "memory"), ("pixel", "pixel")):
        ev = json.loads((res / "eval" / f"{name}_sampled.json").read_text())
        assert g["eval"][agent]["mean"] == ev["mean"] and g["eval"][agent]["n"] == 3
        x, y = np.array(ev["returns"], float), np.array(g["normalised"][agent])
        a, b = np.polyfit(x, y, 1) if np.ptp(x) else (None, None)
        assert a is None or (a > 0 and np.allclose(a * x + b, y))
        agg = found["aggregate"]["memory" if agent == "ram" else "pixel"]
        assert agg["iqm"] == pytest.approx(trim_mean(y, 0.25))
        assert agg["iqm_ci95"][0] <= agg["iqm"] + 1e-9 and agg["iqm"] <= agg["iqm_ci95"][1] + 1e-9
    md = (index_dir / "findings.md").read_text()
    assert "| Breakout |" in md and "rliable" in md and "not yet" in md.lower()
    for png in ("findings.png", "findings_scores.png"):
        assert (index_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
