"""compare_runs.py on synthetic run folders with known curves.

Each synthetic seed logs CleanRL's tags with torch's SummaryWriter. The episodic return ramps linearly from 0
to a plateau P, reached at env step E, then stays at P; an episode ends every EP_EVERY steps. So with
--smooth 1 the final return is exactly P and the 90% target 0.9 P is first reached at the first episode
step >= 0.9 E. Wall time is synthetic too (walltime = writer start + step * seconds_per_step).

  ram:   P = 10 (+-0.2 over seeds), E = 1800/2000/2200, 8000 steps, 0.01 s/step   (100 SPS)
  pixel: P = 20 (+-0.5 over seeds), E = 5800/6000/6200, 10000 steps, 0.001 s/step (1000 SPS)
=> ram converges faster in env steps, pixel faster in wall time, pixel has the higher final return.
"""
import base64
import json
import math
import re
import time
from unittest import mock

import cv2
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from conftest import assert_clean_error, run_script

EP_EVERY = 50
ITER = 512
T975_DF2 = 4.302653  # Student t 0.975 quantile, 2 degrees of freedom (3 seeds)
RAM = {"plateau": [9.8, 10.0, 10.2], "ramp_end": [1800, 2000, 2200], "total": 8000, "spp": 0.01}
PIXEL = {"plateau": [19.5, 20.0, 20.5], "ramp_end": [5800, 6000, 6200], "total": 10000, "spp": 0.001}
PNGS = ["return_vs_steps.png", "return_vs_wallclock.png", "losses.png", "sps.png"]


def ret_at(step, plateau, ramp_end):
    return plateau * min(1.0, step / ramp_end)


def write_events(folder, first_step, total, spp, plateau, ramp_end, episodes=True, start=None):
    """One writer session logging steps first_step..total in CleanRL's order; returns the session's duration.

    start: the session's start time (its file_version event), default now. A session with first_step > 0 is a
    resume and purges later steps like the training scripts do (SummaryWriter(purge_step=checkpoint step))."""
    t0 = time.time() if start is None else start
    with mock.patch("time.time", lambda: t0):  # the writer stamps its first events with time.time()
        w = SummaryWriter(str(folder), purge_step=first_step or None)
    for step in range(first_step, total + 1, EP_EVERY):
        if episodes and step > first_step:
            w.add_scalar("charts/episodic_return", ret_at(step, plateau, ramp_end), step, walltime=t0 + (step - first_step) * spp)
            w.add_scalar("charts/episodic_length", 100 + step / 100, step, walltime=t0 + (step - first_step) * spp)
        if step % ITER < EP_EVERY and step > first_step:
            wt = t0 + (step - first_step) * spp
            w.add_scalar("charts/learning_rate", 2.5e-4 * (1 - step / total), step, walltime=wt)
            w.add_scalar("losses/value_loss", 1.0 / (1 + step / 1000), step, walltime=wt)
            w.add_scalar("losses/policy_loss", -0.01 * math.sin(step / 700), step, walltime=wt)
            w.add_scalar("losses/entropy", 1.4 - step / total, step, walltime=wt)
            w.add_scalar("losses/old_approx_kl", 0.01, step, walltime=wt)
            w.add_scalar("losses/approx_kl", 0.01 + 0.005 * math.cos(step / 500), step, walltime=wt)
            w.add_scalar("losses/clipfrac", 0.1, step, walltime=wt)
            ev = float("nan") if step < ITER + EP_EVERY else min(0.9, step / total)  # CleanRL logs NaN early
            w.add_scalar("losses/explained_variance", ev, step, walltime=wt)
            w.add_scalar("charts/SPS", 1.0 / spp, step, walltime=wt)
    w.close()
    return (total - first_step) * spp


