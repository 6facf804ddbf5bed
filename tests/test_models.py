"""The checkpoints shipped under models/ load, play, and drive the probe (the README's quick start)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script

MODELS = ROOT / "models"
CARDS = {p.stem: p for p in MODELS.glob("*.md") if p.name != "README.md"}


def shipped(agent):
    paths = sorted(MODELS.glob(f"*_{agent}_*.pt"))
    assert paths, f"no {agent} checkpoint under models/"
    return paths[-1]


@pytest.mark.parametrize("agent,script", [("pixel", "ppo_pixel_breakout.py"), ("ram", "ppo_ram_breakout.py")])
def test_shipped_checkpoint_plays_and_has_a_card(agent, script, tmp_path):
    src = shipped(agent)
    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    assert ckpt["format"] == "memory-pixel-interp/checkpoint" and ckpt["agent"] == agent
    assert ckpt["global_step"] > 0
    card = CARDS.get(src.stem)
    assert card is not None, f"models/{src.stem}.md (the model card) is missing"
    text = card.read_text()
    for needle in (ckpt["env_id"], f"{ckpt['global_step']:,}", "python "):
        assert needle in text, f"card {card.name} does not mention {needle!r}"
    # play with it (a copy: eval.json is written next to the checkpoint)
    shutil.copy(src, tmp_path / src.name)
    run_script(script, "--eval-checkpoint", tmp_path / src.name, "--eval-episodes", "2", "--eval-num-envs", "2",
               "--eval-max-frames", "3000", "--torch-threads", "1", cwd=tmp_path)
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert len(ev["returns"]) == 2


def test_probe_runs_on_shipped_models(tmp_path):
    ram = torch.load(shipped("ram"), map_location="cpu", weights_only=False)
    ram_vars = tmp_path / "ram_vars.json"
    ram_vars.write_text(json.dumps(ram["ram_vars"]))   # the RAM file the memory agent was trained with
    assert Path(ROOT / "ram_vars" / f"{ram['env_id']}.json").exists()
    out = tmp_path / "probe"
    run_script("probe_function_vectors.py", "--pixel-checkpoint", shipped("pixel"), "--ram-checkpoint", shipped("ram"),
               "--ram-vars", ram_vars, "--out-dir", out, "--num-base-states", "6", "--samples-per-var", "8",
               "--top-k", "3", "--torch-threads", "1", cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert len(results["variables"]) >= 3
    assert (out / "report.html").stat().st_size > 10000
