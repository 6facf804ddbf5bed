"""Throughput of the two PPO agents against their raw environments, on the machine it runs on.

    python bench/bench_throughput.py                      # about 1-2 minutes on 2 CPU cores
    python bench/bench_throughput.py --flags              # + (e): --channels-last and --compile, ~8 more minutes

Prints agent steps per second (one step = one agent decision in one env = 4 emulator frames) of
  (a) the raw AtariVectorEnv with random actions (the pixel agent's env, same settings and num_envs),
  (b) ppo_pixel_breakout.py training (its own SPS: global steps / training seconds, updates included),
  (c) the raw gymnasium RAM vector env with random actions (the memory agent's env, all 128 bytes),
  (d) ppo_ram_breakout.py training,
  (e) with --flags: the pixel agent's --channels-last and both agents' --compile, each against its off setting,
      as the median update and inference seconds per iteration (from the runs' perf/* TensorBoard tags),
the ratios training / raw, and each training script's time split (emulation, inference / action
selection, PPO update, logging + checkpoints) as the script itself prints it at the end of a run.
The machine (CPU model, cores, load, torch device) is printed first: on shared cores the figures move
with the load. Not a timed test; the environments are built by the training scripts' own `make_envs`.
"""
import contextlib
import importlib.util
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    env_id: str = "BreakoutNoFrameskip-v4"
    """the ALE id to measure"""
    num_envs: int = 8
    """parallel envs, raw and in training (the scripts' default)"""
    raw_seconds: float = 10.0
    """how long to step each raw env with random actions"""
    pixel_steps: int = 2048
    """training budget of the pixel run (global steps; 2 iterations of 8 x 128)"""
    ram_steps: int = 4096
    """training budget of the RAM run (global steps; 4 iterations of 8 x 128)"""
    ram_vars: str = ""
    """RAM-variable file for the RAM run (default: a temporary one selecting all 128 bytes)"""
    torch_threads: int = 0
    """passed to both training scripts (0: their default)"""
    flags: bool = False
    """(e): also compare `--channels-last` (pixel) and `--compile` (both agents) with their off setting"""
    flag_iterations: int = 6
    """iterations of each (e) run; the first 2 (where torch.compile compiles) are not timed"""


