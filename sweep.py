"""Run the whole memory-vs-pixel interpretation pipeline over many Atari games, with a cross-game index.

For each game of a list, `sweep.py` runs the project's scripts one after the other, each as a subprocess,
in the game's own folder (`<out-dir>/<game>/`, where `<game>` is the env id with `/` -> `_`):

    extract  extract_ram_vars.py       --env-id ID --out-dir ram_vars            -> ram_vars/<game>.json
    ram      ppo_ram_breakout.py       --env-id ID --ram-vars ram_vars/<game>.json --total-timesteps N
                                       --runs-dir runs                           -> runs/<run>/ (agent "ram")
    pixel    ppo_pixel_breakout.py     --env-id ID --total-timesteps N --runs-dir runs -> runs/<run>/ ("pixel")
    compare  compare_runs.py           runs/<ram run> runs/<pixel run> --out-dir compare
    probe    probe_function_vectors.py --pixel-checkpoint .. --ram-checkpoint .. --ram-vars .. --out-dir probe

and then writes `<out-dir>/index.json` and a self-contained `<out-dir>/index.html` that links every game's
reports and summarises, per game, the RAM bytes found, both agents' returns, the best probe scores and the
status/time of each step. Each step's stdout/stderr go to `<game>/logs/<step>.{stdout,stderr}.log`.
A game's 30-game evaluations (the training scripts' `--eval-out` files in `<game>/eval/*.json`) are shown too.
Games run by other means join the index with a `status.json` of the same schema in a folder of --out-dir
(docs/results/five_games/run_game.sh, stage `index`): its optional "folder" names the game's results folder,
relative to --out-dir (e.g. `../breakout_10m`; default the status.json's own folder), "ram_vars" the RAM file
relative to that folder (default: found in its ram_vars/), and "eval" {name: path} its evaluations.

Resumable: `<game>/status.json` records every step (command, status, time, outputs). A step is skipped
when it is recorded as done with the same command AND its outputs are still there and complete; a step
re-runs when a step it depends on ran again. A failing step (non-zero exit, timeout) is recorded with
the reason and the last lines of its stderr, the game stops there, and the sweep goes on with the others;
the next sweep tries it again. A game being run by another sweep (lock `<game>/logs/.lock`) is left to it.

Scale-out: locally a `concurrent.futures.ProcessPoolExecutor` of `--workers` processes runs games in
parallel; on a cluster a Slurm job array runs one game per task (`--only-index $SLURM_ARRAY_TASK_ID`, see
docs/sweep_slurm.sh) and a last `--index-only` job rebuilds the index from the folders. Stopping the sweep
(Ctrl-C, SIGTERM) stops the running steps (SIGINT first: the training scripts save their checkpoint) and
records them as interrupted; the next run continues an interrupted training run with its `--resume`.
Exit code: 0 every game ran without failure, 1 some game failed or timed out (all named in the index),
2 bad input, 130 stopped.

    python sweep.py --total-timesteps 2000000                        # default list of 24 games
    python sweep.py --games BreakoutNoFrameskip-v4 PongNoFrameskip-v4 --workers 2 --total-timesteps 256 \
        --train-args="--num-envs 2 --num-steps 32" --extract-args="--total-frames 2000"
    python sweep.py --all-extract --extract-timeout 600               # extractor only, every ROM of ale-py
    python sweep.py --index-only                                      # rebuild sweep/index.{json,html}
    python sweep.py --index-only --findings                           # + findings.{md,json,png}: what holds across
                                                                      #   the games with a whole pair (docs/sweep.md)
"""
import base64
import contextlib
import fcntl
import html
import io
import json
import os
import posixpath
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

# The default list: 24 games of different kinds (a kind is only shown in the index; nothing depends on it).
DEFAULT_GAMES = [
    ("BreakoutNoFrameskip-v4", "paddle"), ("PongNoFrameskip-v4", "paddle"), ("VideoPinballNoFrameskip-v4", "paddle"),
    ("SpaceInvadersNoFrameskip-v4", "shooter"), ("SeaquestNoFrameskip-v4", "shooter"),
    ("BeamRiderNoFrameskip-v4", "shooter"), ("AsteroidsNoFrameskip-v4", "shooter"),
    ("CentipedeNoFrameskip-v4", "shooter"), ("DemonAttackNoFrameskip-v4", "shooter"),
    ("MsPacmanNoFrameskip-v4", "maze"), ("AlienNoFrameskip-v4", "maze"), ("AmidarNoFrameskip-v4", "maze"),
    ("BankHeistNoFrameskip-v4", "maze"), ("MontezumaRevengeNoFrameskip-v4", "platformer"),
    ("PitfallNoFrameskip-v4", "platformer"), ("FrostbiteNoFrameskip-v4", "platformer"),
    ("KangarooNoFrameskip-v4", "platformer"), ("HeroNoFrameskip-v4", "platformer"),
    ("FreewayNoFrameskip-v4", "sports"), ("BoxingNoFrameskip-v4", "sports"), ("TennisNoFrameskip-v4", "sports"),
    ("IceHockeyNoFrameskip-v4", "sports"), ("BowlingNoFrameskip-v4", "sports"), ("EnduroNoFrameskip-v4", "racing"),
]
STEPS = ("extract", "ram", "pixel", "compare", "probe")
SCRIPTS = {"extract": "extract_ram_vars.py", "ram": "ppo_ram_breakout.py", "pixel": "ppo_pixel_breakout.py",
           "compare": "compare_runs.py", "probe": "probe_function_vectors.py"}
# A done step re-runs when one of these finished again after it (its inputs changed).
DEPENDS = {"extract": (), "ram": ("extract",), "pixel": (), "compare": ("ram", "pixel"),
           "probe": ("extract", "ram", "pixel")}
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class Args:
    """Run extract -> memory agent -> pixel agent -> compare -> probe over many Atari games, then index them."""

    games: Optional[list[str]] = None
    """env ids to sweep (e.g. BreakoutNoFrameskip-v4 ALE/Pong-v5); default: the built-in list of 24 games
    (with --all-extract: every ROM ale-py ships; with --index-only: every game folder found)"""
    out_dir: str = "sweep"
    """the sweep folder: one sub-folder per game, plus index.json and index.html"""
    total_timesteps: int = 10_000_000
    """env steps per agent and game (passed as --total-timesteps to both training scripts)"""
    workers: int = usable_cores()
    """games run in parallel (local process pool, one game per worker at a time); default: the cores this process
    may use (its CPU affinity: a Slurm task's allocation where the cluster binds tasks to their CPUs)"""
    steps: tuple[str, ...] = STEPS
    """which steps to run, among: extract ram pixel compare probe (the others are neither run nor skipped)"""
    only_index: Optional[int] = None
    """run only the game at this 0-based position of the game list (a Slurm array task id)"""
    index_only: bool = False
    """run nothing: rebuild index.json and index.html from the game folders"""
    findings: bool = False
    """with --index-only: also write what holds across the games whose pair is trained, evaluated, compared and probed
    (findings.{json,md,png} and findings_scores.png in --out-dir): per kind of variable the extractor names and per
    game, the probe's verdicts against its controls; per game, steps and wall time to a common score level (a
    compare_runs.py --threshold run per game, into its results folder's compare_common_level/) and the 30-game scores; aggregated across
    games with rliable (interquartile mean of human-normalised scores, stratified bootstrap confidence intervals)"""
    findings_max_steps: int = 0
    """--findings: read every training run as if it had stopped at this env step (0: to its end), e.g. 5000000 for
    pairs trained longer than the others"""
    all_extract: bool = False
    """run only the extractor, on every ROM the installed ale-py ships (or on --games), with --extract-timeout
    per game, and print the time per game"""
    list_games: bool = False
    """print the game list (position and env id, one per line) and exit; its length sizes a Slurm array"""
    dry_run: bool = False
    """print each game's commands and whether they would run or be skipped, run nothing"""
    force: bool = False
    """re-run the selected steps even if they are done"""
    extract_args: str = ""
    """extra arguments for extract_ram_vars.py, one string, e.g. --extract-args="--total-frames 2000" (note the =)"""
    train_args: str = ""
    """extra arguments for BOTH training scripts, e.g. --train-args="--num-envs 8 --seed 1" """
    ram_args: str = ""
    """extra arguments for ppo_ram_breakout.py only"""
    pixel_args: str = ""
    """extra arguments for ppo_pixel_breakout.py only"""
    compare_args: str = ""
    """extra arguments for compare_runs.py"""
    probe_args: str = ""
    """extra arguments for probe_function_vectors.py (its budget flags)"""
    extract_timeout: float = 1800.0
    """seconds the extractor may run per game before it is stopped and the game marked 'timeout' (0: no limit)"""
    step_timeout: float = 0.0
    """seconds any other step may run per game (0: no limit)"""
    scripts_dir: Optional[str] = None
    """folder holding the five scripts; default: the folder of sweep.py"""
    tail_lines: int = 20
    """how many last stderr lines of a failed step are kept in status.json and the index"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {"findings_max_steps": "[0, inf)", "total_timesteps": "[1, inf)", "workers": "[1, inf)", "only_index": "[0, inf)", "extract_timeout": "[0, inf)",
          "step_timeout": "[0, inf)", "tail_lines": "[1, inf)"}


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


def folder_of(env_id):
    return env_id.replace("/", "_")


def write_atomic(path, write):
    """Write `path` via a temp file in the same folder + fsync + os.replace (FORMATS.md)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def read_json(path):
    """The parsed JSON dict at path, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None


def now_iso():
    """Local time with microseconds: also the stamp a step's dependants compare to see it ran again."""
    return datetime.now().astimezone().isoformat(timespec="microseconds")