def make_run(root, agent, env_id, seed, spec, i, run_json=True, exp_name=None, episodes=True, status="finished",
             env_settings=None):
    """A synthetic run folder; env_settings (run.json's, as the agents write it since they record it) when given."""
    name = f"{env_id.replace('/', '_')}__{exp_name or f'ppo_{agent}_breakout'}__{seed}__{1700000000 + seed}"
    folder = root / name
    folder.mkdir(parents=True)
    write_events(folder, 0, spec["total"], spec["spp"], spec["plateau"][i], spec["ramp_end"][i], episodes)
    if run_json:
        meta = {"format": "memory-pixel-interp/run", "version": 1, "agent": agent, "env_id": env_id, "seed": seed,
                "run_name": name, "args": {}, "device": "cpu", "machine": "test", "status": status,
                "global_step": spec["total"], "wall_seconds": spec["total"] * spec["spp"], "ram_vars": None}
        if env_settings is not None:
            meta["env_settings"] = env_settings
        (folder / "run.json").write_text(json.dumps(meta))
    return folder


def expected_converge(spec, frac=0.9, threshold=None):
    """First episode step at which the (unsmoothed) return reaches the target, per seed (None: never)."""
    out = []
    for p, e in zip(spec["plateau"], spec["ramp_end"]):
        target = threshold if threshold is not None else frac * p
        steps = [s for s in range(EP_EVERY, spec["total"] + 1, EP_EVERY) if ret_at(s, p, e) >= target - 1e-9]
        out.append(steps[0] if steps else None)
    return out


def ci(values):
    v = np.asarray(values, dtype=float)
    return v.mean(), T975_DF2 * v.std(ddof=1) / math.sqrt(len(v))


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for i, seed in enumerate([1, 2, 3]):
        make_run(root, "ram", "BreakoutNoFrameskip-v4", seed, RAM, i)
        make_run(root, "pixel", "BreakoutNoFrameskip-v4", seed, PIXEL, i)
    return root


