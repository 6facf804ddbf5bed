"""The memory agent's input variants (the fair-baseline ablation, docs/results/breakout_memory_ablation/):
--ram-bytes all, --drop-bitmaps, --ram-stack N and --hidden W; and the resume command a stopped run prints. Expectations come from the emulator (the RAM read
after each step) and from the RAM-variable file the run reads, never from a table."""
import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_clean_error, run_script

RAM = "ppo_ram_breakout.py"
ENV_ID = "BreakoutNoFrameskip-v4"
TINY = ["--num-envs", "2", "--num-steps", "32", "--total-timesteps", "128", "--torch-threads", "1",
        "--env-processes", "1"]


def load_ram_script():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("ppo_ram_breakout")


def only_checkpoint(runs):
    found = list(runs.glob("*/checkpoint.pt"))
    assert len(found) == 1, found
    return torch.load(found[0], map_location="cpu", weights_only=True), found[0]


def test_ram_stack_holds_the_last_reads_oldest_first():
    """A reset fills the stack with its read; each step shifts it by one read, the newest being the emulator's RAM."""
    ram = load_ram_script()
    indices = [57, 70, 72, 99, 101]
    env = ram.AtariRamEnv(ENV_ID, indices, ram_stack=3)
    try:
        k = len(indices)
        assert env.observation_space.shape == (3 * k,)
        obs, _ = env.reset(seed=3)
        now = env.ale.getRAM()[indices]
        np.testing.assert_array_equal(obs, np.tile(now, 3))
        rng = np.random.default_rng(0)
        reads = [now, now, now]
        moved = 0
        for _ in range(60):
            obs, *_ = env.step(int(rng.integers(env.action_space.n)))
            reads.append(env.ale.getRAM()[indices].copy())
            np.testing.assert_array_equal(obs, np.concatenate(reads[-3:]))
            moved += int(not np.array_equal(reads[-1], reads[-2]))
        assert moved > 10  # the reads did change, so the order was really checked
        obs, _ = env.reset()
        np.testing.assert_array_equal(obs, np.tile(env.ale.getRAM()[indices], 3))
    finally:
        env.close()


def test_all_bytes_stacked_train_evaluate_and_keep_their_input(tmp_path):
    """--ram-bytes all (no RAM-variable file needed) with --ram-stack 2 and --hidden 64: the checkpoint holds all 128
    indices, the stack and a network of that input size; evaluation plays with the same input; a resume cannot
    change the stack."""
    runs = tmp_path / "runs"
    proc = run_script(RAM, "--env-id", ENV_ID, "--ram-bytes", "all", "--ram-stack", "2", "--hidden", "64", *TINY,
                      "--runs-dir", runs, cwd=tmp_path)
    assert "128 bytes" in proc.stdout and "the last 2 observations stacked" in proc.stdout
    ckpt, path = only_checkpoint(runs)
    assert ckpt["ram_indices"] == list(range(128)) and ckpt["ram_stack"] == 2
    assert ckpt["model_kwargs"]["n_ram"] == 256 and ckpt["model_kwargs"]["hidden"] == 64
    assert ckpt["state_dict"]["network.fc1.weight"].shape == (64, 256 * 9)
    assert ckpt["ram_vars"]["selected"] == list(range(128))
    proc = run_script(RAM, "--eval-checkpoint", path, "--eval-episodes", "1", "--eval-max-frames", "400",
                      "--torch-threads", "1", cwd=tmp_path)
    assert "eval:" in proc.stdout
    proc = run_script(RAM, "--resume", path, "--ram-stack", "3", "--total-timesteps", "256", cwd=tmp_path, check=False)
    assert_clean_error(proc, "--ram-stack cannot change")


