"""The research pipeline end to end, chained only through the files the scripts write:
extract_ram_vars.py -> ppo_ram_breakout.py -> ppo_pixel_breakout.py -> compare_runs.py."""
import json

from conftest import run_script

ENV = "BreakoutNoFrameskip-v4"
# enough steps that a few (random-policy) Breakout games end and are logged
TRAIN = ("--num-envs", "2", "--num-steps", "64", "--total-timesteps", "1024", "--torch-threads", "1")


def test_extract_train_both_compare(tmp_path):
    d = tmp_path
    run_script("extract_ram_vars.py", "--env-id", ENV, "--total-frames", "2000", "--out-dir", d / "ram_vars", cwd=d)
    ram_vars = d / "ram_vars" / f"{ENV}.json"
    spec = json.loads(ram_vars.read_text())
    assert spec["env_id"] == ENV and spec["selected"]

    run_script("ppo_ram_breakout.py", "--env-id", ENV, "--ram-vars", ram_vars, "--runs-dir", d / "runs", *TRAIN, cwd=d)
    run_script("ppo_pixel_breakout.py", "--env-id", ENV, "--runs-dir", d / "runs", *TRAIN, cwd=d)
    run_dirs = sorted(p for p in (d / "runs").iterdir() if p.is_dir())
    assert len(run_dirs) == 2
    runs = {json.loads((p / "run.json").read_text())["agent"]: p for p in run_dirs}
    assert set(runs) == {"ram", "pixel"}

    # the memory agent was built on exactly the extractor's selection
    import torch
    ckpt = torch.load(runs["ram"] / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["ram_indices"] == spec["selected"]
    assert ckpt["model_kwargs"]["n_ram"] == len(spec["selected"])

    proc = run_script("compare_runs.py", d / "runs", "--out-dir", d / "compare", "--smooth", "2", cwd=d)
    assert "ram" in proc.stdout and "pixel" in proc.stdout
    summary = json.loads((d / "compare" / "summary.json").read_text())
    assert summary["format"] == "memory-pixel-interp/compare"
    by_agent = {g["agent"]: g for g in summary["groups"]}
    assert set(by_agent) == {"ram", "pixel"}
    for agent, g in by_agent.items():
        assert g["env_id"] == ENV
        assert g["n_seeds"] == 1
        assert g["env_steps"]["min"] >= 1024, (agent, g)
        assert g["n_with_episodes"] == 1 and g["episodes"] >= 1, (agent, g)  # real games ended and were logged
    for name in ("return_vs_steps.png", "return_vs_wallclock.png", "losses.png", "summary.md", "index.html"):
        assert (d / "compare" / name).stat().st_size > 1000, name
