"""Throughput of the two PPO agents against their raw environments, and the measured gain of each speed flag.

    python bench/bench_throughput.py                      # (a)-(d), 2 interleaved rounds
    python bench/bench_throughput.py --rounds 1 --compile # + --compile, one round

Prints agent steps per second (one step = one agent decision in one env = 4 emulator frames) of
  (a) the raw AtariVectorEnv with random actions (the pixel agent's env, same settings and num_envs),
  (b) ppo_pixel_breakout.py training at its defaults, and with each speed setting turned off
      (--precision fp32, --no-channels-last, --torch-threads 1): default / off is that setting's gain,
  (c) the raw RAM vector env with random actions (the memory agent's env, all 128 bytes), with the envs
      in one process and split over --env-processes,
  (d) ppo_ram_breakout.py training at its defaults, and with --env-processes 1 (its speed setting) turned off,
the ratios training / raw, and each default run's time split (emulation, inference / action selection,
PPO update, logging + checkpoints) as the script itself prints it at the end of a run.
Runs are interleaved (A B C ... A B C ...) over --rounds rounds and medians are printed, so a load change
hits every setting alike. The SPS of a training run is its last iteration's (global steps / seconds since
start, the first iteration included, as CleanRL's `charts/SPS`). The machine (CPU model, cores, load, torch
device) is printed first: measure on a quiet machine (load average < 0.3); the bench warns otherwise.
Not a timed test; the environments are built by the training scripts' own `make_envs`.
"""
import contextlib
import importlib
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
    raw_seconds: float = 8.0
    """how long to step each raw env with random actions, per round"""
    pixel_steps: int = 8192
    """training budget of each pixel run (global steps; 8 iterations of 8 x 128)"""
    ram_steps: int = 16384
    """training budget of each RAM run (global steps; 16 iterations of 8 x 128)"""
    ram_vars: str = ""
    """RAM-variable file for the RAM runs (default: a temporary one selecting all 128 bytes)"""
    rounds: int = 2
    """interleaved rounds; each figure is the median over rounds"""
    compile: bool = False
    """also time --compile (both agents) against the default, as the median update and inference seconds per
    iteration over iterations 3.. (torch.compile compiles in iterations 1-2)"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {"num_envs": "[1, inf)", "raw_seconds": "(0, inf)", "pixel_steps": "[1, inf)", "ram_steps": "[1, inf)",
          "rounds": "[1, inf)"}


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


def load_script(name):
    # imported by its own name from the project folder, so that processes it spawns can import it too
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(name[:-3])


def machine():
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"{cpu}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__} on {device}"


def check_quiet():
    """Warn when the machine is busy: figures taken beside other work have misled before."""
    if hasattr(os, "getloadavg") and os.getloadavg()[0] >= 0.3:
        print(f"warning: load average {os.getloadavg()[0]:.2f} >= 0.3: other work shares the cores; figures are low "
              f"and noisy", flush=True)


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
               "--total-timesteps", str(budget), "--save-interval", "1000000", "--runs-dir", runs, *extra]
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


def interleaved(settings, rounds, measure):
    """{name: [result of round 1, 2, ...]}: every setting once per round, in order, round after round."""
    results = {name: [] for name in settings}
    for _ in range(rounds):
        for name, extra in settings.items():
            results[name].append(measure(extra))
    return results


def median(values):
    return float(np.median(values))


def print_settings(label, results, default, raw):
    base = median([r[0] for r in results[default]])
    for name, runs in results.items():
        sps = median([r[0] for r in runs])
        gain = "" if name == default else f"; the setting's gain {base / sps:.2f}x"
        print(f"    {label} {name:<28} {sps:7,.0f} SPS (runs: {', '.join(f'{r[0]:,}' for r in runs)}) = {sps / raw:.1%} of raw{gain}",
              flush=True)
    print(f"      time split of the default ({default}), last round: {results[default][-1][1]}", flush=True)
    return base


def compile_comparison(script, args, extra):
    """Median update and inference seconds per iteration over iterations 3.., eager vs --compile."""
    runs = []
    for flags in ([], ["--compile"]):
        _, _, wall, perf = train_sps(script, args, 6 * args.num_envs * 128, extra + flags)
        runs.append({k: float(np.median(perf[k][2:])) for k in ("update", "inference")} | {"wall": wall})
    a, b = runs
    print(f"    {script} --compile: update {a['update']:.2f} -> {b['update']:.2f} s/iteration (x{a['update'] / b['update']:.2f}),"
          f" inference {a['inference']:.2f} -> {b['inference']:.2f} (x{a['inference'] / b['inference']:.2f}); whole run with "
          f"start-up {a['wall']:.0f}s -> {b['wall']:.0f}s", flush=True)


if __name__ == "__main__":
    args = parse_args()
    check_ranges(args, RANGES)
    if min(args.pixel_steps, args.ram_steps) < 4 * 128 * args.num_envs:
        fail("--pixel-steps and --ram-steps must cover at least 4 iterations (4 x 128 x num_envs)")
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    print(f"machine: {machine()}", flush=True)
    check_quiet()
    pixel, ram = load_script("ppo_pixel_breakout.py"), load_script("ppo_ram_breakout.py")
    cores = pixel.usable_cores()

    def raw_pixel(_):
        envs, reset_action = pixel.make_envs(args.env_id, args.num_envs, 0)
        try:
            return raw_sps(envs, reset_action, args.raw_seconds)
        finally:
            envs.close()

    a = median(interleaved({"": None}, args.rounds, raw_pixel)[""])
    print(f"(a) raw AtariVectorEnv, {args.num_envs} envs, {min(args.num_envs, cores)} threads, random actions: "
          f"{a:,.0f} agent steps/s", flush=True)

    pixel_settings = {"defaults": [], "--precision fp32": ["--precision", "fp32"],
                      "--no-channels-last": ["--no-channels-last"], "--torch-threads 1": ["--torch-threads", "1"]}
    results = interleaved(pixel_settings, args.rounds, lambda extra: train_sps("ppo_pixel_breakout.py", args, args.pixel_steps, extra)[:2])
    print(f"(b) ppo_pixel_breakout.py training, {args.pixel_steps} steps per run, median of {args.rounds}:", flush=True)
    b = print_settings("pixel", results, "defaults", a)

    with tempfile.TemporaryDirectory() as tmp:
        ram_vars = args.ram_vars
        if not ram_vars:
            ram_vars = os.path.join(tmp, "ram_vars.json")
            with open(ram_vars, "w") as f:
                json.dump({"format": "memory-pixel-interp/ram-vars", "version": 1, "env_id": args.env_id,
                           "game": ram.game_from_env_id(args.env_id), "selected": list(range(128)),
                           "excluded": {}, "selection_rule": "all 128 bytes (bench_throughput.py)"}, f)

        def raw_ram(processes):
            envs, reset_action = ram.make_envs(args.env_id, args.num_envs, list(range(128)), False, processes=processes)
            try:
                return raw_sps(envs, reset_action, args.raw_seconds, life_loss_key="life_loss")
            finally:
                envs.close()

        split = min(args.num_envs, cores)
        raws = interleaved({1: 1, split: split}, args.rounds, raw_ram)
        c1, c = median(raws[1]), median(raws[split])
        print(f"(c) raw RAM vector env, {args.num_envs} envs, random actions: {c1:,.0f} agent steps/s in one process, "
              f"{c:,.0f} split over {split} processes (x{c / c1:.2f})", flush=True)

        ram_settings = {"defaults": [], "--env-processes 1": ["--env-processes", "1"]}
        results = interleaved(ram_settings, args.rounds,
                              lambda extra: train_sps("ppo_ram_breakout.py", args, args.ram_steps, ["--ram-vars", ram_vars, *extra])[:2])
        print(f"(d) ppo_ram_breakout.py training, {args.ram_steps} steps per run, median of {args.rounds}:", flush=True)
        d = print_settings("RAM", results, "defaults", c)
        if args.compile:
            print("(e) --compile against eager (same seed and budget):", flush=True)
            compile_comparison("ppo_pixel_breakout.py", args, [])
            compile_comparison("ppo_ram_breakout.py", args, ["--ram-vars", ram_vars])
    check_quiet()
    print(f"ratios training/raw at the defaults: pixel {b / a:.3f}, RAM {d / c:.3f}; RAM/pixel training {d / b:.1f}x")