def parse_args():
    """tyro.cli, with tyro's boxed error message squeezed into one `error:` line (as the training scripts do)."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args = tyro.cli(Args)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        lines = [l.strip(" │╭╮╰╯─┃━") for l in captured.getvalue().splitlines()]
        lines = [l for l in lines if l and not l.startswith(("For full helptext", "Argument helptext"))]
        sys.exit("error: bad command line: " + (lines[1] if len(lines) > 1 else " ".join(lines) or "see --help"))
    if args.flags and args.flag_iterations < 3:
        sys.exit("error: --flag-iterations must be >= 3 (iterations 1-2 are not timed)")
    return args


def load_script(name):
    spec = importlib.util.spec_from_file_location(name[:-3], ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine():
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{cpu}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__} on {device}"


def raw_sps(envs, reset_action, seconds, life_loss_key=None):
    """Random actions (FIRE after a terminal, as in training) for `seconds`; agent steps per second."""
    rng = np.random.default_rng(0)
    n = envs.num_envs
    envs.reset(seed=1)
    done = np.zeros(n, dtype=bool)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        action = rng.integers(envs.single_action_space.n, size=n)
        action[done] = reset_action
        _, _, terminations, truncations, infos = envs.step(action)
        done = terminations | truncations | (infos[life_loss_key] if life_loss_key else False)
        steps += n
    return steps / (time.perf_counter() - start)


def train_sps(script, args, budget, extra):
    """Run a training script with a small budget; return (SPS, time split line, wall seconds, perf) where
    perf is {"update": [seconds of iteration 1, 2, ...], "inference": [...], ...} from its perf/* tags."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, str(ROOT / script), "--env-id", args.env_id, "--num-envs", str(args.num_envs),
               "--total-timesteps", str(budget), "--save-interval", "1000000", "--runs-dir", runs,
               "--torch-threads", str(args.torch_threads), *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"error: {script} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        events = EventAccumulator(str(next(Path(runs).iterdir())), size_guidance={"scalars": 0})
        events.Reload()
        perf = {tag.split("/")[1][: -len("_seconds")]: [e.value for e in events.Scalars(tag)]
                for tag in events.Tags()["scalars"] if tag.startswith("perf/")}
    sps = int(re.findall(r"SPS=(\d+)", proc.stdout)[-1])
    split = next(l for l in proc.stdout.splitlines() if l.startswith("time split:"))
    return sps, split[len("time split: "):], wall, perf


def flag_comparison(script, args, extra, off, on):
    """Train `script` with the flags `off`, then `on` (same seed and budget, args.flag_iterations iterations each);
    print the median seconds per iteration of the update and of inference over iterations 3.. (the first two
    hold torch.compile's compilation), and each whole run's wall time."""
    budget = args.flag_iterations * args.num_envs * 128
    runs = []
    for flags in (off, on):
        _, _, wall, perf = train_sps(script, args, budget, extra + flags)
        runs.append({k: float(np.median(perf[k][2:])) for k in ("update", "inference")} | {"wall": wall})
    a, b = runs
    print(f"    {script} {' '.join(off) or '(default)'} -> {' '.join(on)}, median s/iteration over iterations "
          f"3-{args.flag_iterations}: update {a['update']:.2f} -> {b['update']:.2f} (x{a['update'] / b['update']:.2f} "
          f"faster), inference {a['inference']:.2f} -> {b['inference']:.2f} (x{a['inference'] / b['inference']:.2f}); "
          f"whole run with start-up {a['wall']:.0f}s -> {b['wall']:.0f}s", flush=True)


if __name__ == "__main__":
    args = parse_args()
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    print(f"machine: {machine()}", flush=True)
    pixel, ram = load_script("ppo_pixel_breakout.py"), load_script("ppo_ram_breakout.py")

    envs, reset_action = pixel.make_envs(args.env_id, args.num_envs, 0)
    a = raw_sps(envs, reset_action, args.raw_seconds)
    envs.close()
    print(f"(a) raw AtariVectorEnv, {args.num_envs} envs, random actions: {a:,.0f} agent steps/s", flush=True)

    b, b_split, b_wall, _ = train_sps("ppo_pixel_breakout.py", args, args.pixel_steps, [])
    print(f"(b) ppo_pixel_breakout.py training ({args.pixel_steps} steps, {b_wall:.0f}s with start-up): {b:,} SPS"
          f" = {b / a:.1%} of raw\n      time split: {b_split}", flush=True)

    envs, reset_action = ram.make_envs(args.env_id, args.num_envs, list(range(128)), False)
    c = raw_sps(envs, reset_action, args.raw_seconds, life_loss_key="life_loss")
    envs.close()
    print(f"(c) raw RAM SyncVectorEnv, {args.num_envs} envs, random actions: {c:,.0f} agent steps/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        ram_vars = args.ram_vars
        if not ram_vars:
            ram_vars = os.path.join(tmp, "ram_vars.json")
            with open(ram_vars, "w") as f:
                json.dump({"format": "memory-pixel-interp/ram-vars", "version": 1, "env_id": args.env_id,
                           "game": ram.game_from_env_id(args.env_id), "selected": list(range(128)),
                           "excluded": {}, "selection_rule": "all 128 bytes (bench_throughput.py)"}, f)
        d, d_split, d_wall, _ = train_sps("ppo_ram_breakout.py", args, args.ram_steps, ["--ram-vars", ram_vars])
        print(f"(d) ppo_ram_breakout.py training ({args.ram_steps} steps, {d_wall:.0f}s with start-up): {d:,} SPS"
              f" = {d / c:.1%} of raw\n      time split: {d_split}", flush=True)
        if args.flags:
            print("(e) speed flags, each against its off setting (same seed and budget):", flush=True)
            flag_comparison("ppo_pixel_breakout.py", args, [], ["--no-channels-last"], ["--channels-last"])
            flag_comparison("ppo_pixel_breakout.py", args, [], [], ["--compile"])
            flag_comparison("ppo_ram_breakout.py", args, ["--ram-vars", ram_vars], [], ["--compile"])
    print(f"ratios training/raw: pixel {b / a:.3f}, RAM {d / c:.3f}; RAM/pixel training {d / b:.1f}x")