def all_rom_env_ids():
    """One env id per ROM of the installed ale-py: <X>NoFrameskip-v4 if registered, else ALE/<X>-v5.

    A ROM with no registered gymnasium id (multi-player ROMs) gets the ALE/<X>-v5 spelling anyway, so the
    extractor itself says whether it can handle it, and the index names it with that reason.
    """
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    by_rom = {}
    for env_id, spec in gym.registry.items():
        kw = spec.kwargs or {}
        rom = kw.get("game")
        if not rom or kw.get("obs_type", "rgb") == "ram" or "-ram" in env_id:
            continue
        if env_id.endswith("NoFrameskip-v4") and "/" not in env_id:
            by_rom.setdefault(rom, {})["nf"] = env_id
        elif env_id.startswith("ALE/") and env_id.endswith("-v5"):
            by_rom.setdefault(rom, {})["v5"] = env_id
    out = []
    for rom in ale_py.roms.get_all_rom_ids():
        ids = by_rom.get(rom, {})
        camel = "".join(p[:1].upper() + p[1:] for p in rom.split("_"))
        out.append(ids.get("nf") or ids.get("v5") or f"ALE/{camel}-v5")
    return out


def game_list(args):
    """[(env_id, kind)] for this invocation (before --only-index)."""
    if args.games is not None:
        kinds = dict(DEFAULT_GAMES)
        return [(g, kinds.get(g, "")) for g in args.games]
    if args.all_extract:
        kinds = dict(DEFAULT_GAMES)
        return [(g, kinds.get(g, "")) for g in all_rom_env_ids()]
    return list(DEFAULT_GAMES)


# ----------------------------------------------------------------------------------------------------------
# Step outputs: where they are and whether they are complete (the output is the proof a step is done)
# ----------------------------------------------------------------------------------------------------------
def ram_vars_ok(path, env_id):
    """Whether path holds a complete ram_vars JSON (all 128 bytes) for env_id."""
    rv = read_json(path)
    return bool(rv) and rv.get("format") == "memory-pixel-interp/ram-vars" and rv.get("env_id") == env_id \
        and len(rv.get("bytes", [])) == 128


def find_ram_vars(game_dir, env_id):
    """Relative path of the complete ram_vars JSON for env_id in game_dir, or None."""
    cands = [game_dir / "ram_vars" / f"{folder_of(env_id)}.json"] + sorted((game_dir / "ram_vars").glob("*.json"))
    for p in cands:
        if ram_vars_ok(p, env_id):
            return str(p.relative_to(game_dir))
    return None


def run_ok(game_dir, run_dir, agent):
    """A finished training run folder: run.json says finished, right agent, and the checkpoint is there."""
    if not run_dir:
        return False
    meta = read_json(game_dir / run_dir / "run.json")
    return bool(meta) and meta.get("status") == "finished" and meta.get("agent") == agent \
        and (game_dir / run_dir / "checkpoint.pt").is_file()


def compare_ok(game_dir, cmd):
    """compare/ holds a summary.json over exactly the run folders of this command, and its index.html."""
    summ = read_json(game_dir / "compare" / "summary.json") or {}
    names = {str(r.get("run_name")) for r in summ.get("runs") or [] if isinstance(r, dict)}
    wanted = {Path(a).name for a in cmd[1:3]}  # cmd = [compare_runs.py, <ram run>, <pixel run>, ...]
    return bool(wanted) and names == wanted and (game_dir / "compare" / "index.html").is_file()


def find_probe_dir(game_dir, cmd=None):
    """The probe output folder (probe/, or probe/<env-id>/) holding a results.json (of the checkpoints of
    this command, when given), or None."""
    want = {k: cmd[cmd.index(f"--{k.replace('_', '-')}") + 1] for k in ("pixel_checkpoint", "ram_checkpoint")} \
        if cmd else {}
    for d in [game_dir / "probe"] + sorted((game_dir / "probe").glob("*/")):
        res = read_json(d / "results.json")
        if res is not None and res.get("format") == "memory-pixel-interp/probe" \
                and all((res.get("inputs") or {}).get(k) == v for k, v in want.items()):
            return str(d.relative_to(game_dir))
    return None


def outputs_ok(step, game_dir, env_id, rec):
    """Whether the outputs recorded for a done step are still there and complete."""
    out, cmd = rec.get("outputs") or {}, rec.get("cmd") or []
    if step == "extract":
        return out.get("ram_vars") is not None and find_ram_vars(game_dir, env_id) == out["ram_vars"]
    if step in ("ram", "pixel"):
        return run_ok(game_dir, out.get("run_dir"), step)
    if step == "compare":
        return compare_ok(game_dir, cmd)
    if step == "probe":
        return find_probe_dir(game_dir, cmd) is not None
    return False


def latest_run(game_dir, runs_before, agent, finished=False):
    """The newest run folder (relative to game_dir) not in runs_before whose run.json names this agent."""
    new = [d for d in (game_dir / "runs").glob("*/") if d.name not in runs_before]
    for d in sorted(new, key=lambda d: d.stat().st_mtime, reverse=True):
        rel = str(d.relative_to(game_dir))
        meta = read_json(d / "run.json") or {}
        if meta.get("agent") == agent and (not finished or run_ok(game_dir, rel, agent)):
            return rel
    return None


def collect_outputs(step, game_dir, env_id, cmd, runs_before, resumed=None):
    """After a step exited 0: its outputs, or (None, reason) when they are missing or incomplete."""
    if step == "extract":
        p = find_ram_vars(game_dir, env_id)
        return ({"ram_vars": p}, None) if p else (None, "exit 0 but no complete ram_vars/*.json for this env id")
    if step in ("ram", "pixel"):
        run = resumed if run_ok(game_dir, resumed, step) else latest_run(game_dir, runs_before, step, finished=True)
        if not run:
            return None, f"exit 0 but no finished '{step}' run folder (run.json + checkpoint.pt) under runs/"
        return {"run_dir": run}, None
    if step == "compare":
        if compare_ok(game_dir, cmd):
            return {"summary": "compare/summary.json", "html": "compare/index.html"}, None
        return None, "exit 0 but no compare/summary.json over these two runs, or no compare/index.html"
    if step == "probe":
        d = find_probe_dir(game_dir, cmd)
        if d:
            report = f"{d}/report.html" if (game_dir / d / "report.html").is_file() else None
            return {"dir": d, "results": f"{d}/results.json", "report": report}, None
        return None, "exit 0 but no complete probe/results.json"
    raise ValueError(step)


def step_argv(step, env_id, args, status):
    """The step's command line (paths relative to the game folder), or None when an input is missing."""
    out = {s: (status["steps"].get(s) or {}).get("outputs") or {} for s in STEPS}
    ram_vars = out["extract"].get("ram_vars")
    ram_run, pixel_run = out["ram"].get("run_dir"), out["pixel"].get("run_dir")
    if step == "extract":
        return ["--env-id", env_id, "--out-dir", "ram_vars", *shlex.split(args.extract_args)]
    if step == "ram":
        if not ram_vars:
            return None
        return ["--env-id", env_id, "--ram-vars", ram_vars, "--total-timesteps", str(args.total_timesteps),
                "--runs-dir", "runs", *shlex.split(args.train_args), *shlex.split(args.ram_args)]
    if step == "pixel":
        return ["--env-id", env_id, "--total-timesteps", str(args.total_timesteps), "--runs-dir", "runs",
                *shlex.split(args.train_args), *shlex.split(args.pixel_args)]
    if step == "compare":
        if not (ram_run and pixel_run):
            return None
        return [ram_run, pixel_run, "--out-dir", "compare", *shlex.split(args.compare_args)]
    if step == "probe":
        if not (ram_vars and ram_run and pixel_run):
            return None
        return ["--pixel-checkpoint", f"{pixel_run}/checkpoint.pt", "--ram-checkpoint", f"{ram_run}/checkpoint.pt",
                "--ram-vars", ram_vars, "--out-dir", "probe", *shlex.split(args.probe_args)]
    raise ValueError(step)


