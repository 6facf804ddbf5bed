"""End-to-end tests of the two PPO scripts (ppo_pixel_breakout.py, ppo_ram_breakout.py).

Each script runs as a subprocess with a tiny budget, and the tests check what it wrote against
docs/FORMATS.md: TensorBoard tags, checkpoint.pt (rebuilt with the contract's model classes, copied below),
run.json, eval.json; resume, Ctrl-C, and bad input (one `error:` line, nothing on disk changed).
"""
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.distributions.categorical import Categorical

from conftest import ROOT, assert_clean_error, run_script

PIXEL, RAM = "ppo_pixel_breakout.py", "ppo_ram_breakout.py"
ENV_ID = "BreakoutNoFrameskip-v4"
# 2 envs x 32 steps x 8 iterations: each env plays 256 steps, enough for a random-ish agent to end a game
TINY = ["--num-envs", "2", "--num-steps", "32", "--total-timesteps", "512", "--torch-threads", "1"]
STEPS, ITERATIONS = 512, 8
CLEANRL_TAGS = ["charts/episodic_return", "charts/episodic_length", "charts/learning_rate", "charts/SPS",
                "losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/old_approx_kl",
                "losses/approx_kl", "losses/clipfrac", "losses/explained_variance"]
# a handful of Breakout bytes (paddle, ball x/y, score, lives): the memory agent only needs valid indices
RAM_SELECTED = [57, 70, 72, 77, 99, 101]