def test_drop_bitmaps_leaves_out_the_files_bitmap_bytes(tmp_path):
    """--drop-bitmaps keeps the selected bytes whose record in the file is not "kind": "bitmap", in order; a file
    without per-byte records is refused with one line."""
    source = ROOT / "ram_vars" / f"{ENV_ID}.json"
    data = json.loads(source.read_text())
    kinds = {b["index"]: b["kind"] for b in data["bytes"]}
    expected = [i for i in data["selected"] if kinds[i] != "bitmap"]
    assert 0 < len(expected) < len(data["selected"])  # the shipped file has bitmap bytes to drop
    runs = tmp_path / "runs"
    run_script(RAM, "--env-id", ENV_ID, "--ram-vars", source, "--drop-bitmaps", *TINY, "--runs-dir", runs, cwd=tmp_path)
    ckpt, _ = only_checkpoint(runs)
    assert ckpt["ram_indices"] == expected and ckpt["model_kwargs"]["n_ram"] == len(expected)
    assert ckpt["args"]["drop_bitmaps"] is True
    del data["bytes"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    proc = run_script(RAM, "--env-id", ENV_ID, "--ram-vars", bare, "--drop-bitmaps", *TINY, "--runs-dir",
                      tmp_path / "runs2", cwd=tmp_path, check=False)
    assert_clean_error(proc, "--drop-bitmaps", "per-byte records")
    assert not (tmp_path / "runs2").exists()


@pytest.mark.parametrize("flag, value, needle", [("--ram-stack", "0", ">= 1"), ("--hidden", "0", ">= 1"),
                                                 ("--ram-bytes", "some", "bad command line")])
def test_bad_input_flags_are_one_line(flag, value, needle, tmp_path):
    proc = run_script(RAM, "--env-id", ENV_ID, flag, value, *TINY, "--runs-dir", tmp_path / "runs", cwd=tmp_path,
                      check=False)
    assert_clean_error(proc, needle)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script", ["ppo_ram_breakout.py", "ppo_pixel_breakout.py"])
def test_a_stopped_run_prints_the_command_that_goes_on(script, tmp_path):
    """SIGTERM saves a checkpoint and prints `to go on: python <script> --resume <checkpoint>`; that exact command
    (with this interpreter) resumes the run from where it stopped and finishes it."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    extra = (["--env-processes", "1", "--ram-vars", str(ROOT / "ram_vars" / f"{ENV_ID}.json")] if script == RAM
             else ["--env-threads", "1"])
    proc = subprocess.Popen([sys.executable, str(ROOT / script), "--env-id", ENV_ID, "--num-envs", "2", "--num-steps",
                             "32", "--total-timesteps", "2048", "--torch-threads", "1", *extra, "--runs-dir", "runs"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("global_step="):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    hint = [l for l in out.splitlines() if l.startswith("to go on: ")]
    assert len(hint) == 1, out[-2000:]
    command = shlex.split(hint[0][len("to go on: "):])
    assert command[0] == "python" and command[2] == "--resume" and Path(tmp_path, command[3]).is_file()
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "finished at global_step 2048" in resumed.stdout
    assert "to go on" not in resumed.stdout


def test_all_bytes_with_a_file_drop_its_bitmaps_and_a_named_file_must_exist(tmp_path):
    """--ram-bytes all --drop-bitmaps: the 128 bytes less those the file calls bitmaps (selected or not); an explicit
    --ram-vars that does not exist is refused even with --ram-bytes all (only the default path may be missing)."""
    source = ROOT / "ram_vars" / f"{ENV_ID}.json"
    kinds = {b["index"]: b["kind"] for b in json.loads(source.read_text())["bytes"]}
    runs = tmp_path / "runs"
    run_script(RAM, "--env-id", ENV_ID, "--ram-vars", source, "--ram-bytes", "all", "--drop-bitmaps", *TINY,
               "--runs-dir", runs, cwd=tmp_path)
    ckpt, _ = only_checkpoint(runs)
    assert ckpt["ram_indices"] == [i for i in range(128) if kinds[i] != "bitmap"]
    proc = run_script(RAM, "--env-id", ENV_ID, "--ram-vars", tmp_path / "typo.json", "--ram-bytes", "all", *TINY,
                      "--runs-dir", tmp_path / "runs2", cwd=tmp_path, check=False)
    assert_clean_error(proc, "typo.json", "not found")
    assert not (tmp_path / "runs2").exists()