# ----------------------------------------------------------------------------------------------------------
# Running one game (inside a pool worker)
# ----------------------------------------------------------------------------------------------------------
_RUNNING = None    # (subprocess, on_stop) of the step this pool worker is running, if any
_SPAWNING = False  # the step's subprocess is being started (not yet in _RUNNING)
_STOPPING = 0      # the number of the stop signal that arrived in this worker, if any


def _on_signal(signum, frame):
    """SIGINT/SIGTERM in a pool worker: stop the running step, record it as interrupted, end the worker."""
    global _STOPPING
    if _STOPPING:
        return  # already cleaning up
    _STOPPING = signum
    if _SPAWNING:
        return  # the step is being started: _run_game stops it as soon as it is in _RUNNING
    stop_worker()


def stop_worker():
    """Stop and record the running step (if any), then end this worker process at once."""
    if _RUNNING is not None:
        proc, on_stop = _RUNNING
        stop_child(proc)
        on_stop()
    os._exit(128 + _STOPPING)


def worker_init():
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def stop_child(proc, grace=15.0):
    """Stop a step's process group: SIGINT first (training scripts save a checkpoint), SIGKILL after grace.

    Polls with os.waitpid rather than proc.wait: this also runs inside a signal handler that interrupted
    proc.wait(), which holds the Popen's wait lock.
    """
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait
        while time.time() < deadline:
            try:
                pid, sts = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped
                break
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(sts)
                break
            time.sleep(0.05)
        else:
            continue
        break
    try:  # the step's own children (if any) may outlive it: clear the group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path, n):
    try:
        lines = [l.rstrip() for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return []
    return lines[-n:]


def game_locked(game_dir, hold=False):
    """An exclusive lock on <game>/logs/.lock, so two sweeps (a local one and a Slurm task, a requeued task)
    never run the same game at once. hold=True: take it and return the open file (None if another process
    holds it). hold=False: just say whether another process holds it now."""
    path = game_dir / "logs" / ".lock"
    if not hold and not path.exists():
        return False
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None if hold else True
    if hold:
        return f
    f.close()
    return False


def run_game(job):
    """Run the selected steps of one game in a pool worker; a bug here becomes this game's error, not a crash."""
    try:
        return _run_game(job)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        try:  # best effort: name it in the game's status so the index shows it
            path = Path(job["args"].out_dir) / folder_of(job["env_id"]) / "status.json"
            write_json(path, dict(read_json(path) or {"env_id": job["env_id"], "steps": {}}, sweep_error=msg))
        except OSError:
            pass
        return {"env_id": job["env_id"], "error": msg}


def _run_game(job):
    global _RUNNING, _SPAWNING
    args, env_id, kind, pos, n = job["args"], job["env_id"], job["kind"], job["pos"], job["n"]
    game_dir = Path(args.out_dir) / folder_of(env_id)
    (game_dir / "logs").mkdir(parents=True, exist_ok=True)
    lock = game_locked(game_dir, hold=True)  # held until this worker returns or dies
    if lock is None:
        print(f"[{pos + 1}/{n} {env_id}] busy: another sweep is running this game now; left to it", flush=True)
        return {"env_id": env_id, "busy": True}
    status = read_json(game_dir / "status.json") or {}
    status = {"format": "memory-pixel-interp/sweep-game", "version": 1, "env_id": env_id,
              "kind": kind or status.get("kind", ""), "steps": status.get("steps", {})}
    sweep_log = open(game_dir / "logs" / "sweep.log", "a")

    def say(msg):
        line = f"[{pos + 1}/{n} {env_id}] {msg}"
        print(line, flush=True)
        sweep_log.write(f"{now_iso()} {line}\n")
        sweep_log.flush()

    def save():
        write_json(game_dir / "status.json", status)

    result = {"env_id": env_id, "steps": {}}
    for step in STEPS:
        if step not in args.steps:
            continue
        argv = step_argv(step, env_id, args, status)
        if argv is None:
            status["steps"][step] = {"status": "blocked", "reason": "an input step is not done", "outputs": {}}
            say(f"{step}: blocked (an input step is not done)")
            result["steps"][step] = "blocked"
            save()
            continue
        rec = status["steps"].get(step) or {}
        script = Path(args.scripts_dir) / SCRIPTS[step]
        cmd = [SCRIPTS[step], *argv]
        inputs = {d: (status["steps"].get(d) or {}).get("finished") for d in DEPENDS[step]}
        stale = [d for d in DEPENDS[step] if d in (rec.get("inputs") or {}) and rec["inputs"][d] != inputs[d]]
        if rec.get("status") == "done" and not args.force and not stale:
            if rec.get("cmd") != cmd:
                say(f"{step}: re-run (its command changed since it was done)")
            elif not outputs_ok(step, game_dir, env_id, rec):
                say(f"{step}: re-run (its recorded outputs are missing or incomplete)")
            else:
                say(f"{step}: skip (done {rec.get('finished', '?')}, {rec.get('seconds', 0):.1f}s)")
                result["steps"][step] = "skip"
                continue
        elif rec.get("status") == "done" and stale:
            say(f"{step}: re-run ({', '.join(stale)} ran again since)")
        # a training run cut short (interrupted, timeout) with the same command continues from its checkpoint
        resume = rec.get("partial_run") if step in ("ram", "pixel") and rec.get("cmd") == cmd \
            and rec.get("status") in ("interrupted", "timeout") and not args.force else None
        if resume and not (game_dir / resume / "checkpoint.pt").is_file():
            resume = None
        timeout = args.extract_timeout if step == "extract" else args.step_timeout
        out_log, err_log = game_dir / "logs" / f"{step}.stdout.log", game_dir / "logs" / f"{step}.stderr.log"
        runs_before = {d.name for d in (game_dir / "runs").glob("*/")}
        rec = {"status": "running", "cmd": cmd, "inputs": inputs, "started": now_iso(), "outputs": {},
               "resumed_from": resume,
               "log": {"stdout": f"logs/{step}.stdout.log", "stderr": f"logs/{step}.stderr.log"}}
        status["steps"][step] = rec
        save()
        if resume:
            argv = [*argv, "--resume", f"{resume}/checkpoint.pt"]
        say(f"{step}: start ({shlex.join([SCRIPTS[step], *argv])})  log: {out_log}")
        t0 = time.time()

        def cut_short(state, reason):  # the step was stopped: record it (and its partial run, to resume it)
            rec.update(status=state, reason=reason, seconds=round(time.time() - t0, 2), finished=now_iso(),
                       stderr_tail=tail(err_log, args.tail_lines),
                       partial_run=(resume or latest_run(game_dir, runs_before, step))
                       if step in ("ram", "pixel") else None)
            save()

        def on_stop():  # called from the signal handler while the step runs
            cut_short("interrupted", "the sweep was stopped while this step ran (re-run to resume)")
            say(f"{step}: INTERRUPTED after {rec['seconds']:.1f}s")

        with open(out_log, "w") as fo, open(err_log, "w") as fe:
            _SPAWNING = True
            try:
                proc = subprocess.Popen([sys.executable, str(script), *argv], cwd=game_dir, stdout=fo, stderr=fe,
                                        env=job["env"], process_group=0)  # own group: a timeout stops all of it
                _RUNNING = (proc, on_stop)
            finally:
                _SPAWNING = False
            if _STOPPING:  # a stop signal came while the step was starting
                stop_worker()
            try:
                rc = proc.wait(timeout=timeout if timeout > 0 else None)
            except subprocess.TimeoutExpired:
                _RUNNING = None
                stop_child(proc)
                rc = None
            _RUNNING = None
        rec["seconds"] = round(time.time() - t0, 2)
        rec["finished"] = now_iso()
        rec["returncode"] = proc.returncode
        if rc is None:
            cut_short("timeout", f"timeout: still running after {timeout:g}s, stopped")
        elif rc != 0:
            last = tail(err_log, args.tail_lines)
            # the reason: the script's own `error:` line, else the last line that looks like one, else the last
            errs = [l for l in last if l.startswith("error:")] \
                or [l for l in last if re.search(r"error|exception|failed|killed", l, re.I)] or last
            why = errs[-1] if errs else "no stderr"
            rec.update(status="failed", reason=f"exit {rc}: {why}", stderr_tail=last)
        else:
            outputs, why = collect_outputs(step, game_dir, env_id, cmd, runs_before, resume)
            if outputs is None:
                rec.update(status="failed", reason=why, stderr_tail=tail(err_log, args.tail_lines))
            else:
                rec.update(status="done", outputs=outputs)
        save()
        result["steps"][step] = rec["status"]
        if rec["status"] == "done":
            say(f"{step}: done in {rec['seconds']:.1f}s")
            continue
        say(f"{step}: {rec['status'].upper()} after {rec['seconds']:.1f}s: {rec['reason']}")
        break  # a failed step stops this game; the sweep goes on with the others
    sweep_log.close()
    lock.close()
    return result


# ----------------------------------------------------------------------------------------------------------
# The index: read back every game folder (so --index-only rebuilds it from disk alone)
# ----------------------------------------------------------------------------------------------------------
def extract_summary(rv):
    """Byte counts from a ram_vars JSON: changing, selected, excluded by reason."""
    recs = rv.get("bytes", [])
    # "changing" = changed in play (a version-2 "latent" byte never did, though it is selected)
    changing = sum(1 for b in recs if b.get("n_distinct", 1) > 1 or b.get("kind", "constant") not in ("constant", "latent"))
    return {"changing": changing, "selected": len(rv.get("selected", [])),
            "excluded_by_reason": dict(sorted(Counter(str(r) for r in (rv.get("excluded") or {}).values()).items())),
            "seconds": (rv.get("produced_by") or {}).get("seconds")}


def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _mean(stat):
    """compare_runs.py writes mean_ci dicts {"mean", "ci95", "n", ...}; a bare number is taken as is."""
    return _num(stat.get("mean")) if isinstance(stat, dict) else _num(stat)


def compare_summary(summ):
    """Per agent ("ram" = memory, "pixel"): final return and steps/seconds to converge, from compare's
    summary.json ("groups": one entry per agent, figures as mean over seeds), plus its one-line answer."""
    out = {}
    for g in summ.get("groups") or []:
        if not isinstance(g, dict) or not g.get("agent"):
            continue
        conv = g.get("steps_to_converge") if isinstance(g.get("steps_to_converge"), dict) else {}
        out[str(g["agent"])] = {
            "final_return": _mean(g.get("final_return")),
            "steps_to_converge": _mean(g.get("steps_to_converge")),
            "seconds_to_converge": _mean(g.get("seconds_to_converge")),
            "reached": f"{conv.get('n_reached', '?')}/{conv.get('n_with_episodes', '?')}" if conv else None,
            "n_seeds": g.get("n_seeds"), "env_steps": _mean(g.get("env_steps"))}
    answer = summ.get("answer")
    out["answer"] = answer[0] if isinstance(answer, list) and answer else answer
    return out


def probe_summary(res):
    """Best probe score per variable over the pixel agent's layers, from the probe's results.json
    ("variables": [{name, kind, probe: {layer: {metric, score, control}}}]), best first."""
    best = {}
    for v in res.get("variables") or []:
        if not isinstance(v, dict):
            continue
        name = str(v.get("name", v.get("index")))
        for layer, p in (v.get("probe") or {}).items():
            score = _num((p or {}).get("score"))
            if score is not None and (name not in best or score > best[name]["score"]):
                best[name] = {"score": score, "layer": layer, "metric": p.get("metric"),
                              "control": _num(p.get("control")), "kind": v.get("kind")}
        best.setdefault(name, {"score": None, "layer": None, "metric": None, "control": None, "kind": v.get("kind")})
    return dict(sorted(best.items(), key=lambda kv: -(kv[1]["score"] if kv[1]["score"] is not None else -1e9)))


def eval_summary(game_dir, paths=None):
    """A game's evaluations (ppo_*_breakout.py --eval-checkpoint, eval.json in docs/FORMATS.md), each file's agent and
    actions read from the file itself. paths: relative to game_dir (default: every eval/*.json there).

    Returns {agent ("ram" = memory, "pixel"): {"sampled" | "greedy": {"mean", "std" (return per full game, unclipped,
    std over the games), "n" (games), "global_step", "epsilon", "path" (relative to game_dir)}}}, or None when no file
    holds an evaluation. Of two results for one agent and mode, the one at the later global_step is kept."""
    paths = paths if paths is not None else [f"eval/{p.name}" for p in sorted((game_dir / "eval").glob("*.json"))]
    out = {}
    for rel in paths:
        ev = read_json(game_dir / rel)
        if not ev or _num(ev.get("mean")) is None or ev.get("agent") not in ("ram", "pixel") \
                or not isinstance(ev.get("greedy"), bool):
            continue
        rec = {"mean": _num(ev["mean"]), "std": _num(ev.get("std")), "n": _num(ev.get("episodes")),
               "global_step": _num(ev.get("global_step")), "epsilon": _num(ev.get("epsilon")), "path": rel}
        mode = "greedy" if ev["greedy"] else "sampled"
        old = (out.get(ev["agent"]) or {}).get(mode)
        if old is None or (rec["global_step"] or 0) >= (old["global_step"] or 0):
            out.setdefault(ev["agent"], {})[mode] = rec
    return out or None


def game_entry(out_dir, env_id, kind, status_dir=None):
    """One game's row of the index, from its status.json in status_dir (default <out_dir>/<folder_of(env_id)>, the
    sweep's own layout) and the outputs in its results folder: status.json's optional "folder" (relative to out_dir,
    e.g. "../breakout_10m" for a game run by hand elsewhere; default the status folder). Its optional "ram_vars"
    (a path relative to the results folder) and "eval" ({name: path relative to it}) name those files where they are
    not in the sweep's places (ram_vars/, eval/*.json). Links are relative to out_dir."""
    status_dir = Path(status_dir) if status_dir is not None else out_dir / folder_of(env_id)
    st = read_json(status_dir / "status.json") or {}
    folder = st.get("folder") if isinstance(st.get("folder"), str) and st.get("folder").strip() \
        else Path(os.path.relpath(status_dir, out_dir)).as_posix()
    game_dir = out_dir / folder

    def link(rel):  # a path inside the results folder, as a link from out_dir
        return posixpath.normpath(f"{folder}/{rel}") + ("/" if rel.endswith("/") else "")

    steps = st.get("steps", {}) if isinstance(st.get("steps"), dict) else {}
    e = {"env_id": env_id, "kind": kind or st.get("kind", ""), "folder": folder, "steps": {},
         "status": "not started", "failed_step": None, "reason": None, "stderr_tail": [], "links": {},
         "extract": None, "compare": None, "probe": None, "eval": None}
    for s in STEPS:
        r = steps.get(s) or {}
        state = r.get("status", "not run")
        inputs = r.get("inputs") or {}
        if state == "done" and any((steps.get(d) or {}).get("finished") != f for d, f in inputs.items()):
            state = "stale"  # an input step ran again since (a sweep limited by --steps did not re-run this one)
        e["steps"][s] = {"status": state, "seconds": r.get("seconds")}
        if r.get("status") in ("failed", "timeout", "interrupted") and e["failed_step"] is None:
            e.update(failed_step=s, reason=r.get("reason"), stderr_tail=r.get("stderr_tail", []))
    done = [s for s in STEPS if e["steps"][s]["status"] == "done"]
    bad = e["steps"][e["failed_step"]]["status"] if e["failed_step"] else None
    if game_locked(game_dir):
        e.update(status="running", reason="another sweep is running this game now")
    elif bad in ("failed", "timeout"):
        e["status"] = "failed" if bad == "failed" else "timeout"
    elif bad == "interrupted" or any(e["steps"][s]["status"] == "running" for s in STEPS):
        e["status"] = "interrupted"
        e["reason"] = e["reason"] or "a step was running when the sweep stopped (re-run to resume)"
    elif st.get("sweep_error"):
        e.update(status="failed", reason=f"sweep.py error: {st['sweep_error']}")
    elif len(done) == len(STEPS):
        e["status"] = "done"
    elif done:
        e["status"] = "partial: " + ", ".join(done)
    if not game_dir.is_dir():
        return e
    rv_path = st.get("ram_vars") if isinstance(st.get("ram_vars"), str) else None
    if not (rv_path and ram_vars_ok(game_dir / rv_path, env_id)):
        rv_path = find_ram_vars(game_dir, env_id)
    if rv_path:
        e["extract"] = extract_summary(read_json(game_dir / rv_path))
        e["links"]["ram_vars"] = link(rv_path)
    summ = read_json(game_dir / "compare" / "summary.json")
    if summ is not None:
        e["compare"] = compare_summary(summ)
        if (game_dir / "compare" / "index.html").is_file():
            e["links"]["compare"] = link("compare/index.html")
    pdir = find_probe_dir(game_dir)
    if pdir:
        e["probe"] = probe_summary(read_json(game_dir / pdir / "results.json"))
        if (game_dir / pdir / "report.html").is_file():
            e["links"]["probe"] = link(f"{pdir}/report.html")
        else:
            e["links"]["probe results"] = link(f"{pdir}/results.json")
    named = st.get("eval") if isinstance(st.get("eval"), dict) else None
    e["eval"] = eval_summary(game_dir, [p for p in named.values() if isinstance(p, str)] if named else None)
    for modes in (e["eval"] or {}).values():
        for r in modes.values():
            r["href"] = link(r["path"])
    if (game_dir / "README.md").is_file():
        e["links"]["README"] = link("README.md")
    if (game_dir / "logs").is_dir() and any((game_dir / "logs").iterdir()):
        e["links"]["logs"] = link("logs/")
    return e


def build_index(out_dir, listed):
    """index.json + index.html for the listed games plus every other game folder found in out_dir."""
    out_dir = Path(out_dir)
    found = {}  # env id -> (the folder holding its status.json, its kind); the sweep's own folder name first
    for st_path in sorted(out_dir.glob("*/status.json")):
        st = read_json(st_path)
        if st and isinstance(st.get("env_id"), str) and st["env_id"] \
                and (st["env_id"] not in found or st_path.parent.name == folder_of(st["env_id"])):
            found[st["env_id"]] = (st_path.parent, st.get("kind", ""))
    games = list(listed)
    known = {g for g, _ in games}
    games += [(g, kind) for g, (_, kind) in found.items() if g not in known]
    entries = [game_entry(out_dir, g, k, found.get(g, (None,))[0]) for g, k in games]
    counts = Counter(e["status"].split(":")[0] for e in entries)
    index = {"format": "memory-pixel-interp/sweep-index", "version": 1, "created": now_iso(),
             "n_games": len(entries), "counts": dict(counts), "games": entries}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "index.json", index)
        write_atomic(out_dir / "index.html", lambda f: f.write(render_html(index).encode()))
    except OSError as e:  # a full disk: the index written before (if any) stays whole
        fail(f"cannot write the index in {out_dir}: {e.strerror or e}")
    return index


