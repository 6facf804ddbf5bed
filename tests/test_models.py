"""The checkpoints shipped under models/ load, play, have a card, and drive the probe (the README's tour)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script

MODELS = ROOT / "models"
SHIPPED = sorted(MODELS.glob("*.pt"))          # a work folder under models/ (a run still training) is not shipped
SCRIPTS = {"pixel": "ppo_pixel_breakout.py", "ram": "ppo_ram_breakout.py"}


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def reference(agent):
    """The most-trained shipped checkpoint of this agent kind: the one the README's tour names."""
    paths = [p for p in SHIPPED if load(p)["agent"] == agent]
    assert paths, f"no {agent} checkpoint under models/"
    return max(paths, key=lambda p: load(p)["global_step"])


def test_readme_quick_start_names_the_reference_pair():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## A 5-minute tour on the shipped agents")
    block = readme[start:readme.index("```\n", readme.index("```bash", start) + 7)]
    for agent, flag in (("pixel", "--pixel-checkpoint"), ("ram", "--ram-checkpoint")):
        assert f"{flag} models/{reference(agent).name}" in block, f"the README's tour should probe {reference(agent).name}"
    assert f"--eval-checkpoint models/{reference('pixel').name}" in block, "the README's tour should play the reference agent"


@pytest.mark.parametrize("src", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_plays_and_has_a_card(src, tmp_path):
    ckpt = load(src)
    assert ckpt["format"] == "memory-pixel-interp/checkpoint" and ckpt["agent"] in SCRIPTS
    assert ckpt["global_step"] > 0
    assert ckpt.get("optimizer") is None and "rng" not in ckpt, "shipped checkpoints are slimmed (no optimizer, no RNG)"
    card = src.with_suffix(".md")
    assert card.exists(), f"models/{card.name} (the model card) is missing"
    text = card.read_text()
    for needle in (ckpt["env_id"], f"{ckpt['global_step']:,}", "python "):
        assert needle in text, f"card {card.name} does not mention {needle!r}"
    assert src.name in (MODELS / "README.md").read_text(), f"models/README.md does not list {src.name}"
    # play with it (a copy: eval.json is written next to the checkpoint)
    shutil.copy(src, tmp_path / src.name)
    run_script(SCRIPTS[ckpt["agent"]], "--eval-checkpoint", tmp_path / src.name, "--eval-episodes", "2",
               "--eval-num-envs", "2", "--eval-max-frames", "3000", "--torch-threads", "1", cwd=tmp_path)
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert len(ev["returns"]) == 2 and ev["global_step"] == ckpt["global_step"]


def test_probe_runs_on_shipped_models(tmp_path):
    ram = load(reference("ram"))
    ram_vars = tmp_path / "ram_vars.json"
    ram_vars.write_text(json.dumps(ram["ram_vars"]))   # the RAM file the memory agent was trained with
    assert Path(ROOT / "ram_vars" / f"{ram['env_id']}.json").exists()
    out = tmp_path / "probe"
    run_script("probe_function_vectors.py", "--pixel-checkpoint", reference("pixel"), "--ram-checkpoint", reference("ram"),
               "--ram-vars", ram_vars, "--out-dir", out, "--num-base-states", "6", "--samples-per-var", "8",
               "--top-k", "3", "--torch-threads", "1", cwd=tmp_path)
    results = json.loads((out / "results.json").read_text())
    assert len(results["variables"]) >= 3
    assert (out / "report.html").stat().st_size > 10000