@pytest.fixture(scope="module")
def compared(runs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "compare"
    proc = run_script("compare_runs.py", runs_root, "--out-dir", out, "--smooth", "1", "--final-episodes", "20")
    return proc, out, json.loads((out / "summary.json").read_text())


def group(summary, agent):
    (g,) = [g for g in summary["groups"] if g["agent"] == agent]
    return g


def test_reads_all_runs_and_prints_them(compared):
    proc, _, summary = compared
    assert "read 6 run(s)" in proc.stdout
    assert re.search(r"ram / BreakoutNoFrameskip-v4: 3 seed\(s\) \[1, 2, 3\], env steps 8,000", proc.stdout), proc.stdout
    assert re.search(r"pixel / BreakoutNoFrameskip-v4: 3 seed\(s\) \[1, 2, 3\], env steps 10,000", proc.stdout)
    assert len(summary["runs"]) == 6
    assert {(g["agent"], g["n_seeds"]) for g in summary["groups"]} == {("ram", 3), ("pixel", 3)}


@pytest.mark.parametrize("agent,spec", [("ram", RAM), ("pixel", PIXEL)])
def test_final_return_and_convergence_numbers(compared, agent, spec):
    _, _, summary = compared
    g = group(summary, agent)
    assert g["env_steps"]["max"] == spec["total"]
    assert g["episodes"] == 3 * spec["total"] // EP_EVERY
    m, h = ci(spec["plateau"])  # the last 20 episodes are all on the plateau
    assert g["final_return"]["mean"] == pytest.approx(m, abs=1e-5)
    assert g["final_return"]["ci95"] == pytest.approx(h, rel=1e-4)
    conv = expected_converge(spec)
    m, h = ci(conv)
    assert g["steps_to_converge"]["mean"] == pytest.approx(m)
    assert g["steps_to_converge"]["ci95"] == pytest.approx(h, rel=1e-4)
    assert g["steps_to_converge"]["n_reached"] == 3
    # wall time: steps * seconds-per-step since the writer's first event
    assert g["seconds_to_converge"]["mean"] == pytest.approx(np.mean(conv) * spec["spp"], abs=1e-3)
    assert g["sps"]["mean"] == pytest.approx(1 / spec["spp"])
    per_run = sorted(r["steps_to_converge"] for r in summary["runs"] if r["agent"] == agent)
    assert per_run == sorted(conv)


def test_answer_names_the_winners(compared):
    _, _, summary = compared
    (c,) = summary["comparisons"]
    assert c["steps"]["verdict"] == "ram"
    assert c["wall_clock"]["verdict"] == "pixel"
    assert c["final_return"]["verdict"] == "pixel"
    assert any("differ in length" in cv for cv in c["caveats"])  # 8k vs 10k steps
    assert any("OWN final return" in cv for cv in c["caveats"])
    text = " ".join(summary["answer"])
    assert "ram converges faster in env steps" in text
    assert "pixel converges faster in wall-clock time" in text
    assert "pixel reaches the higher final return" in text


def test_summary_md_table(compared):
    _, out, _ = compared
    md = (out / "summary.md").read_text()
    rows = [l for l in md.splitlines() if l.startswith("| ram | BreakoutNoFrameskip-v4")]
    assert len(rows) == 1, md
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[2] == "3" and cells[3] == "8.00k" and cells[4] == "480"
    assert cells[5].startswith("10.00 ± ")
    assert cells[6].startswith("1.82k ± ")  # mean of 1650, 1800, 2000 and "3/3 reached" in cells[6]
    assert "ram converges faster in env steps" in md
    for png in PNGS:
        assert f"]({png})" in md


def test_pngs_are_images_and_html_inlines_them(compared):
    _, out, _ = compared
    page = (out / "index.html").read_text()
    inlined = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(inlined) == len(PNGS)
    for png in PNGS:
        data = (out / png).read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 300 and img.shape[1] > 600, png
        assert img.std() > 10, f"{png} looks blank"
        assert base64.b64encode(data).decode() in inlined, f"{png} not inlined in index.html"
    assert "<table>" in page and "ram converges faster in env steps" in page
    assert not list(out.glob("*.tmp-*"))


def test_threshold_changes_the_target(runs_root, tmp_path):
    out = tmp_path / "thr"
    run_script("compare_runs.py", runs_root, "--out-dir", out, "--smooth", "1", "--threshold", "15")
    summary = json.loads((out / "summary.json").read_text())
    ram, pixel = group(summary, "ram"), group(summary, "pixel")
    assert ram["steps_to_converge"]["n_reached"] == 0 and ram["steps_to_converge"]["mean"] is None
    assert pixel["steps_to_converge"]["mean"] == pytest.approx(np.mean(expected_converge(PIXEL, threshold=15)))
    (c,) = summary["comparisons"]
    assert c["steps"]["verdict"] == "pixel"  # ram never gets to 15 in its 8000 steps, pixel did by ~4500
    assert not any("OWN final return" in cv for cv in c["caveats"])
    assert "not reached (0/3)" in (out / "summary.md").read_text()


def test_smoothing_delays_convergence(runs_root, tmp_path):
    out = tmp_path / "smooth"
    run_script("compare_runs.py", runs_root, "--out-dir", out, "--smooth", "10", "--final-episodes", "20")
    g = group(json.loads((out / "summary.json").read_text()), "ram")
    # a trailing mean of 10 episodes of a linear ramp lags it by 4.5 episodes (225 steps)
    lag = 4.5 * EP_EVERY
    assert g["steps_to_converge"]["mean"] == pytest.approx(np.mean(expected_converge(RAM)) + lag, abs=EP_EVERY)


def test_single_run_has_no_ci(runs_root, tmp_path):
    (one,) = [p for p in runs_root.iterdir() if "ppo_ram" in p.name and "__1__" in p.name]
    out = tmp_path / "one"
    proc = run_script("compare_runs.py", one, "--out-dir", out)
    summary = json.loads((out / "summary.json").read_text())
    (g,) = summary["groups"]
    assert g["n_seeds"] == 1 and g["final_return"]["ci95"] is None
    assert summary["comparisons"] == []
    assert "nothing to compare" in summary["answer"][0]
    assert "CI n/a, 1 seed" in (out / "summary.md").read_text()
    assert "read 1 run(s)" in proc.stdout


def test_one_seed_each_is_inconclusive(runs_root, tmp_path):
    ram1, pix1 = [next(p for p in runs_root.iterdir() if f"ppo_{a}" in p.name and "__1__" in p.name)
                  for a in ("ram", "pixel")]
    out = tmp_path / "pair"
    run_script("compare_runs.py", ram1, pix1, "--out-dir", out, "--smooth", "1")
    (c,) = json.loads((out / "summary.json").read_text())["comparisons"]
    for k in ("steps", "wall_clock", "final_return"):
        assert c[k]["verdict"] == "inconclusive", c[k]
        assert "1 seed" in c[k]["text"]


def test_no_episodes_other_env_no_run_json_and_resumed_run(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "ram", "PongNoFrameskip-v4", 1, RAM, 0, episodes=False, status="running")
    make_run(root, "pixel", "BreakoutNoFrameskip-v4", 7, PIXEL, 1, run_json=False)
    # a resumed run: session 1 logs 0..1500, session 2 restarts from a checkpoint at 1000 and goes to 3000
    resumed = root / "BreakoutNoFrameskip-v4__ppo_ram_breakout__4__1700000004"
    resumed.mkdir()
    t_start = time.time() - 7200
    d1 = write_events(resumed, 0, 1500, 0.01, 10.0, 2000, start=t_start)
    d2 = write_events(resumed, 1000, 3000, 0.01, 10.0, 2000, start=t_start + 3600)  # resumed an hour later
    (resumed / "run.json").write_text(json.dumps({"agent": "ram", "env_id": "BreakoutNoFrameskip-v4", "seed": 4,
                                                  "status": "finished"}))
    out = tmp_path / "out"
    proc = run_script("compare_runs.py", root, "--out-dir", out, "--smooth", "1", "--final-episodes", "20")
    summary = json.loads((out / "summary.json").read_text())
    assert {(g["agent"], g["env_id"]) for g in summary["groups"]} == {
        ("ram", "PongNoFrameskip-v4"), ("ppo_pixel_breakout", "BreakoutNoFrameskip-v4"), ("ram", "BreakoutNoFrameskip-v4")}
    assert "warning: the runs cover 2 env ids" in proc.stderr
    assert "no run.json" in proc.stderr
    pong = next(g for g in summary["groups"] if g["env_id"].startswith("Pong"))
    assert pong["n_with_episodes"] == 0 and pong["final_return"]["mean"] is None
    # its last event is the last loss update, not the end of the (never logged) episodes
    assert pong["env_steps"]["max"] == max(s for s in range(EP_EVERY, RAM["total"] + 1, EP_EVERY) if s % ITER < EP_EVERY)
    md = (out / "summary.md").read_text()
    assert re.search(r"\| ram \| PongNoFrameskip-v4 \| 1 \(1 without episodes\) \|[^\n]*no episodes yet", md), md
    (r,) = [r for r in summary["runs"] if r["seed"] == 4]
    assert r["event_files"] == 2 and r["env_steps"] == 3000
    # purge_step=1000 drops session 1's events from step 1000 on (as TensorBoard shows it): 19 + 40 episodes
    assert r["episodes"] == (1000 - EP_EVERY) // EP_EVERY + (3000 - 1000) // EP_EVERY
    # wall time leaves out the hour between the sessions and session 1's time after its last kept event (950)
    kept1 = 950 * 0.01
    assert d1 == pytest.approx(15.0) and d2 == pytest.approx(20.0)
    assert r["wall_seconds"] == pytest.approx(kept1 + d2, abs=1e-3)
    # 90% of 10 = 9 is reached at step 1800, in session 2: 9.5 s of session 1 + 8 s of session 2
    assert r["steps_to_converge"] == 1800
    assert r["seconds_to_converge"] == pytest.approx(kept1 + (1800 - 1000) * 0.01, abs=1e-3)
    (c,) = summary["comparisons"]  # only Breakout has two groups
    assert c["env_id"] == "BreakoutNoFrameskip-v4"
    # without run.json "sessions", its pieces are read off the event files: one per file, the machine unknown
    p1, p2 = r["pieces"]
    assert p1["start_step"] == 0 and p1["end_step"] < 1000 and p2["end_step"] == 3000   # session 1 purged from 1000
    assert p1["wall_seconds"] == pytest.approx(kept1, abs=0.1) and p2["wall_seconds"] == pytest.approx(d2, abs=0.1)
    assert p1["machine"] is None and p2["start_step"] == p1["end_step"]
    assert re.search(r"\| 2 \| [\d,]+ → 3,000 \| [^|]+ \| \d+ \| not recorded \(read off the event files\) \|", md), md


def test_pieces_come_from_run_json_sessions(tmp_path):
    """A run trained in two pieces on two machines: the pieces table gives each one's steps, wall time, SPS (steps /
    wall) and machine, from run.json "sessions" (what the training scripts write)."""
    run = tmp_path / "runs" / "BreakoutNoFrameskip-v4__ppo_pixel_breakout__1__1700000001"
    run.mkdir(parents=True)
    write_events(run, 0, 3000, 0.01, 10.0, 2000, start=time.time() - 600)
    sessions = [{"start_step": 0, "end_step": 1000, "wall_seconds": 4.0, "machine": "box A", "precision": "bf16",
                 "torch_threads": 2, "env_threads": 2},
                {"start_step": 1000, "end_step": 3000, "wall_seconds": 16.0, "machine": "box B", "precision": "fp32",
                 "torch_threads": 1}]
    (run / "run.json").write_text(json.dumps({"agent": "pixel", "env_id": "BreakoutNoFrameskip-v4", "seed": 1,
                                              "status": "finished", "sessions": sessions}))
    out = tmp_path / "out"
    run_script("compare_runs.py", run, "--out-dir", out, "--smooth", "1")
    (r,) = json.loads((out / "summary.json").read_text())["runs"]
    assert [(p["start_step"], p["end_step"], p["machine"]) for p in r["pieces"]] == [(0, 1000, "box A"), (1000, 3000, "box B")]
    assert [p["sps"] for p in r["pieces"]] == [250.0, 125.0]
    md = (out / "summary.md").read_text()
    assert "| 1 | 0 → 1,000 | 4.0 s | 250 | box A | bf16, 2 torch threads, 2 env threads |" in md
    assert "| 2 | 1,000 → 3,000 | 16.0 s | 125 | box B | fp32, 1 torch thread |" in md
    assert "box B" in (out / "index.html").read_text()
    # sessions that do not cover the run from step 0 (a resume of a checkpoint that had none) are not trusted
    sessions[0]["start_step"] = 500
    (run / "run.json").write_text(json.dumps({"agent": "pixel", "env_id": "BreakoutNoFrameskip-v4", "seed": 1,
                                              "status": "finished", "sessions": sessions}))
    run_script("compare_runs.py", run, "--out-dir", out, "--smooth", "1")
    (r,) = json.loads((out / "summary.json").read_text())["runs"]
    assert [(p["start_step"], p["end_step"], p["source"]) for p in r["pieces"]] == [(0, 3000, "event files")]


def test_fewer_episodes_than_smooth_is_not_reached(tmp_path):
    """3 episodes at a constant return and --smooth 20: no trailing mean of 20 exists, so no convergence is
    claimed (the old code called it reached at the 3rd episode), and every figure from too little data says so."""
    root = tmp_path / "runs"
    few = {"plateau": [10.0] * 3, "ramp_end": [1] * 3, "total": 3 * EP_EVERY, "spp": 0.01}  # 3 episodes, return 10
    for i, seed in enumerate([1, 2, 3]):
        make_run(root, "ram", "BreakoutNoFrameskip-v4", seed, few, i)
        make_run(root, "pixel", "BreakoutNoFrameskip-v4", seed, PIXEL, i)
    out = tmp_path / "out"
    run_script("compare_runs.py", root, "--out-dir", out)  # defaults: --smooth 20, --final-episodes 100
    summary = json.loads((out / "summary.json").read_text())
    for r in summary["runs"]:
        if r["agent"] == "ram":
            assert r["episodes"] == 3 and r["too_few_episodes"] is True and r["final_return_episodes"] == 3
            assert r["steps_to_converge"] is None and r["seconds_to_converge"] is None
    ram = group(summary, "ram")
    assert ram["steps_to_converge"]["n_reached"] == 0 and ram["steps_to_converge"]["n_too_few"] == 3
    assert ram["final_return"]["n_short"] == 3
    (c,) = summary["comparisons"]
    for k in ("steps", "wall_clock"):
        assert c[k]["verdict"] == "inconclusive" and "fewer than --smooth 20 episodes" in c[k]["text"], c[k]
    assert any("fewer than --final-episodes 100 episodes in 3/3 seed(s)" in cv for cv in c["caveats"]), c["caveats"]
    md = (out / "summary.md").read_text()
    assert "not reached (0/3; 3 with fewer than 20 episodes)" in md, md
    assert "3/3 seed(s) averaged fewer than 100 episodes" in md
    assert "not reached (too few episodes: 3 < --smooth 20)" in md
    assert "(mean of 3 < 100 episodes)" in md
    # pixel's seeds have 200 episodes: reached, and its final return is a full 100-episode mean
    pixel = group(summary, "pixel")
    assert pixel["steps_to_converge"]["n_reached"] == 3 and pixel["final_return"]["n_short"] == 0


SETTINGS = {"repeat_action_probability": 0.0, "frameskip": 4, "max_num_frames_per_episode": 108000, "noop_max": 30,
            "full_action_space": False}


def test_seeds_with_other_env_settings_are_not_pooled(tmp_path):
    root = tmp_path / "runs"
    sticky = dict(SETTINGS, repeat_action_probability=0.25)
    make_run(root, "ram", "BreakoutNoFrameskip-v4", 1, RAM, 0, env_settings=SETTINGS)
    make_run(root, "ram", "BreakoutNoFrameskip-v4", 2, RAM, 1, env_settings=SETTINGS)
    make_run(root, "ram", "BreakoutNoFrameskip-v4", 3, RAM, 2, env_settings=sticky)
    for i, seed in enumerate([1, 2, 3]):
        make_run(root, "pixel", "BreakoutNoFrameskip-v4", seed, PIXEL, i, env_settings=SETTINGS)
    make_run(root, "pixel", "BreakoutNoFrameskip-v4", 4, PIXEL, 0)  # an older run.json, without env_settings
    out = tmp_path / "out"
    proc = run_script("compare_runs.py", root, "--out-dir", out, "--smooth", "1", "--final-episodes", "20")
    summary = json.loads((out / "summary.json").read_text())
    got = {(g["agent"], g["variant"]): g["seeds"] for g in summary["groups"]}
    assert got == {("ram", "repeat_action_probability=0.0"): [1, 2], ("ram", "repeat_action_probability=0.25"): [3],
                   ("pixel", "repeat_action_probability=0.0"): [1, 2, 3],
                   ("pixel", "env settings not recorded"): [4]}, got
    assert "differ in env settings" in proc.stderr and "without env_settings" in proc.stderr
    # only the two groups with the same settings are compared; the others are named alone
    (c,) = summary["comparisons"]
    assert c["groups"] == ["ram", "pixel"] and c["env_settings"] == SETTINGS
    assert c["arena"] == "BreakoutNoFrameskip-v4 [repeat_action_probability=0.0]"
    assert sum("only one agent" in line for line in summary["answer"]) == 2
    assert "ram [repeat_action_probability=0.25]" in (out / "summary.md").read_text()


def test_split_by_a_run_json_key_and_max_steps(tmp_path):
    """--split-by runtime.precision keeps two pixel runs of one seed apart (a precision parity check), and
    --max-steps reads the longer one only up to the shorter one's length: its steps, final return and convergence
    are those of the truncated curve."""
    root = tmp_path / "runs"
    long_spec = dict(PIXEL, total=20000)
    a = make_run(root, "pixel", "BreakoutNoFrameskip-v4", 1, long_spec, 0, exp_name="ppo_pixel_bf16")
    b = make_run(root, "pixel", "BreakoutNoFrameskip-v4", 1, PIXEL, 1, exp_name="ppo_pixel_fp32")
    for folder, precision in ((a, "bf16"), (b, "fp32")):
        meta = json.loads((folder / "run.json").read_text())
        meta["runtime"] = {"precision": precision, "torch_threads": 1}
        (folder / "run.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    run_script("compare_runs.py", root, "--out-dir", out, "--smooth", "1", "--final-episodes", "20",
               "--split-by", "runtime.precision", "--max-steps", "10000")
    summary = json.loads((out / "summary.json").read_text())
    groups = {g["agent"]: g for g in summary["groups"]}
    assert set(groups) == {"pixel (precision=bf16)", "pixel (precision=fp32)"}, set(groups)
    bf16 = groups["pixel (precision=bf16)"]
    assert bf16["env_steps"]["max"] == 10000  # not 20000
    # the truncated bf16 curve: plateau 19.5 reached at 5800, so its last 20 episodes (steps 9050..10000) are 19.5
    assert bf16["final_return"]["mean"] == pytest.approx(PIXEL["plateau"][0])
    assert bf16["steps_to_converge"]["mean"] == expected_converge(PIXEL)[0]
    (c,) = summary["comparisons"]
    assert sorted(c["groups"]) == sorted(groups)
    # without --split-by both runs are one group of seed 1 (named twice: a warning)
    proc = run_script("compare_runs.py", root, "--out-dir", tmp_path / "out2", "--smooth", "1")
    assert "the same seed appears more than once" in proc.stderr


def test_same_env_settings_or_none_recorded_pool_as_before(runs_root, tmp_path):
    """Old run.json files (no env_settings) still pool, and equal settings pool without a variant or warning."""
    root = tmp_path / "runs"
    for i, seed in enumerate([1, 2]):
        make_run(root, "ram", "BreakoutNoFrameskip-v4", seed, RAM, i, env_settings=SETTINGS)
        make_run(root, "pixel", "BreakoutNoFrameskip-v4", seed, PIXEL, i, env_settings=dict(reversed(SETTINGS.items())))
    for folder, expect_settings in ((root, SETTINGS), (runs_root, None)):
        out = tmp_path / f"out{expect_settings is None}"
        proc = run_script("compare_runs.py", folder, "--out-dir", out, "--smooth", "1", "--final-episodes", "20")
        summary = json.loads((out / "summary.json").read_text())
        assert [g["variant"] for g in summary["groups"]] == ["", ""]
        assert all(g["env_settings"] == expect_settings for g in summary["groups"])
        assert "env settings" not in proc.stderr
        (c,) = summary["comparisons"]
        assert c["arena"] == "BreakoutNoFrameskip-v4"


def test_bad_input_is_one_clean_line_and_keeps_old_outputs(runs_root, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = out / "summary.md"
    old.write_text("# an older summary\n")
    before = old.read_bytes()

    proc = run_script("compare_runs.py", tmp_path / "nope", "--out-dir", out, check=False)
    assert_clean_error(proc, "does not exist")
    assert proc.returncode == 2

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "run.json").write_text("{}")
    proc = run_script("compare_runs.py", runs_root, empty, "--out-dir", out, check=False)
    assert_clean_error(proc, "no TensorBoard event files")
    assert proc.returncode == 2

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for bad_out in (blocker, blocker / "compare"):  # the out folder is a file, or below one
        proc = run_script("compare_runs.py", runs_root, "--out-dir", bad_out, check=False)
        assert_clean_error(proc, "output folder")
        assert proc.returncode == 2
    assert blocker.read_text() == "not a folder"

    proc = run_script("compare_runs.py", runs_root, "--out-dir", out, "--smooth", "0", check=False)
    assert_clean_error(proc, "--smooth")
    proc = run_script("compare_runs.py", runs_root, "--out-dir", out, "--threshold", "abc", check=False)
    assert_clean_error(proc, "--threshold")  # tyro's boxed message, folded into one line
    assert proc.returncode == 2
    proc = run_script("compare_runs.py", "--out-dir", out, check=False)
    assert_clean_error(proc, "at least one run folder")

    (out / "index.html").mkdir()  # an output name taken by a folder: found before anything is replaced
    proc = run_script("compare_runs.py", runs_root, "--out-dir", out, check=False)
    assert_clean_error(proc, "cannot write the output folder", "index.html")

    assert old.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "summary.md"]  # no new PNGs, no temp files