def check_writable(out_dir):
    """Make --out-dir and write a test file in it now, before any game runs: a folder that cannot be written (read-only,
    full, below a file) is one `error:` line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test.tmp-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fail(f"cannot write --out-dir {out_dir}: {e.strerror or e}")


def _fmt(x, nd=1):
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else html.escape(str(x))


def overview_png(entries):
    """A cross-game figure (base64 PNG, inlined in index.html): RAM bytes per game, and the best probe score
    of each game's variables; None when no game has data yet."""
    ex = [e for e in entries if e["extract"]]
    if not ex:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["env_id"].replace("NoFrameskip-v4", "").replace("ALE/", "") for e in ex]
    y = list(range(len(ex)))
    fig, axes = plt.subplots(1, 2, figsize=(11, max(2.4, 1.2 + 0.28 * len(ex))), sharey=True, squeeze=False)
    ax = axes[0][0]
    ax.barh(y, [e["extract"]["changing"] for e in ex], color="#c8d1dc", label="changing")
    ax.barh(y, [e["extract"]["selected"] for e in ex], color="#0969da", label="selected (memory agent input)")
    ax.set_xlabel("RAM bytes (of 128)")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[0][1]
    for i, e in enumerate(ex):
        scores = [max(v["score"], -1.0) for v in (e["probe"] or {}).values() if v["score"] is not None]
        ax.scatter(scores, [i] * len(scores), s=14, color="#8250df", alpha=0.7)
    ax.axvline(0, color="#999", lw=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("best probe score per variable (R² or weighted F1, pixel agent; below -1 drawn at -1)")
    axes[0][0].set_yticks(y, names, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(index):
    """A self-contained page (inline CSS, relative links) with one row per game and a failure section."""
    esc = html.escape
    colour = {"done": "#1a7f37", "failed": "#cf222e", "timeout": "#cf222e", "interrupted": "#9a6700",
              "running": "#9a6700", "stale": "#9a6700", "blocked": "#6e7781", "not run": "#6e7781", "skip": "#1a7f37",
              "in progress": "#9a6700"}
    rows = []
    for i, e in enumerate(index["games"]):
        ex = e["extract"]
        ex_cell = "–" if not ex else (f"{ex['changing']} / <b>{ex['selected']}</b><br><small>" + ", ".join(
            f"{esc(k)}: {v}" for k, v in ex["excluded_by_reason"].items()) + "</small>")
        cmp_ = e["compare"] or {}
        ret = " / ".join(_fmt((cmp_.get(a) or {}).get("final_return")) for a in ("ram", "pixel"))
        conv = " / ".join(_fmt((cmp_.get(a) or {}).get("steps_to_converge"), 0) for a in ("ram", "pixel"))
        if cmp_.get("answer"):
            ret += (f"<details><summary><small>answer</small></summary><small>{esc(str(cmp_['answer']))}</small>"
                    "</details>")
        ev = e.get("eval") or {}
        ev_rows = []
        for mode in ("sampled", "greedy"):
            cells = []
            for agent in ("ram", "pixel"):
                r = (ev.get(agent) or {}).get(mode)
                cells.append("–" if not r else f"<a href='{esc(r['href'])}'>{_fmt(r['mean'])}"
                             + (f" ± {_fmt(r['std'])}" if r["std"] is not None else "") + "</a>")
            if cells != ["–", "–"]:
                ev_rows.append(f"{mode}: " + " / ".join(cells))
        ns = sorted({_fmt(r["n"], 0) for modes in ev.values() for r in modes.values()})
        ev_cell = "<br>".join(ev_rows) + f"<br><small>mean ± std over {' or '.join(ns)} games</small>" \
            if ev_rows else "–"
        pr = e["probe"]
        if pr:
            items = [f"{esc(v)}: " + ("<b>–</b>" if p["score"] is None else
                     f"<b>{p['score']:.2f}</b> <small>{esc(str(p['metric']))} @{esc(str(p['layer']))}"
                     + (f", control {p['control']:.2f}" if p["control"] is not None else "") + "</small>")
                     for v, p in pr.items()]
            pr_cell = "<br>".join(items[:6]) + (f"<details><summary>{len(items) - 6} more</summary>"
                                                 + "<br>".join(items[6:]) + "</details>" if len(items) > 6 else "")
        else:
            pr_cell = "–"
        steps = " ".join(
            f"<span title='{esc(s)}' style='color:{colour.get(v['status'], '#000')}'>{esc(s)}:{esc(v['status'])}"
            + (f" {v['seconds']:.0f}s" if _num(v.get("seconds")) is not None else "") + "</span><br>"
            for s, v in e["steps"].items())
        links = " ".join(f"<a href='{esc(href)}'>{esc(name)}</a>" for name, href in e["links"].items())
        st_col = colour.get(e["status"].split(":")[0], "#000")
        status = f"<b style='color:{st_col}'>{esc(e['status'])}</b>"
        if e["reason"]:
            status += f"<br><small>{esc(e['failed_step'] or '')}: {esc(e['reason'])}</small>"
        rows.append(f"<tr id='{esc(folder_of(e['env_id']))}'><td>{i}</td><td><b>{esc(e['env_id'])}</b><br><small>"
                    f"{esc(e['kind'])}</small></td><td>{status}</td><td>{ex_cell}</td><td>{ret}</td><td>{conv}</td>"
                    f"<td>{ev_cell}</td><td>{pr_cell}</td><td><small>{steps}</small></td><td>{links}</td></tr>")
    fails = [e for e in index["games"] if e["status"] in ("failed", "timeout", "interrupted")]
    fail_html = "".join(
        f"<h3><a href='#{esc(folder_of(e['env_id']))}'>{esc(e['env_id'])}</a>: {esc(e['status'])} at step "
        f"{esc(e['failed_step'] or '?')}</h3><p>{esc(e['reason'] or '')}</p>"
        f"<pre>{esc(chr(10).join(e['stderr_tail']))}</pre>" for e in fails)
    counts = ", ".join(f"{v} {esc(k)}" for k, v in sorted(index["counts"].items()))
    png = overview_png(index["games"])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>memory-pixel-interp sweep</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #d0d7de;padding:4px 6px;vertical-align:top;text-align:left}} th{{background:#f6f8fa}}
pre{{background:#f6f8fa;padding:6px;font-size:12px;overflow-x:auto}} small{{color:#57606a}}</style></head>
<body><h1>Memory vs pixel agents across games</h1>
<p>{index['n_games']} games: {counts}. Written {esc(index['created'])}; data in <a href="index.json">index.json</a>.</p>
<p>RAM bytes = changing / <b>selected</b> (the memory agent's input), then the excluded bytes by reason.
Returns and steps to converge are memory / pixel agent (from each game's compare summary). The evaluation: each
agent's mean return per full game, ± the std over the games, actions sampled from the policy or greedy (from each
game's eval/*.json; a number links to its file). Probe: the best score per game variable (from each game's probe
results).</p>
{f'<img alt="overview" src="data:image/png;base64,{png}">' if png else ''}
<table><tr><th>#</th><th>game</th><th>status</th><th>RAM bytes</th><th>final return<br>memory / pixel</th>
<th>steps to converge<br>memory / pixel</th><th>30-game eval<br>memory / pixel</th>
<th>best probe score per variable</th><th>steps</th><th>reports</th></tr>
{''.join(rows)}
</table>
<h2>Failures</h2>{fail_html or '<p>none</p>'}
</body></html>
"""


# ----------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------
# Findings across games (--findings): what the probe found per kind of variable, and memory vs pixel agents
# ----------------------------------------------------------------------------------------------------------
# (random, human) scores per game: google-deepmind/dqn_zoo, dqn_zoo/atari_data.py (uniform random actions / a
# professional human tester, up to 30 no-ops, games capped at 108k frames). Only for normalising scores across games.
ATARI_RANDOM_HUMAN = {
    "alien": (227.8, 7127.7), "amidar": (5.8, 1719.5), "asterix": (210.0, 8503.3), "asteroids": (719.1, 47388.7),
    "bank_heist": (14.2, 753.1), "beam_rider": (363.9, 16926.5), "bowling": (23.1, 160.7), "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5), "centipede": (2090.9, 12017.0), "demon_attack": (152.1, 1971.0), "enduro": (0.0, 860.5),
    "freeway": (0.0, 29.6), "frostbite": (65.2, 4334.7), "hero": (1027.0, 30826.4), "ice_hockey": (-11.2, 0.9),
    "kangaroo": (52.0, 3035.0), "montezuma_revenge": (0.0, 4753.3), "ms_pacman": (307.3, 6951.6),
    "pitfall": (-229.4, 6463.7), "pong": (-20.7, 14.6), "qbert": (163.9, 13455.0), "seaquest": (68.4, 42054.7),
    "space_invaders": (148.0, 1668.7), "tennis": (-23.8, -8.3), "video_pinball": (16256.9, 17667.9),
}
# the kinds of variable the findings group by, from the extractor's role (and, for positions, whose object it is)
VARIABLE_KINDS = ("player position", "player's shots", "other objects' positions", "velocities and directions",
                  "score", "lives", "timers and counters", "bitmaps", "other roles", "never changed in play")
AGENT_NAMES = {"pixel": "pixel", "ram": "memory"}


def variable_kind(v):
    """A probed variable's kind for the findings (VARIABLE_KINDS), from results.json's role, object and kind."""
    role, obj = str(v.get("role") or ""), v.get("object")
    if role in ("x-position", "y-position"):
        return {"player": "player position", "player's shot": "player's shots"}.get(obj, "other objects' positions")
    if role.startswith(("velocity", "direction")):
        return "velocities and directions"
    if role.startswith("score"):
        return "score"
    if role == "lives":
        return "lives"
    if role in ("counter", "timer", "toggle"):
        return "timers and counters"
    if role == "bitmap" or (not role and v.get("kind") == "bitmap"):
        return "bitmaps"
    if role.startswith("latent") or (not role and v.get("kind") == "latent"):
        return "never changed in play"   # (a latent byte: only the interventions can score it)
    return "other roles"


def variable_verdicts(v):
    """One variable's verdicts from results.json (the probe's own rules, results.json verdict_rules): natural frames
    (any layer beyond both controls; None when not scored), interventions (any layer beyond the shuffled labels),
    steering at relu_fc (its function vector against random directions: True "with", False otherwise, None when not
    run) and the layer of the largest natural lead over the controls (None when no layer is beyond them)."""
    ver = v.get("verdict") or {}
    nat = {k: d for k, d in (ver.get("natural") or {}).items() if isinstance(d, dict)}
    itv = {k: d for k, d in (ver.get("interventions") or {}).items() if isinstance(d, dict)}
    steer = (ver.get("steering") or {}).get("relu_fc") or {}
    good = {k: d["lead"] for k, d in nat.items() if d.get("decodable") and _num(d.get("lead")) is not None}
    return {"natural": any(d.get("decodable") for d in nat.values()) if nat else None,
            "interventions": any(d.get("decodable") for d in itv.values()) if itv else None,
            "steering": (steer.get("steers") == "with") if steer.get("steers") else None,
            "peak_layer": max(good, key=good.get) if good else None}


def kind_findings(res):
    """Per kind of variable (VARIABLE_KINDS, those present): {n, and per test (natural, interventions, steering):
    [beyond the controls, scored], "peak_layers": {layer: how many variables peak there}, "best": the natural read-out
    that leads its controls most (variable, layer, metric, score, random_network and shuffled: the controls' means,
    lead: over their best draw), "variables"} from one results.json."""
    out = {}
    for v in res.get("variables") or []:
        if not isinstance(v, dict):
            continue
        k = out.setdefault(variable_kind(v), {"n": 0, "natural": [0, 0], "interventions": [0, 0], "steering": [0, 0],
                                              "peak_layers": {}, "variables": []})
        k["n"] += 1
        vv = variable_verdicts(v)
        for test in ("natural", "interventions", "steering"):
            if vv[test] is not None:
                k[test][0] += int(vv[test])
                k[test][1] += 1
        if vv["peak_layer"]:
            k["peak_layers"][vv["peak_layer"]] = k["peak_layers"].get(vv["peak_layer"], 0) + 1
            nat = (v.get("natural") or {}).get(vv["peak_layer"]) or {}
            lead = v["verdict"]["natural"][vv["peak_layer"]]["lead"]
            if _num(nat.get("score")) is not None and (k.get("best") is None or lead > k["best"]["lead"]):
                k["best"] = {"variable": str(v.get("name")), "layer": vv["peak_layer"], "metric": nat.get("metric"),
                             "score": nat["score"], "random_network": _num(nat.get("random_network")),
                             "shuffled": _num(nat.get("control")), "lead": lead}
        k["variables"].append(str(v.get("name")))
    return {kind: out[kind] for kind in VARIABLE_KINDS if kind in out}


def common_level(game_dir, finals, out, max_steps):
    """Steps and wall time for each agent to reach one score level, the same for both: the lower of the two final
    training returns (mean of the last 100 games; with max_steps, at that step), less 10% of its size (compare_runs.py's
    own 'converge' rule applied to the weaker agent, so both can reach it). Runs compare_runs.py --threshold on
    game_dir/runs into `out` (first without it, for the finals at max_steps). -> {"level", "final_return": {agent: R},
    per agent {"steps", "seconds", "reached"}, "out"} or {"error": why}."""
    def compare(*extra):
        cmd = [sys.executable, str(Path(__file__).resolve().parent / "compare_runs.py"), str(game_dir / "runs"),
               "--out-dir", str(out), *extra] + (["--max-steps", str(max_steps)] if max_steps else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
        summ = read_json(out / "summary.json")
        if proc.returncode != 0 or summ is None:
            return (proc.stderr.strip().splitlines() or ["compare_runs.py wrote no summary"])[-1]
        return {a: g for a, g in compare_summary(summ).items() if a in AGENT_NAMES}
    if max_steps:
        first = compare()
        if isinstance(first, str):
            return {"error": first}
        finals = {a: (first.get(a) or {}).get("final_return") for a in AGENT_NAMES}
        if any(f is None for f in finals.values()):
            return {"error": f"no final return at step {max_steps} for both agents"}
    low = min(finals.values())
    level = round(low - 0.1 * abs(low), 3)
    groups = compare("--threshold", str(level))
    if isinstance(groups, str):
        return {"error": groups}
    rec = {"level": level, "final_return": finals, "max_steps": max_steps or None, "out": str(out)}
    for agent, g in groups.items():
        rec[agent] = {"steps": g["steps_to_converge"], "seconds": g["seconds_to_converge"], "reached": g["reached"]}
    return rec


def normalised_scores(game, returns):
    """Human-normalised scores (score - random) / (human - random) (ATARI_RANDOM_HUMAN), or None for a game not there."""
    key = re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()
    if key not in ATARI_RANDOM_HUMAN:
        return None
    r, h = ATARI_RANDOM_HUMAN[key]
    return [(x - r) / (h - r) for x in returns]


def aggregate_rliable(per_game, reps=2000, seed=1):
    """Interquartile mean (IQM) and mean of human-normalised scores across games per agent, with 95% stratified
    bootstrap confidence intervals, by rliable (Agarwal et al. 2021). per_game: {game: {agent: [normalised score per
    evaluation game]}}; games missing an agent are left out for all. The runs matrix is (evaluation games, games): with
    one training seed per game, the intervals show the evaluation games' spread, not the spread between seeds."""
    try:
        from rliable import library as rly, metrics
    except ImportError:
        fail("--findings needs the rliable package (pip install rliable): the aggregates across games use it")
    games = [g for g, a in per_game.items() if all(a.get(x) for x in AGENT_NAMES)]
    if not games:
        return None
    n = min(len(per_game[g][a]) for g in games for a in AGENT_NAMES)
    scores = {a: np.array([per_game[g][a][:n] for g in games], float).T for a in AGENT_NAMES}  # (n, games)
    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global RNG
    fn = lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)])  # noqa: E731
    point, ci = rly.get_interval_estimates(scores, fn, reps=reps)
    return {"games": games, "runs_per_game": n, "reps": reps, "seed": seed,
            **{AGENT_NAMES[a]: {"iqm": float(point[a][0]), "iqm_ci95": [float(x) for x in ci[a][:, 0]],
                                "mean": float(point[a][1]), "mean_ci95": [float(x) for x in ci[a][:, 1]]}
               for a in AGENT_NAMES}}


def game_findings(out_dir, e, max_steps):
    """One game's findings from its index entry e, or None when its pair is not trained, evaluated and probed."""
    game_dir = out_dir / e["folder"]
    pdir = find_probe_dir(game_dir)
    ev = e.get("eval") or {}
    finals = {a: (e.get("compare") or {}).get(a, {}).get("final_return") for a in AGENT_NAMES}
    if not pdir or any(f is None for f in finals.values()) or not all((ev.get(a) or {}).get("sampled") for a in AGENT_NAMES):
        return None
    res = read_json(game_dir / pdir / "results.json") or {}
    name = re.sub(r"NoFrameskip-v4$|-v5$", "", e["env_id"].replace("ALE/", ""))
    f = {"env_id": e["env_id"], "game": name, "probe": posixpath.normpath(f"{e['folder']}/{pdir}/report.html"),
         "kinds": kind_findings(res), "final_return": finals, "eval": {}, "normalised": {}}
    for a in AGENT_NAMES:
        rec = ev[a]["sampled"]
        returns = (read_json(game_dir / rec["path"]) or {}).get("returns") or []
        f["eval"][a] = {"mean": rec["mean"], "std": rec["std"], "n": len(returns), "global_step": rec["global_step"]}
        f["normalised"][a] = normalised_scores(name, returns)
    f["common_level"] = common_level(game_dir, finals, game_dir / "compare_common_level", max_steps)
    return f


def findings_png(found, path):
    """The findings at a glance: per game (column) and kind of variable (row), three panels (natural frames beyond both
    controls, interventions beyond the shuffled labels, steering beyond random directions), each cell coloured by the
    share of the kind's scored variables that pass, labelled 'passed/scored' and, on natural frames, the peak layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in VARIABLE_KINDS if any(k in f["kinds"] for f in found)]
    tests = (("natural", "natural frames: beyond the random network and shuffled labels"),
             ("interventions", "interventions: beyond shuffled labels"), ("steering", "steering (relu_fc): beyond random directions"))
    fig, axes = plt.subplots(1, 3, figsize=(4.2 * 3, 0.9 + 0.42 * len(kinds)), sharey=True)
    for ax, (test, title) in zip(axes, tests):
        grid = np.full((len(kinds), len(found)), np.nan)
        for j, f in enumerate(found):
            for i, k in enumerate(kinds):
                rec = f["kinds"].get(k)
                if rec and rec[test][1]:
                    grid[i, j] = rec[test][0] / rec[test][1]
                    layers = rec["peak_layers"]
                    peak = max(layers, key=layers.get) if test == "natural" and layers else ""
                    ax.text(j, i, f"{rec[test][0]}/{rec[test][1]}" + (f"\n{peak}" if peak else ""), ha="center",
                            va="center", fontsize=7)
                elif rec:
                    ax.text(j, i, f"0 scored\n(n={rec['n']})", ha="center", va="center", fontsize=6, color="#888")
        ax.imshow(np.ma.masked_invalid(grid), cmap="Greens", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(found)), [f["game"] for f in found], fontsize=8, rotation=20)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(kinds)), kinds, fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)


def scores_png(found, agg, path):
    """Per game the two agents' 30-game scores (human-normalised, mean and the games' spread), and rliable's IQM with
    its 95% stratified bootstrap interval across the games."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    colours = {"pixel": "#0969da", "ram": "#cf222e"}
    games = [f for f in found if all(f["normalised"][a] for a in AGENT_NAMES)]
    for k, a in enumerate(AGENT_NAMES):
        xs = np.arange(len(games)) + (k - 0.5) * 0.35
        vals = [np.array(f["normalised"][a]) for f in games]
        ax.bar(xs, [v.mean() for v in vals], 0.35, yerr=[v.std() for v in vals], color=colours[a], label=f"{AGENT_NAMES[a]} agent")
    ax.set_xticks(range(len(games)), [f["game"] for f in games], fontsize=8)
    ax.set_yscale("symlog", linthresh=1)
    ax.axhline(1, color="#888", lw=0.8, ls="--")
    ax.set_ylabel("human-normalised score\n(30 games: mean ± SD)", fontsize=8)
    ax.legend(fontsize=8)
    if agg:
        for k, a in enumerate(AGENT_NAMES):
            r = agg[AGENT_NAMES[a]]
            bx.errorbar([k], [r["iqm"]], yerr=[[r["iqm"] - r["iqm_ci95"][0]], [r["iqm_ci95"][1] - r["iqm"]]], fmt="o",
                        color=colours[a], capsize=4)
        bx.set_xticks(range(len(AGENT_NAMES)), [AGENT_NAMES[a] for a in AGENT_NAMES], fontsize=8)
        bx.set_xlim(-0.6, len(AGENT_NAMES) - 0.4)
        bx.set_title(f"IQM over {len(agg['games'])} games\n(rliable, 95% stratified bootstrap)", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)


