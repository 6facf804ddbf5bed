"""The probe given a RAM-vars file other than the one its memory agent was trained on (ram_vars/ re-extracted since,
as the whole pass of docs/agents.md does): it probes with the RAM-vars record the checkpoint carries and says so, or,
when neither the checkpoint nor the file describes those bytes, stops with one line that says how to recover; and a
memory agent that chose its own bytes (--drop-bitmaps) ranks those, while every selected byte is probed."""
import json

import pytest
import torch

from conftest import ROOT, assert_clean_error, run_script

ENV = "BreakoutNoFrameskip-v4"
PIXEL, RAM = ROOT / "models" / "breakout_pixel_ppo_500k.pt", ROOT / "models" / "breakout_ram_ppo_500k.pt"
TINY = ["--num-base-states", "6", "--samples-per-var", "8", "--top-k", "3", "--rollout-steps", "60",
        "--importance-steps", "64", "--causal-pairs", "16", "--random-directions", "3", "--torch-threads", "1",
        "--no-natural", "--no-report"]


@pytest.fixture(scope="module")
def fresh_extraction(tmp_path_factory):
    """A RAM-vars file written now by the extractor (tiny budget): it selects other bytes than the shipped agent's."""
    tmp_path = tmp_path_factory.mktemp("ram_vars")
    run_script("extract_ram_vars.py", "--env-id", ENV, "--total-frames", "2000", "--seed", "1",
               "--out-dir", tmp_path / "ram_vars", cwd=tmp_path)
    path = tmp_path / "ram_vars" / f"{ENV}.json"
    ckpt = torch.load(RAM, map_location="cpu", weights_only=True)
    assert json.loads(path.read_text())["selected"] != ckpt["ram_indices"], "the fresh file should differ from the agent's"
    return path, ckpt


def test_probe_uses_the_checkpoints_ram_vars_record(fresh_extraction, tmp_path):
    path, ckpt = fresh_extraction
    out = tmp_path / "probe"
    proc = run_script("probe_function_vectors.py", "--pixel-checkpoint", PIXEL, "--ram-checkpoint", RAM,
                      "--ram-vars", path, "--out-dir", out, *TINY, cwd=tmp_path)
    assert "using the RAM-vars record its checkpoint carries" in proc.stdout, proc.stdout[-2000:]
    results = json.loads((out / "results.json").read_text())
    ranked = {r["index"] for r in results["importance"]["ranking"]}
    assert ranked == set(ckpt["ram_indices"]), "the probe should rank exactly the bytes the memory agent saw"
    assert {v["index"] for v in results["variables"]} <= set(ckpt["ram_indices"])


def test_probe_without_a_usable_record_says_how_to_recover(fresh_extraction, tmp_path):
    path, ckpt = fresh_extraction
    ckpt = dict(ckpt, ram_vars=None)                     # a checkpoint that carries no record of its bytes
    bare = tmp_path / "ram_no_record.pt"
    torch.save(ckpt, bare)
    data = json.loads(path.read_text())                  # and a file that selects and describes none of its bytes
    data["selected"] = [i for i in data["selected"] if i not in ckpt["ram_indices"]]
    data["bytes"] = [b if b["index"] in data["selected"] else {"index": b["index"]} for b in data["bytes"]]
    assert data["selected"]
    thin = tmp_path / "thin.json"
    thin.write_text(json.dumps(data))
    proc = run_script("probe_function_vectors.py", "--pixel-checkpoint", PIXEL, "--ram-checkpoint", bare,
                      "--ram-vars", thin, "--out-dir", tmp_path / "probe", *TINY, cwd=tmp_path, check=False)
    assert_clean_error(proc, "ram_indices", "pass --ram-vars the file it was trained with")
    assert not (tmp_path / "probe").exists(), "nothing is written before the inputs are checked"


def test_probe_takes_a_memory_agent_that_chose_its_own_bytes(tmp_path):
    """A memory agent trained with --drop-bitmaps observes fewer bytes than its RAM file selects: the probe ranks the
    bytes it observes, probes every selected byte in the pixel agent (the bitmap bytes after the ranked ones, unranked),
    says so, and the atlas marks them unranked."""
    data = json.loads((ROOT / "ram_vars" / f"{ENV}.json").read_text())
    kinds = {b["index"]: b["kind"] for b in data["bytes"]}
    state = [i for i in data["selected"] if kinds[i] != "bitmap"][:3]
    bitmaps = [i for i in data["selected"] if kinds[i] == "bitmap"][:2]
    assert len(state) == 3 and len(bitmaps) == 2, "the Breakout file should select state and bitmap bytes"
    data["selected"] = sorted(state + bitmaps)            # a small selection, so that every byte is probed quickly
    source = tmp_path / f"{ENV}.json"
    source.write_text(json.dumps(data))
    run_script("ppo_ram_breakout.py", "--env-id", ENV, "--ram-vars", source, "--drop-bitmaps", "--num-envs", "2",
               "--num-steps", "32", "--total-timesteps", "64", "--torch-threads", "1", "--env-processes", "1",
               "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    ram = next((tmp_path / "runs").glob("*/checkpoint.pt"))
    indices = torch.load(ram, map_location="cpu", weights_only=True)["ram_indices"]
    assert sorted(indices) == sorted(state)
    out = tmp_path / "probe"
    tiny = [a for a in TINY if a != "--no-report"]
    tiny[tiny.index("--top-k") + 1] = "0"                 # every selected byte
    proc = run_script("probe_function_vectors.py", "--pixel-checkpoint", PIXEL, "--ram-checkpoint", ram,
                      "--ram-vars", source, "--out-dir", out, *tiny, cwd=tmp_path)
    assert f"the memory agent observes {len(indices)} of the 5 bytes" in proc.stdout, proc.stdout[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert {r["index"] for r in results["importance"]["ranking"]} == set(indices)
    probed = [v["index"] for v in results["variables"]]
    assert sorted(probed) == sorted(data["selected"]), "every selected byte is probed in the pixel agent"
    assert sorted(probed[-2:]) == sorted(bitmaps), "the unranked bytes come after the ranked ones"
    assert all((v["importance"] is None) == (v["index"] in bitmaps) for v in results["variables"])
    assert results["ranking"]["unranked"] == [f"ram[0x{i:02x}]" for i in sorted(bitmaps)]
    html = (out / "report.html").read_text()
    assert html.count("unranked (the memory agent does not observe it)") == 2