# ---- the models of FORMATS.md section 3, copied verbatim (as every script that loads a checkpoint does)
def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, n_actions: int, in_channels: int = 4):
        super().__init__()
        self.network = nn.Sequential(OrderedDict([
            ("conv1", layer_init(nn.Conv2d(in_channels, 32, 8, stride=4))), ("relu1", nn.ReLU()),
            ("conv2", layer_init(nn.Conv2d(32, 64, 4, stride=2))), ("relu2", nn.ReLU()),
            ("conv3", layer_init(nn.Conv2d(64, 64, 3, stride=1))), ("relu3", nn.ReLU()),
            ("flatten", nn.Flatten()),
            ("fc", layer_init(nn.Linear(64 * 7 * 7, 512))), ("relu_fc", nn.ReLU()),
        ]))
        self.actor = layer_init(nn.Linear(512, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)
        self.trunk_dtype = None  # torch.bfloat16: `network` runs under autocast (--precision); not saved

    def hidden(self, x):
        """(B, 4, 84, 84) uint8 frames -> (B, 512) float32 features of `network` (in trunk_dtype when set)."""
        with torch.autocast(x.device.type, dtype=self.trunk_dtype or torch.bfloat16, enabled=self.trunk_dtype is not None):
            # uint8 -> bf16 directly: the same values as (x.float() / 255) cast to bf16, half the memory traffic
            return self.network(x.to(self.trunk_dtype or torch.float32) / 255.0).float()

    def get_value(self, x):
        return self.critic(self.hidden(x))

    def get_action_and_value(self, x, action=None):
        hidden = self.hidden(x)
        logits = self.actor(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def encode_ram(x):                      # x: uint8 tensor (B, n_ram) -> float (B, n_ram * 9)
    x = x.long()
    bits = (x.unsqueeze(-1) >> torch.arange(8, device=x.device)) & 1
    return torch.cat([x.unsqueeze(-1).float() / 255.0, bits.float()], dim=-1).flatten(1)


class RamAgent(nn.Module):
    def __init__(self, n_actions: int, n_ram: int, hidden: int = 256):
        super().__init__()
        self.network = nn.Sequential(OrderedDict([
            ("fc1", layer_init(nn.Linear(n_ram * 9, hidden))), ("tanh1", nn.Tanh()),
            ("fc2", layer_init(nn.Linear(hidden, hidden))), ("tanh2", nn.Tanh()),
        ]))
        self.actor = layer_init(nn.Linear(hidden, n_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden, 1), std=1)

    def get_value(self, x):
        return self.critic(self.network(encode_ram(x)))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(encode_ram(x))
        logits = self.actor(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


# ---- helpers
def load_script(name):
    """Import a training script as a module (its main part is under `if __name__ == "__main__"`)."""
    # imported by its own name from the project folder, so that processes it spawns can import it too
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name[:-3])


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def only_run_dir(runs_dir):
    dirs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def scalars(run_dir):
    """{tag: [(step, value), ...]} over all event files of the run folder (purged steps dropped)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def write_ram_vars(path, env_id=ENV_ID, game="breakout", selected=RAM_SELECTED, **changes):
    """A hand-made RAM-variable file (FORMATS.md section 1); a key given as None is left out."""
    kept = selected if isinstance(selected, list) else []
    data = {"format": "memory-pixel-interp/ram-vars", "version": 1, "env_id": env_id, "game": game,
            "selected": selected, "excluded": {str(i): "scratch" for i in range(128) if i not in kept},
            "bytes": [{"index": i, "address": hex(0x80 + i), "kind": "state" if i in kept else "scratch",
                       "selected": i in kept, "reason": "hand-made test file"} for i in range(128)],
            "selection_rule": "hand-made for tests", "produced_by": {"script": "tests/test_ppo.py"}}
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    path.write_text(json.dumps(data))
    return path


def start_script(script, *args, cwd):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---- trained tiny runs, shared by the tests of one module
@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("pixel") / "runs"
    proc = run_script(PIXEL, "--env-id", ENV_ID, *TINY, "--save-interval", "2", "--runs-dir", runs, cwd=runs.parent)
    assert "SPS=" in proc.stdout and f"global_step={STEPS}/" in proc.stdout
    return only_run_dir(runs)


@pytest.fixture(scope="module")
def ram_vars_file(tmp_path_factory):
    return write_ram_vars(tmp_path_factory.mktemp("ramvars") / "Breakout.json")


@pytest.fixture(scope="module")
def ram_run(tmp_path_factory, ram_vars_file):
    runs = tmp_path_factory.mktemp("ram") / "runs"
    proc = run_script(RAM, "--env-id", ENV_ID, "--ram-vars", ram_vars_file, *TINY, "--save-interval", "2", "--runs-dir", runs,
                      cwd=runs.parent)
    assert "SPS=" in proc.stdout and f"global_step={STEPS}/" in proc.stdout
    return only_run_dir(runs)


def check_run_folder(run_dir, agent_kind):
    tags = scalars(run_dir)
    missing = [t for t in CLEANRL_TAGS if t not in tags]
    assert not missing, missing
    assert [s for s, _ in tags["charts/SPS"]] == [64 * (i + 1) for i in range(ITERATIONS)]
    assert all(v >= 0 for _, v in tags["charts/episodic_return"])  # unclipped Breakout scores
    assert any(t.startswith("perf/") for t in tags)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["format"] == "memory-pixel-interp/run" and run["version"] == 1
    assert (run["agent"], run["env_id"], run["status"], run["global_step"]) == (agent_kind, ENV_ID, "finished", STEPS)
    assert run["run_name"] == run_dir.name and run_dir.name.startswith(f"{ENV_ID}__ppo_{agent_kind}_breakout__1__")
    assert run["device"] == "cpu" and run["wall_seconds"] > 0 and run["args"]["num_envs"] == 2
    # what the run used, so that a v4 run and a v5 run cannot be mistaken for one another
    assert run["env_settings"] == {"repeat_action_probability": 0.0, "frameskip": 4, "max_num_frames_per_episode": 108000,
                                   "noop_max": 30, "full_action_space": False}
    assert run["runtime"]["torch_threads"] == 1 and run["runtime"]["precision"] in ("fp32", "bf16")
    ckpt = load_ckpt(run_dir / "checkpoint.pt")
    assert (ckpt["format"], ckpt["version"], ckpt["agent"], ckpt["env_id"], ckpt["game"]) == (
        "memory-pixel-interp/checkpoint", 1, agent_kind, ENV_ID, "breakout")
    assert (ckpt["global_step"], ckpt["iteration"], ckpt["run_name"]) == (STEPS, ITERATIONS, run_dir.name)
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"} and ckpt["optimizer"]["state"]
    assert ckpt["env_settings"] == run["env_settings"]
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values())  # fp32 whatever --precision
    assert not list(run_dir.glob("*.tmp-*"))
    return run, ckpt


# ---- pixel agent
def test_pixel_training_writes_the_contract(pixel_run):
    run, ckpt = check_run_folder(pixel_run, "pixel")
    assert ckpt["model_kwargs"] == {"n_actions": 4, "in_channels": 4}
    assert ckpt["ram_indices"] is None and ckpt["ram_vars"] is None and run["ram_vars"] is None
    model = Agent(**ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])  # strict: same names and shapes as the contract
    script_model = load_script(PIXEL).Agent(**ckpt["model_kwargs"])
    script_model.load_state_dict(ckpt["state_dict"])
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(model.get_value(x), script_model.get_value(x))
    # the checkpoint learned: the weights are not those of a fresh init with the same seed
    torch.manual_seed(1)
    assert not torch.equal(Agent(4).network.conv1.weight, ckpt["state_dict"]["network.conv1.weight"])


def test_pixel_forward_hooks_reach_every_named_layer(pixel_run):
    ckpt = load_ckpt(pixel_run / "checkpoint.pt")
    agent = load_script(PIXEL).Agent(**ckpt["model_kwargs"])
    agent.load_state_dict(ckpt["state_dict"])
    modules = dict(agent.named_modules())
    expected = {"network.relu1": (32, 20, 20), "network.relu2": (64, 9, 9), "network.relu3": (64, 7, 7),
                "network.relu_fc": (512,), "actor": (4,), "critic": (1,)}
    seen = {}
    handles = [modules[name].register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.detach()))
               for name in expected]
    x = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        _, _, _, value = agent.get_action_and_value(x)
    for h in handles:
        h.remove()
    assert {name: tuple(out.shape[1:]) for name, out in seen.items()} == expected
    assert all(seen[name].min() >= 0 for name in expected if "relu" in name)
    torch.testing.assert_close(seen["critic"], value)


def test_pixel_resume_continues_the_run(pixel_run, tmp_path):
    run_dir = tmp_path / pixel_run.name
    shutil.copytree(pixel_run, run_dir)
    old_events = sorted(p.name for p in run_dir.glob("events.out.tfevents.*"))
    proc = run_script(PIXEL, "--resume", run_dir / "checkpoint.pt", "--total-timesteps", STEPS + 128, "--torch-threads", "1",
                      cwd=tmp_path)
    assert "resuming" in proc.stdout and f"global_step={STEPS + 64}/" in proc.stdout and "global_step=64/" not in proc.stdout
    ckpt = load_ckpt(run_dir / "checkpoint.pt")
    assert ckpt["global_step"] == STEPS + 128 and ckpt["run_name"] == pixel_run.name
    assert ckpt["args"]["num_envs"] == 2  # the saved args are the defaults of a resumed run
    steps = [s for s, _ in scalars(run_dir)["losses/value_loss"]]
    assert steps == [64 * (i + 1) for i in range(ITERATIONS + 2)]
    assert set(old_events) < {p.name for p in run_dir.glob("events.out.tfevents.*")}
    run = json.loads((run_dir / "run.json").read_text())
    assert (run["status"], run["global_step"]) == ("finished", STEPS + 128)
    assert [p.name for p in tmp_path.iterdir()] == [pixel_run.name]  # no new run folder
    # one session record per process (piece), in run.json and the checkpoint, carried over by the resume
    assert [(x["start_step"], x["end_step"]) for x in run["sessions"]] == [(0, STEPS), (STEPS, STEPS + 128)]
    assert [(x["start_step"], x["end_step"]) for x in ckpt["sessions"]] == [(0, STEPS), (STEPS, STEPS + 128)]
    for x in run["sessions"]:
        assert x["wall_seconds"] > 0 and x["machine"] == run["machine"] and x["torch_threads"] >= 1


def test_pixel_channels_last_is_the_same_network(tmp_path):
    """--channels-last (the default) only changes the weights' memory layout: a --no-channels-last run with the
    same seed and budget ends with the same weights (up to float rounding) and the same checkpoint keys. Both in
    fp32: on a CPU with native bf16, --precision auto trains the trunk in bf16, whose rounding differs per layout."""
    ckpts = {}
    for layout in ("--channels-last", "--no-channels-last"):
        runs = tmp_path / layout.strip("-")
        run_script(PIXEL, "--env-id", ENV_ID, *TINY, "--save-interval", "2", "--runs-dir", runs, layout,
                   "--precision", "fp32", cwd=tmp_path)
        ckpts[layout] = load_ckpt(only_run_dir(runs) / "checkpoint.pt")
    plain, default = ckpts["--no-channels-last"], ckpts["--channels-last"]
    assert (plain["args"]["channels_last"], default["args"]["channels_last"]) == (False, True)
    assert default["state_dict"]["network.conv1.weight"].is_contiguous(memory_format=torch.channels_last)
    assert set(plain["state_dict"]) == set(default["state_dict"])
    for key, weight in plain["state_dict"].items():
        torch.testing.assert_close(default["state_dict"][key], weight, rtol=1e-3, atol=1e-4)
    model = Agent(**default["model_kwargs"])
    model.load_state_dict(default["state_dict"])  # a channels-last checkpoint loads into the plain model


def native_bf16():
    with open("/proc/cpuinfo") as f:
        flags = next((l for l in f if l.startswith("flags")), "")
    return " avx512_bf16" in flags or " amx_bf16" in flags


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo") or not native_bf16(), reason="this CPU has no native bf16")
def test_pixel_bf16_trunk_learns_like_fp32(tmp_path):
    """--precision bf16 runs only the CNN trunk in bf16: with the same seed the first iterations' losses are those of
    fp32 up to bf16 rounding (measured: value loss within 2%, entropy within 1e-4), the run records its precision,
    and the checkpoint stays fp32 and loads into the plain model."""
    logs = {}
    for precision in ("fp32", "bf16"):
        runs = tmp_path / precision
        run_script(PIXEL, "--env-id", ENV_ID, "--num-envs", "4", "--num-steps", "128", "--total-timesteps", "2048",
                   "--torch-threads", "1", "--precision", precision, "--runs-dir", runs, cwd=tmp_path)
        run_dir = only_run_dir(runs)
        assert json.loads((run_dir / "run.json").read_text())["runtime"]["precision"] == precision
        logs[precision] = scalars(run_dir)
        ckpt = load_ckpt(run_dir / "checkpoint.pt")
        assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values())
        Agent(**ckpt["model_kwargs"]).load_state_dict(ckpt["state_dict"])
    fp32, bf16 = logs["fp32"], logs["bf16"]
    for (s1, v1), (s2, v2) in zip(fp32["losses/value_loss"][:2], bf16["losses/value_loss"][:2]):
        assert s1 == s2 and v2 == pytest.approx(v1, rel=0.1), (v1, v2)
    for (_, e1), (_, e2) in zip(fp32["losses/entropy"], bf16["losses/entropy"]):
        assert e2 == pytest.approx(e1, abs=1e-2)
    assert fp32["losses/value_loss"] != bf16["losses/value_loss"]  # bf16 really ran: not bit-identical


def test_pixel_greedy_eval_with_frame_cap_writes_eval_json(pixel_run, tmp_path):
    """3 games on 2 envs (a fixed quota per env), greedy, cut at 400 frames (a stuck policy terminates)."""
    shutil.copy(pixel_run / "checkpoint.pt", tmp_path / "checkpoint.pt")
    before = digest(tmp_path / "checkpoint.pt")
    proc = run_script(PIXEL, "--eval-checkpoint", tmp_path / "checkpoint.pt", "--eval-episodes", "3", "--eval-num-envs", "2",
                      "--eval-greedy", "--eval-max-frames", "400", "--torch-threads", "1", cwd=tmp_path)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["episodes"] == 3 and len(report["returns"]) == 3 and len(report["lengths"]) == 3
    assert report["mean"] == pytest.approx(np.mean(report["returns"]))
    assert report["std"] == pytest.approx(np.std(report["returns"]))
    assert report["checkpoint"] == str((tmp_path / "checkpoint.pt").resolve()) and report["greedy"]
    assert all(r >= 0 and r == int(r) for r in report["returns"])
    # the cap counts frames after the reset's (<= 30) no-op and FIRE frames; the last step may overrun by 3
    assert all(100 < l <= 400 + 31 + 3 for l in report["lengths"]) and len(report["truncated"]) == 3
    assert "±" in proc.stdout and digest(tmp_path / "checkpoint.pt") == before


def interrupt(script, tmp_path, *args, sig=signal.SIGINT):
    """Start a long run, send `sig` once it has logged an iteration; return (proc, stdout, stderr, run_dir)."""
    runs = tmp_path / "runs"
    proc = start_script(script, "--env-id", ENV_ID, *args, "--num-envs", "2", "--num-steps", "32",
                        "--total-timesteps", "1000000", "--save-interval", "100000", "--torch-threads", "1",
                        "--runs-dir", runs, cwd=tmp_path)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("global_step="):
                break
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc, "".join(lines) + out, err, only_run_dir(runs)


@pytest.mark.parametrize("script, sig, async_envs", [(PIXEL, signal.SIGINT, False), (RAM, signal.SIGINT, False),
                                                     (PIXEL, signal.SIGTERM, False), (RAM, signal.SIGTERM, True)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint(script, sig, async_envs, tmp_path):
    extra = ["--ram-vars", write_ram_vars(tmp_path / "rv.json")] if script == RAM else []
    extra += ["--async-envs"] if async_envs else []
    proc, out, err, run_dir = interrupt(script, tmp_path, *extra, sig=sig)
    assert f"{sig.name}: stopping" in out
    assert proc.returncode == 130, (out[-2000:], err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    ckpt = load_ckpt(run_dir / "checkpoint.pt")
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and run["global_step"] == ckpt["global_step"] >= 64
    assert ckpt["global_step"] % 64 == 0  # a whole number of iterations: the unfinished one is dropped


# ---- memory (RAM) agent
@pytest.mark.parametrize("script", [PIXEL, RAM])
def test_compile_flag_compiles_and_keeps_the_checkpoint_format(script, tmp_path):
    """--compile: torch.compile traces the agent's calls (TORCH_LOGS shows the graphs), and the checkpoint
    is the plain module's (no `_orig_mod.` keys), so that eval, the extractor and the probe load it."""
    extra = ["--ram-vars", write_ram_vars(tmp_path / "rv.json")] if script == RAM else []
    runs = tmp_path / "runs"
    proc = run_script(script, "--env-id", ENV_ID, *extra, "--num-envs", "2", "--num-steps", "32", "--total-timesteps",
                      "128", "--torch-threads", "1", "--runs-dir", runs, "--compile", cwd=tmp_path,
                      env_extra={"TORCH_LOGS": "graph_code", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")})
    assert "TRACED GRAPH" in proc.stderr  # without --compile nothing is traced
    assert any((tmp_path / "inductor").rglob("*.py"))  # and inductor generated kernels
    run_dir = only_run_dir(runs)
    ckpt = load_ckpt(run_dir / "checkpoint.pt")
    assert ckpt["args"]["compile"] is True and ckpt["global_step"] == 128
    model = Agent(**ckpt["model_kwargs"]) if script == PIXEL else RamAgent(**ckpt["model_kwargs"])
    assert set(ckpt["state_dict"]) == set(model.state_dict())
    model.load_state_dict(ckpt["state_dict"])
    run_script(script, "--eval-checkpoint", run_dir / "checkpoint.pt", "--eval-episodes", "1", "--eval-num-envs", "1",
               "--eval-max-frames", "400", *extra, cwd=tmp_path)
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 1


def test_ram_training_writes_the_contract(ram_run, ram_vars_file):
    run, ckpt = check_run_folder(ram_run, "ram")
    assert ckpt["model_kwargs"] == {"n_actions": 4, "n_ram": len(RAM_SELECTED), "hidden": 256}
    assert ckpt["ram_indices"] == RAM_SELECTED
    assert ckpt["ram_vars"] == json.loads(ram_vars_file.read_text())
    assert run["ram_vars"] == str(ram_vars_file)
    model = RamAgent(**ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    script_model = load_script(RAM).RamAgent(**ckpt["model_kwargs"])
    script_model.load_state_dict(ckpt["state_dict"])
    x = torch.randint(0, 256, (7, len(RAM_SELECTED)), dtype=torch.uint8)
    torch.testing.assert_close(model.get_value(x), script_model.get_value(x))


def test_ram_encoding_is_value_and_bits():
    x = torch.tensor([[0, 255], [5, 128]], dtype=torch.uint8)
    enc = load_script(RAM).encode_ram(x)
    assert enc.shape == (2, 18)
    assert enc[1, :9].tolist() == pytest.approx([5 / 255, 1, 0, 1, 0, 0, 0, 0, 0])
    assert enc[1, 9:].tolist() == pytest.approx([128 / 255, 0, 0, 0, 0, 0, 0, 0, 1])
    assert enc[0].tolist() == pytest.approx([0] * 9 + [1] * 9)


def test_ram_resume_continues_the_run(ram_run, tmp_path):
    run_dir = tmp_path / ram_run.name
    shutil.copytree(ram_run, run_dir)
    # a checkpoint written before sessions were recorded: its pieces become one record, machine unknown
    old = load_ckpt(run_dir / "checkpoint.pt")
    del old["sessions"]
    torch.save(old, run_dir / "checkpoint.pt")
    # the checkpoint holds the RAM selection: the file is not needed any more
    proc = run_script(RAM, "--resume", run_dir / "checkpoint.pt", "--total-timesteps", STEPS + 64, "--torch-threads", "1",
                      cwd=tmp_path)
    assert "resuming" in proc.stdout
    ckpt = load_ckpt(run_dir / "checkpoint.pt")
    assert ckpt["global_step"] == STEPS + 64 and ckpt["ram_indices"] == RAM_SELECTED
    assert max(s for s, _ in scalars(run_dir)["losses/value_loss"]) == STEPS + 64
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished"
    assert [(x["start_step"], x["end_step"]) for x in run["sessions"]] == [(0, STEPS), (STEPS, STEPS + 64)]
    assert [(x["start_step"], x["end_step"]) for x in ckpt["sessions"]] == [(0, STEPS), (STEPS, STEPS + 64)]
    assert run["sessions"][0]["machine"] is None and run["sessions"][1]["machine"] == run["machine"]


def test_ram_eval_writes_eval_json(ram_run):
    """Full games (all lives), sampled actions: the default evaluation."""
    before = digest(ram_run / "checkpoint.pt")
    run_script(RAM, "--eval-checkpoint", ram_run / "checkpoint.pt", "--eval-episodes", "2", "--torch-threads", "1",
               cwd=ram_run.parent)
    report = json.loads((ram_run / "eval.json").read_text())
    assert report["episodes"] == 2 and len(report["returns"]) == 2 and len(report["lengths"]) == 2
    assert report["mean"] == pytest.approx(np.mean(report["returns"])) and report["agent"] == "ram"
    assert not any(report["truncated"]) and all(l > 100 for l in report["lengths"])
    assert digest(ram_run / "checkpoint.pt") == before


@pytest.mark.parametrize("max_frames", [None, 300])
def test_the_two_agents_see_the_same_game_step_for_step(max_frames):
    """AtariRamEnv (RAM agent) and the AtariVectorEnv settings (pixel agent): same rewards, terminals
    (lost lives included), truncations, lives and frame counters under the same actions, incl. the FIRE /
    reset step after a terminal. noop_max=1 makes the resets deterministic in both; max_frames=300 makes
    every game end by truncation."""
    pixel, ram = load_script(PIXEL), load_script(RAM)
    import ale_py
    import gymnasium as gym
    gym.register_envs(ale_py)
    p_envs, p_reset = pixel.make_envs(ENV_ID, 1, 1, max_frames=max_frames, noop_max=1)
    r_envs, r_reset = ram.make_envs(ENV_ID, 1, RAM_SELECTED, False, max_frames=max_frames, noop_max=1)
    assert p_reset == r_reset == 1  # FIRE
    p_envs.reset(seed=3)
    r_envs.reset(seed=3)
    rng = np.random.default_rng(0)
    done = np.zeros(1, dtype=bool)
    life_losses = games = truncations = 0
    for _ in range(1500 if max_frames is None else 200):
        action = rng.integers(4, size=1)
        action[done] = p_reset
        _, p_rew, p_term, p_trunc, p_info = p_envs.step(action)
        _, r_rew, r_term, r_trunc, r_info = r_envs.step(action)
        r_term = r_term | r_info["life_loss"]
        assert (p_rew[0], p_term[0], p_trunc[0], p_info["lives"][0], p_info["episode_frame_number"][0]) == (
            r_rew[0], r_term[0], r_trunc[0], r_info["lives"][0], r_info["episode_frame_number"][0])
        life_losses += int(p_term[0] and p_info["lives"][0] > 0)
        games += int(p_term[0] and p_info["lives"][0] == 0)
        truncations += int(p_trunc[0])
        done = p_term | p_trunc
    if max_frames is None:  # it went through lost lives and game overs
        assert life_losses >= 8 and games >= 2 and truncations == 0, (life_losses, games)
    else:
        assert truncations >= 2 and games == 0, (truncations, games)
    p_envs.close()
    r_envs.close()


def test_ram_env_processes_step_the_same_games():
    """--env-processes N (SplitVectorEnv: slices of envs stepped in N processes) gives exactly the observations,
    rewards, terminals and infos of one SyncVectorEnv over all envs, step for step, resets included."""
    ram = load_script(RAM)
    one, _ = ram.make_envs(ENV_ID, 5, RAM_SELECTED, False, processes=1)
    split, _ = ram.make_envs(ENV_ID, 5, RAM_SELECTED, False, processes=3)
    assert isinstance(split, ram.SplitVectorEnv) and len(split.workers) == 2
    try:
        (o1, i1), (o2, i2) = one.reset(seed=7), split.reset(seed=7)
        np.testing.assert_array_equal(o1, o2)
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(1200):
            action = rng.integers(4, size=5)
            a, b = one.step(action), split.step(action)
            for x, y in zip(a[:4], b[:4]):
                np.testing.assert_array_equal(x, y)
            assert a[4].keys() == b[4].keys()
            for key in a[4]:
                np.testing.assert_array_equal(a[4][key], b[4][key])
            ends += int(a[2].sum())
        assert ends >= 5  # lost lives and game overs happened (the autoreset path was compared too)
    finally:
        one.close()
        split.close()
    assert not any(w.is_alive() for w in split.workers)


# ---- bad input: one `error:` line, non-zero exit, nothing on disk changed
def test_pixel_unknown_env_id(tmp_path):
    proc = run_script(PIXEL, "--env-id", "NotAGameNoFrameskip-v4", "--runs-dir", tmp_path / "runs", cwd=tmp_path, check=False)
    assert_clean_error(proc, "unknown env id", "NotAGameNoFrameskip-v4")
    assert not (tmp_path / "runs").exists()


def test_ram_unknown_env_id(tmp_path):
    proc = run_script(RAM, "--env-id", "ALE/Nope-v5", "--runs-dir", tmp_path / "runs", cwd=tmp_path, check=False)
    assert_clean_error(proc, "unknown env id")
    assert not (tmp_path / "runs").exists()


RAM_VARS_CASES = {
    "missing": (None, "not found"),
    "not JSON": ("{ this is not json", "not valid json"),
    "wrong game": (dict(env_id="PongNoFrameskip-v4", game="pong"), "pong"),
    "no selected": (dict(selected=None), "selected"),
    "index out of range": (dict(selected=[3, 128]), "0..127"),
    "empty selection": (dict(selected=[]), "non-empty"),
    "not a ram-vars file": (dict(format="something-else"), "format"),
}


@pytest.mark.parametrize("case", list(RAM_VARS_CASES))
def test_ram_refuses_bad_ram_vars_file(case, tmp_path):
    content, needle = RAM_VARS_CASES[case]
    (tmp_path / "ram_vars").mkdir()
    path = tmp_path / "ram_vars" / f"{ENV_ID}.json"  # the default --ram-vars of --env-id
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, dict):
        write_ram_vars(path, **content)
    before = digest(path) if path.exists() else None
    proc = run_script(RAM, "--env-id", ENV_ID, "--runs-dir", tmp_path / "runs", *TINY, cwd=tmp_path, check=False)
    assert_clean_error(proc, needle)
    assert f"ram_vars/{ENV_ID}.json" in proc.stderr
    assert not (tmp_path / "runs").exists()
    assert (digest(path) if path.exists() else None) == before


def corrupt_copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(src.read_bytes())
    dst.write_bytes(bytes(data[: len(data) // 3]) + b"garbage")
    return dst


@pytest.mark.parametrize("script", [PIXEL, RAM])
@pytest.mark.parametrize("mode", ["--resume", "--eval-checkpoint"])
def test_corrupt_checkpoint_is_refused_and_kept(script, mode, pixel_run, ram_run, tmp_path):
    ckpt = corrupt_copy((pixel_run if script == PIXEL else ram_run) / "checkpoint.pt", tmp_path / "run" / "checkpoint.pt")
    before = digest(ckpt)
    proc = run_script(script, mode, ckpt, "--total-timesteps", "100000", cwd=tmp_path, check=False)
    assert_clean_error(proc, "checkpoint")
    assert digest(ckpt) == before and sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("script, mode", [(PIXEL, "--resume"), (RAM, "--eval-checkpoint")])
def test_checkpoint_of_the_other_agent_is_refused(script, mode, pixel_run, ram_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(ram_run if script == PIXEL else pixel_run, run_dir)
    before = {p.name: digest(p) for p in run_dir.iterdir() if p.is_file()}
    proc = run_script(script, mode, run_dir / "checkpoint.pt", "--total-timesteps", "100000", cwd=tmp_path, check=False)
    assert_clean_error(proc, "agent")
    assert {p.name: digest(p) for p in run_dir.iterdir() if p.is_file()} == before


def test_checkpoint_of_another_env_is_refused(pixel_run, tmp_path):
    ckpt = load_ckpt(pixel_run / "checkpoint.pt")
    ckpt["env_id"] = "PongNoFrameskip-v4"
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "checkpoint.pt"
    torch.save(ckpt, path)
    before = digest(path)
    proc = run_script(PIXEL, "--resume", path, "--env-id", ENV_ID, "--total-timesteps", "100000", cwd=tmp_path, check=False)
    assert_clean_error(proc, "PongNoFrameskip-v4")
    assert digest(path) == before and sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("script", [PIXEL, RAM])
def test_unwritable_runs_dir_is_refused(script, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    extra = ["--ram-vars", write_ram_vars(tmp_path / "rv.json")] if script == RAM else []
    proc = run_script(script, "--env-id", ENV_ID, *extra, *TINY, "--runs-dir", blocker / "runs", cwd=tmp_path, check=False)
    assert_clean_error(proc, "cannot write")
    assert blocker.read_text() == "keep me"


def test_bad_command_line_is_one_line(tmp_path):
    proc = run_script(PIXEL, "--num-envs", "many", "--runs-dir", tmp_path / "runs", cwd=tmp_path, check=False)
    assert_clean_error(proc, "--num-envs")
    assert len(proc.stderr.strip().splitlines()) == 1