def findings_markdown(found, agg, skipped):
    """findings.md: the per-kind table, the memory-vs-pixel table and the aggregate, with what each cell means."""
    def cell(rec, test):
        return f"{rec[test][0]}/{rec[test][1]}" if rec and rec[test][1] else ("0 scored" if rec else "–")
    games = [f["game"] for f in found]
    lines = [f"# Findings across {len(found)} games", "",
             f"Made by `python sweep.py --index-only --findings` on {now_iso()} from the games whose pair is trained, "
             "evaluated (30 games), compared and probed: " + ", ".join(games) + "."
             + (f" Not yet: {', '.join(skipped)}." if skipped else ""), "",
             "## What the pixel agent's layers hold, per kind of variable", "",
             "Each cell: variables of that kind that pass / variables scored. natural: decodable from the layers on the "
             "agent's own frames beyond both controls (the best of the random-weights networks and of the shuffled "
             "labels, by the probe's margin); interventions: beyond the shuffled labels when the byte is written into "
             "the emulator; steering: the variable's function vector at relu_fc moves the policy like the real change, "
             "beyond random directions; peak: the layer where most of the kind's decodable variables lead their controls "
             "most. Kinds come from the extractor's roles (a ball is one of the other objects).", "",
             "| kind | " + " | ".join(games) + " |", "|---|" + "---|" * len(games)]
    for kind in VARIABLE_KINDS:
        recs = [f["kinds"].get(kind) for f in found]
        if not any(recs):
            continue
        row = []
        for rec in recs:
            if not rec:
                row.append("–")
                continue
            pk = rec["peak_layers"]
            b = rec.get("best")
            best = (f" (best {b['variable']} {'R²' if b['metric'] == 'r2' else 'F1'} {b['score']:.2f} at {b['layer']}; "
                    f"random network {b['random_network']:.2f}, shuffled {b['shuffled']:.2f})") if b else ""
            row.append(f"n={rec['n']}: natural {cell(rec, 'natural')}{best}, interventions {cell(rec, 'interventions')}, "
                       f"steering {cell(rec, 'steering')}" + (f", peak {max(pk, key=pk.get)}" if pk else ""))
        lines.append(f"| {kind} | " + " | ".join(row) + " |")
    lines += ["", "![per kind and game](findings.png)", "", "## Memory agent vs pixel agent", "",
              "Common level: the lower of the two agents' final training returns (last 100 games"
              + (f", read at step {found[0]['common_level'].get('max_steps'):,}" if found[0]["common_level"].get("max_steps") else "")
              + ") less 10% of its size, so that both can reach it; steps and wall time to it on the smoothed training "
              "return (`compare_runs.py --threshold`). Scores: 30 full games each, sampled actions, mean ± SD; normalised: "
              "(score − random) / (human − random), dqn_zoo's random and human scores.", "",
              "| game | steps (pixel / memory) | common level | steps to it: pixel | memory | wall time to it: pixel | "
              "memory | score: pixel | memory | normalised: pixel | memory |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def m(x, unit=1e6, suffix="M"):
        return "not reached" if x is None else f"{x / unit:.2f}{suffix}"
    for f in found:
        c = f["common_level"]
        nz = {a: (np.mean(f["normalised"][a]) if f["normalised"][a] else None) for a in AGENT_NAMES}
        steps = " / ".join(f"{f['eval'][a]['global_step'] / 1e6:.1f}M" for a in AGENT_NAMES)
        if "error" in c:
            lines.append(f"| {f['game']} | {steps} | compare_runs.py failed: {c['error']} |" + " |" * 8)
            continue
        lines.append(f"| {f['game']} | {steps} | {c['level']:g} | {m(c['pixel']['steps'])} | {m(c['ram']['steps'])} | "
                     f"{m(c['pixel']['seconds'], 60, ' min')} | {m(c['ram']['seconds'], 60, ' min')} | "
                     f"{f['eval']['pixel']['mean']:.1f} ± {f['eval']['pixel']['std']:.1f} | "
                     f"{f['eval']['ram']['mean']:.1f} ± {f['eval']['ram']['std']:.1f} | "
                     + " | ".join("–" if nz[a] is None else f"{nz[a]:.2f}" for a in AGENT_NAMES) + " |")
    lines += [""]
    if agg:
        p, r = agg["pixel"], agg["memory"]
        lines += [f"Across {len(agg['games'])} games ({', '.join(agg['games'])}), by rliable: interquartile mean of the "
                  f"human-normalised scores, pixel agent **{p['iqm']:.2f}** [{p['iqm_ci95'][0]:.2f}, {p['iqm_ci95'][1]:.2f}], "
                  f"memory agent **{r['iqm']:.2f}** [{r['iqm_ci95'][0]:.2f}, {r['iqm_ci95'][1]:.2f}]; mean "
                  f"{p['mean']:.2f} [{p['mean_ci95'][0]:.2f}, {p['mean_ci95'][1]:.2f}] against {r['mean']:.2f} "
                  f"[{r['mean_ci95'][0]:.2f}, {r['mean_ci95'][1]:.2f}] (95% stratified bootstrap intervals, {agg['reps']} "
                  f"resamples, seed {agg['seed']}; {agg['runs_per_game']} evaluation games per game as the runs: with one "
                  "training seed per game, the intervals show the evaluation games' spread, not the spread between "
                  "training seeds).", ""]
    lines += ["![scores](findings_scores.png)", ""]
    return "\n".join(lines)


def write_findings(out_dir, index, args):
    """--findings: findings.json, findings.md, findings.png and findings_scores.png in out_dir (see Args.findings)."""
    found, skipped = [], []
    for e in index["games"]:
        f = game_findings(out_dir, e, args.findings_max_steps)
        (found.append(f) if f else skipped.append(e["env_id"]))
    if not found:
        print("findings: no game has a trained, evaluated, compared and probed pair yet; nothing written")
        return
    agg = aggregate_rliable({f["game"]: f["normalised"] for f in found})
    try:
        findings_png(found, out_dir / "findings.png")
        scores_png(found, agg, out_dir / "findings_scores.png")
        write_json(out_dir / "findings.json", {"format": "memory-pixel-interp/findings", "version": 1,
                                               "created": now_iso(), "games": found, "aggregate": agg,
                                               "not_yet": skipped, "max_steps": args.findings_max_steps})
        write_atomic(out_dir / "findings.md", lambda fh: fh.write(findings_markdown(found, agg, skipped).encode()))
    except OSError as e:
        fail(f"cannot write the findings in {out_dir}: {e.strerror or e}")
    print(f"findings over {len(found)} games ({', '.join(f['game'] for f in found)}): {out_dir / 'findings.md'}")


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt


def main():
    args = parse_args()
    check_ranges(args, RANGES)
    if not args.steps:
        fail(f"--steps needs at least one step among: {' '.join(STEPS)}")
    if args.games is not None and not args.games:
        fail("--games needs at least one env id")
    bad = [s for s in args.steps if s not in STEPS]
    if bad:
        fail(f"unknown step {bad[0]!r} in --steps; choose among: {' '.join(STEPS)}")
    if args.all_extract:
        args.steps = ("extract",)
    for name in ("extract_args", "train_args", "ram_args", "pixel_args", "compare_args", "probe_args"):
        try:
            shlex.split(getattr(args, name))
        except ValueError as e:
            fail(f"--{name.replace('_', '-')} cannot be split into arguments: {e}")
    for g in args.games or []:
        if not ID_PATTERN.match(g) or ".." in g:
            fail(f"bad env id {g!r}: expected something like BreakoutNoFrameskip-v4 or ALE/Breakout-v5")
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out-dir {args.out_dir} exists and is not a folder")
    args.scripts_dir = str(Path(args.scripts_dir or Path(__file__).resolve().parent).resolve())

    if args.index_only:
        listed = game_list(args) if args.games is not None else []
        check_writable(out_dir)
        index = build_index(out_dir, listed)
        print(f"index of {index['n_games']} games: {out_dir / 'index.html'}  ({index['counts']})")
        if args.findings:
            write_findings(out_dir, index, args)
        return
    if args.findings:
        fail("--findings is read from the game folders: use it with --index-only")

    games = game_list(args)
    if len(set(g for g, _ in games)) != len(games):
        fail("a game is listed twice in --games")
    if args.list_games:
        for i, (g, _) in enumerate(games):
            print(f"{i}\t{g}")
        return
    positions = list(range(len(games)))
    if args.only_index is not None:
        if not 0 <= args.only_index < len(games):
            fail(f"--only-index {args.only_index} is out of range: the game list has {len(games)} games "
                 f"(0..{len(games) - 1})")
        positions = [args.only_index]
    missing = [SCRIPTS[s] for s in args.steps if not (Path(args.scripts_dir) / SCRIPTS[s]).is_file()]
    if missing and not args.dry_run:
        fail(f"script {missing[0]} not found in {args.scripts_dir}")

    if args.dry_run:
        for i in positions:
            g = games[i][0]
            st = read_json(out_dir / folder_of(g) / "status.json") or {"steps": {}}
            print(f"[{i}] {g}  ->  {out_dir / folder_of(g)}/")
            for s in args.steps:
                argv = step_argv(s, g, args, st) or ["<inputs from earlier steps>"]
                state = (st["steps"].get(s) or {}).get("status", "not run")
                print(f"    {s:8s} ({state})  python {SCRIPTS[s]} {shlex.join(argv)}")
        return

    check_writable(out_dir)
    threads = max(1, usable_cores() // min(args.workers, len(positions) or 1))
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # share the cores between parallel games
        env.setdefault(k, str(threads))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MPLBACKEND", "Agg")
    jobs = [{"args": args, "env_id": games[i][0], "kind": games[i][1], "pos": i, "n": len(games), "env": env}
            for i in positions]
    n_workers = min(args.workers, len(jobs)) or 1
    print(f"sweep: {len(jobs)} games x steps [{' '.join(args.steps)}] with {n_workers} workers -> {out_dir}/",
          flush=True)
    t0 = time.time()
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)  # Slurm's scancel/preemption: stop like Ctrl-C
    interrupted = False
    with ProcessPoolExecutor(n_workers, initializer=worker_init) as pool:
        futures = [pool.submit(run_game, job) for job in jobs]
        try:
            for fut in as_completed(futures):
                res = fut.result()
                if res.get("error"):
                    print(f"[{res['env_id']}] sweep error: {res['error']}", file=sys.stderr, flush=True)
        except (KeyboardInterrupt, BrokenProcessPool) as e:
            interrupted = True
            why = "a worker died" if isinstance(e, BrokenProcessPool) else "interrupted"
            print(f"sweep: {why}, stopping (running steps are stopped and recorded as interrupted; re-run the same "
                  "command to resume)", file=sys.stderr, flush=True)
            workers = list((pool._processes or {}).values())  # Python 3.14: pool.terminate_workers()
            pool.shutdown(wait=False, cancel_futures=True)
            for w in workers:
                w.terminate()  # SIGTERM: each worker stops and records its running step, then exits
            for w in workers:
                w.join()

    index = build_index(out_dir, [games[i] for i in positions] if args.only_index is not None else games)
    print(f"sweep: {time.time() - t0:.1f}s; index: {out_dir / 'index.html'}", flush=True)
    if args.all_extract:
        print("extractor time per game (seconds, status):")
        rows = [(e["steps"]["extract"]["seconds"], e["env_id"], e["steps"]["extract"]["status"], e["reason"] or "")
                for e in index["games"] if e["env_id"] in {games[i][0] for i in positions}]
        for sec, g, s, why in sorted(rows, key=lambda r: -(r[0] or 0)):
            print(f"  {_fmt(sec):>8s}  {g:34s} {s}  {why[:100]}")
    mine = [e for e in index["games"] if e["env_id"] in {games[i][0] for i in positions}]
    bad = [e for e in mine if e["status"] in ("failed", "timeout", "interrupted")]
    for e in bad:
        print(f"sweep: {e['env_id']}: {e['status']} at {e['failed_step']}: {e['reason']}", flush=True)
    print(f"sweep: {len(mine) - len(bad)} of {len(mine)} games without failure", flush=True)
    if interrupted:
        sys.exit(130)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
