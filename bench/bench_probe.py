"""Benchmark: probe samples per second of probe_function_vectors.py next to the raw emulator frame rate.

A probe sample = restore a base state, set one RAM byte before each of 16 emulated frames (4 agent steps
of frame skip 4), build the 84x84 4-frame stack, forward it through the pixel agent with every layer
hooked. The raw rate is one ALEInterface playing random actions without reading the screen. The ratio
(probe samples/s per raw frame/s) is at most 1/16 = 0.0625 if emulation were the only cost.

Without checkpoints it makes random-initialised agents (FORMATS.md §2/§3) and a ram vars file whose selected
bytes are those that changed during random play (found from the emulator), in a temporary folder.

Usage: python bench/bench_probe.py [--pixel-checkpoint P --ram-checkpoint R --ram-vars J] [--num-base-states 16]
"""
import contextlib
import io
import json
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import tyro
from ale_py import ALEInterface, LoggerMode, roms
from torch.distributions.categorical import Categorical


@dataclass
class Args:
    pixel_checkpoint: str = ""
    """pixel agent checkpoint (default: a random-initialised one)"""
    ram_checkpoint: str = ""
    """memory agent checkpoint (default: a random-initialised one)"""
    ram_vars: str = ""
    """ram vars file of the memory agent (default: bytes that change under random play)"""
    game: str = "breakout"
    """ALE ROM name of the generated inputs and of the raw-rate measurement"""
    num_base_states: int = 16
    """probe: base states"""
    samples_per_var: int = 8
    """probe: values drawn per variable per base state"""
    top_k: int = 8
    """probe: variables"""
    num_workers: int = 1
    """probe: emulator processes"""
    raw_seconds: float = 5.0
    """how long to measure the raw emulator frame rate"""
    seed: int = 1
    """seed"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {"num_base_states": "[2, inf)", "samples_per_var": "[1, inf)", "top_k": "[0, inf)", "num_workers": "[1, inf)",
          "raw_seconds": "(0, inf)", "seed": "[0, 2147483647]"}


def fail(message):
    """Bad input: one line `error: ...` on stderr, exit code 2, nothing written."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_args(default=None):
    """tyro.cli on Args, with tyro's boxed error message squeezed into one `error:` line (exit code 2). --help shows
    the module docstring and every flag. default: an Args whose values replace the declared defaults."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(Args, default=default, description=__doc__)
    except SystemExit as e:
        if e.code in (0, None):  # --help
            sys.stderr.write(captured.getvalue())
            raise
        lines = [l.strip().strip("│┃").strip() for l in captured.getvalue().splitlines()]
        boxed = bool(lines) and lines[0].startswith("╭")  # ╭─ title ─╮, the message, a ─── rule, a hint, ╰───╯
        message = []
        for l in lines[1:] if boxed else lines:
            if boxed and (not l or set(l) <= set("─━╰╯ ")):
                break
            message.append(l)
        fail("bad command line: " + (" ".join(m for m in message if m) or "see --help"))


def check_ranges(args, ranges):
    """Refuse a numeric flag outside its valid range with one `error:` line (exit code 2). ranges: {field: interval},
    the interval written as in maths, "[1, inf)" or "(0, 1]"; a field left at None (an unset optional flag) passes."""
    for name, interval in ranges.items():
        value = getattr(args, name)
        if value is None:
            continue
        low, high = (float(x) for x in interval[1:-1].split(","))
        above = value > low or (interval[0] == "[" and value == low)
        below = value < high or (interval[-1] == "]" and value == high)
        if not (above and below):  # NaN is neither
            bound = f"in {interval}"
            if high == float("inf") and low > float("-inf"):
                bound = f"{'>=' if interval[0] == '[' else '>'} {interval[1:].split(',')[0]}"
            fail(f"--{name.replace('_', '-')} must be {bound}, got {value}")


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


def new_ale(game, seed):
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(roms.get_rom_path(game))
    return ale


def raw_frame_rate(game, seconds, seed):
    ale = new_ale(game, seed)
    actions = ale.getMinimalActionSet()
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(actions), size=100_000)
    frames, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        for a in picks[:1000]:
            ale.act(actions[a])
            if ale.game_over():
                ale.reset_game()
        frames += 1000
    return frames / (time.time() - t0)


def make_inputs(folder: Path, game: str, seed: int):
    """Random-initialised checkpoints + a ram vars file of the bytes that changed during random play."""
    ale = new_ale(game, seed)
    actions = ale.getMinimalActionSet()
    rng = np.random.default_rng(seed)
    rams = []
    for _ in range(5000):
        ale.act(actions[rng.integers(len(actions))])
        rams.append(ale.getRAM().copy())
        if ale.game_over():
            ale.reset_game()
    rams = np.array(rams)
    selected = [i for i in range(128) if len(np.unique(rams[:, i])) > 1]
    records = [{"index": i, "address": f"0x{0x80 + i:02X}", "kind": "state" if i in selected else "constant",
                "selected": i in selected, "reason": "benchmark: changed under random play", "min": int(rams[:, i].min()),
                "max": int(rams[:, i].max()), "n_distinct": int(len(np.unique(rams[:, i]))), "change_rate": 0.0,
                "intervention": {}} for i in range(128)]
    env_id = "".join(p.capitalize() for p in game.split("_")) + "NoFrameskip-v4"
    ram_vars = {"format": "memory-pixel-interp/ram-vars", "version": 1, "env_id": env_id, "game": game, "selected": selected,
                "excluded": {str(i): "constant" for i in range(128) if i not in selected}, "bytes": records,
                "selection_rule": "benchmark", "produced_by": {"script": "bench/bench_probe.py"}}
    (folder / "ram_vars.json").write_text(json.dumps(ram_vars))
    torch.manual_seed(seed)
    n = len(actions)
    for kind, model, kwargs in (("pixel", Agent(n), {"n_actions": n, "in_channels": 4}),
                                ("ram", RamAgent(n, len(selected)), {"n_actions": n, "n_ram": len(selected), "hidden": 256})):
        torch.save({"format": "memory-pixel-interp/checkpoint", "version": 1, "agent": kind, "env_id": env_id, "game": game,
                    "model_kwargs": kwargs, "state_dict": model.state_dict(), "optimizer": None, "global_step": 0,
                    "iteration": 0, "args": {}, "run_name": "bench", "wall_seconds": 0.0,
                    "ram_indices": selected if kind == "ram" else None, "ram_vars": ram_vars if kind == "ram" else None,
                    "rng": {}}, folder / f"{kind}.pt")
    return folder / "pixel.pt", folder / "ram.pt", folder / "ram_vars.json"


def main(args: Args):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.pixel_checkpoint and args.ram_checkpoint and args.ram_vars:
            pixel, ram, ram_vars = args.pixel_checkpoint, args.ram_checkpoint, args.ram_vars
        else:
            pixel, ram, ram_vars = make_inputs(tmp, args.game, args.seed)
        raw = raw_frame_rate(args.game, args.raw_seconds, args.seed)
        print(f"raw emulator: {raw:,.0f} frames/s (one ALEInterface, random actions)", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve().parent.parent / "probe_function_vectors.py"),
               "--pixel-checkpoint", str(pixel), "--ram-checkpoint", str(ram), "--ram-vars", str(ram_vars),
               "--out-dir", str(tmp / "out"), "--no-report", "--num-base-states", str(args.num_base_states),
               "--samples-per-var", str(args.samples_per_var), "--top-k", str(args.top_k),
               "--num-workers", str(args.num_workers), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
            print("error: the probe run failed", file=sys.stderr)
            raise SystemExit(1)
        t = json.loads((tmp / "out" / "results.json").read_text())["timing"]
    sps = t["probe_samples_per_s"]
    emu_sps = t["frames_emulated"] / 16 / t["emulation_s"]
    print(f"probe: {sps:,.1f} samples/s (set RAM -> render 16 frames -> forward), {sps * 16:,.0f} frames/s; "
          f"emulation alone {emu_sps:,.1f} samples/s")
    print(f"ratio: {sps / raw:.4f} probe samples per raw frame (1/16 = 0.0625 if emulation were the only cost); "
          f"probe frame throughput = {sps * 16 / raw:.0%} of the raw emulator")


if __name__ == "__main__":
    cli = parse_args()
    check_ranges(cli, RANGES)
    main(cli)
