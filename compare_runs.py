"""Compare PPO training runs: does the memory (RAM) agent converge faster than the pixel agent?

Reads the TensorBoard event files of any number of run folders (`runs/<run_name>/`, written by
ppo_ram_breakout.py / ppo_pixel_breakout.py; a folder of runs such as `runs/` works too: every folder
holding an event file is one run), groups the seeds by agent and env id (run.json's "agent" and "env_id";
without run.json: the run name `<env>__<exp_name>__<seed>__<time>`), and writes to --out-dir:

  return_vs_steps.png      episodic return (smoothed) vs env steps: mean over seeds, 95% CI band, seeds faint
  return_vs_wallclock.png  the same vs wall-clock time since the run started
  losses.png               value/policy loss, entropy, approx KL, clip fraction, explained variance per agent
  sps.png                  env steps per second
  summary.md/.json         per agent: seeds, env steps, final return, steps and wall time to converge, SPS,
                           and a plain-language answer (who converges faster, to what return, how sure);
                           per run, the pieces it was trained in (each process's steps, wall time, SPS, machine)
  index.html               the table and the plots in one self-contained page (images inlined)

Final return: the mean of each seed's last --final-episodes episodes, then mean +- 95% CI over seeds
(t distribution; with one seed there is no CI).

Converge: the first env step at which the smoothed return (trailing mean of --smooth episodes, skipping the
first episodes where fewer than that are averaged) reaches 90% (--converge-fraction) of that seed's own final
return -- precisely final - 0.1 * |final|, which also works for negative scores -- or, with --threshold R,
first reaches R. A seed that never gets there is "not reached"; so is a seed with fewer than --smooth episodes
(it has no smoothed return at all: "too few episodes"), and the return plots start at each seed's --smooth-th
episode. A final return averaged over fewer than --final-episodes episodes says so. A group's figure is the
mean over the seeds that got there, shown with "k/n reached". Wall time to converge is counted from the run's
first event (for a run resumed into the same folder, the pause between the sessions is left out).

Env settings: seeds are pooled only when their run.json "env_settings" (sticky actions, frame skip, frame
limit, noop starts, action set) are the same; seeds with other settings form their own group, compared only
with groups of the same settings, and a warning says why. Run folders without env_settings (written before
they were recorded) are read as before and pooled with each other only.

The answer names a winner only where the two groups' 95% CIs do not overlap; otherwise, and always with a
single seed, it says "inconclusive" and gives the numbers. It also warns when runs differ in length, come
from different hardware, or have not finished.

Coverage: every event file is checked for a record cut short or corrupt (where TensorBoard's reader stops without a
word), and what was read is checked against run.json: its global_step, and one event file per training piece of its
"sessions" reaching the piece's end (more files than pieces: another run may share the folder). A run read only in
part is warned about by name, on stderr and in summary.md / summary.json (runs[].coverage) / index.html, and its table
rows and the plots say what they cover.

Other splits and lengths: `--split-by runtime.precision` (any run.json key) keeps seeds with different values of
that key apart, e.g. a bf16 and an fp32 run of one seed (the speed issue's parity check); `--max-steps N` reads
every run only up to env step N, e.g. the first 1M steps of a 10M run beside a 1M one.

Usage: python compare_runs.py runs/ --out-dir compare
"""

import base64
import contextlib
import dataclasses
import datetime
import errno
import html
import io
import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader  # noqa: E402
from tensorboard.compat.proto import event_pb2  # noqa: E402


@dataclass
class Args:
    run_dirs: tyro.conf.Positional[list[str]]
    """run folders (runs/<run_name>/) or folders of them (e.g. runs/): every folder holding a TensorBoard event
    file is one run"""
    out_dir: str = "compare"
    """output folder for the plots, summary.md, summary.json and index.html (created if missing)"""
    threshold: Optional[float] = None
    """converge = the smoothed return first reaching this value; default: a fraction (--converge-fraction)
    of each seed's own final return"""
    converge_fraction: float = 0.9
    """without --threshold, converge = the smoothed return first reaching final - (1 - this) * |final|"""
    smooth: int = 20
    """trailing moving-average window, in logged points: episodes for the return, updates for losses and SPS
    (1 = no smoothing)"""
    final_episodes: int = 100
    """final return of a seed = mean of its last this-many episodes (all of them if it has fewer)"""
    max_steps: int = 0
    """read each run only up to this env step (0: all of it), e.g. the first 1M steps of a longer run beside a
    1M-step one"""
    split_by: str = ""
    """a run.json key (dots for nested keys, e.g. `runtime.precision`): seeds are pooled only when it has the same
    value, and the group is named `<agent> (<key>=<value>)`; empty: group by agent, env id and env settings"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {"threshold": "(-inf, inf)", "converge_fraction": "(0, 1]", "smooth": "[1, inf)", "final_episodes": "[1, inf)",
          "max_steps": "[0, inf)"}


RETURN_TAG = "charts/episodic_return"
SPS_TAG = "charts/SPS"
LOSS_TAGS = ["losses/value_loss", "losses/policy_loss", "losses/entropy", "losses/approx_kl",
             "losses/clipfrac", "losses/explained_variance"]
AGENT_COLORS = {"ram": "tab:orange", "pixel": "tab:blue"}
OTHER_COLORS = ["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
# Student t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95% CI); above 30, a Cornish-Fisher series.
T975 = [12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
        2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
        2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272]


class InputError(Exception):
    """Bad input: reported as one `error: ...` line on stderr, exit code 2."""


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


@dataclass
class Run:
    path: str
    name: str
    agent: str
    env_id: str
    seed: Optional[int]
    status: str
    hardware: str
    event_files: list
    env_settings: Optional[dict] = None  # run.json "env_settings" (None: not recorded, an older run)
    runtime: Optional[dict] = None  # run.json "runtime" (precision, threads, versions), reported only
    meta: dict = field(default_factory=dict)  # the whole run.json ({} without one), for --split-by
    scalars: dict = field(default_factory=dict)  # tag -> (steps, elapsed_seconds, values), sorted by step
    pieces: list = field(default_factory=list)  # one dict per training process (piece) of the run; see run_pieces
    steps: int = 0
    wall_seconds: float = 0.0
    episodes: int = 0
    final_return: Optional[float] = None
    final_return_episodes: int = 0  # episodes averaged: fewer than --final-episodes when the run has fewer
    too_few_episodes: bool = False  # fewer than --smooth episodes: no smoothed return, so convergence "not reached"
    target: Optional[float] = None
    converge_step: Optional[int] = None
    converge_seconds: Optional[float] = None
    sps: Optional[float] = None
    coverage: dict = field(default_factory=dict)  # what the figures cover, checked against run.json; see cross_check


@dataclass
class Group:
    agent: str
    env_id: str
    runs: list
    env_settings: Optional[dict] = None
    variant: str = ""  # what sets its env settings apart from other groups of its env id ("" when none differ)
    stats: dict = field(default_factory=dict)

    @property
    def name(self):
        return self.agent + (f" [{self.variant}]" if self.variant else "")

    @property
    def label(self):
        return f"{self.agent} / {self.env_id}" + (f" [{self.variant}]" if self.variant else "")


# ---------------------------------------------------------------- small helpers


def t975(df):
    if df <= 30:
        return T975[df - 1]
    z = 1.959963984540054
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def mean_ci(values):
    """Mean and the half-width of its 95% t-interval (None with fewer than 2 values)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return {"mean": None, "ci95": None, "n": 0}
    half = float(t975(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))) if len(v) >= 2 else None
    return {"mean": float(v.mean()), "ci95": half, "n": int(len(v))}


def moving_average(x, k):
    """Trailing mean over the last k points (fewer at the start); NaNs (CleanRL logs a NaN explained variance
    while the returns have no variance) are left out of the mean instead of spreading."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    n = np.concatenate([[0], np.cumsum(ok)])
    hi = np.arange(1, len(x) + 1)
    lo = np.maximum(0, hi - k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c[hi] - c[lo]) / (n[hi] - n[lo])


def monotone(x, y):
    """Sort by x and keep the last y of repeated x values (for np.interp)."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    keep = np.append(x[1:] != x[:-1], True)
    return x[keep], y[keep]


def fmt_steps(s):
    if s is None:
        return "n/a"
    a = abs(s)
    if a >= 1e6:
        return f"{s / 1e6:.2f}M"
    if a >= 1e4:
        return f"{s / 1e3:.1f}k"
    if a >= 1e3:
        return f"{s / 1e3:.2f}k"
    return f"{s:.0f}"


def fmt_seconds(s):
    if s is None:
        return "n/a"
    if abs(s) >= 7200:
        return f"{s / 3600:.2f} h"
    if abs(s) >= 120:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def fmt_num(v):
    if v is None:
        return "n/a"
    return f"{v:.3g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 0.01) else f"{v:.2f}"


def fmt_ci(stat, fmt, note=""):
    """'mean ± ci95 (note)', or 'mean (CI n/a, 1 seed; note)' without a CI."""
    if stat["mean"] is None:
        return "n/a"
    if stat["ci95"] is None:
        notes = [f"CI n/a, {stat['n']} seed{'s' if stat['n'] != 1 else ''}"] + ([note] if note else [])
        return f"{fmt(stat['mean'])} ({'; '.join(notes)})"
    return f"{fmt(stat['mean'])} ± {fmt(stat['ci95'])}" + (f" ({note})" if note else "")


def one_line(e):
    return " ".join(str(e).split())


def parse_run_name(name):
    """CleanRL run name `<env>__<exp_name>__<seed>__<time>` -> (env, exp_name, seed) or None."""
    parts = name.split("__")
    if len(parts) < 4 or not parts[0] or not parts[1]:
        return None
    try:
        seed = int(parts[2])
    except ValueError:
        seed = None
    return parts[0], parts[1], seed


# ---------------------------------------------------------------- reading runs


def find_runs(paths):
    """Every folder (the given ones or below them) that holds an event file -> list of (folder, files)."""
    found, seen = [], set()
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"run folder '{p}' does not exist")
        if not os.path.isdir(p):
            raise InputError(f"'{p}' is not a folder (give a run folder runs/<run_name>/ or a folder of runs)")
        here = []
        for root, dirs, files in os.walk(p):
            dirs.sort()
            events = sorted(f for f in files if f.startswith("events.out.tfevents.") and ".tmp-" not in f)
            if events:
                here.append((root, [os.path.join(root, f) for f in events]))
        if not here:
            raise InputError(f"no TensorBoard event files (events.out.tfevents.*) in '{p}' or below it")
        for root, events in here:
            real = os.path.realpath(root)
            if real not in seen:
                seen.add(real)
                found.append((root, events))
    return found


def read_run_meta(folder, event_files, warnings):
    """Agent, env id, seed, status from run.json, else from the run name."""
    name = os.path.basename(os.path.normpath(folder))
    parsed = parse_run_name(name)
    meta, path = {}, os.path.join(folder, "run.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {path}: {one_line(e)}")
        if not isinstance(meta, dict):
            raise InputError(f"{path} is not a JSON object")
    agent, env_id, seed = meta.get("agent"), meta.get("env_id"), meta.get("seed")
    if not (isinstance(agent, str) and agent and isinstance(env_id, str) and env_id):
        if parsed is None:
            agent, env_id, seed = agent or name, env_id or "unknown-env", seed
            warnings.append(f"{folder}: no usable run.json and the name is not <env>__<exp_name>__<seed>__<time>;"
                            f" agent '{agent}', env '{env_id}'")
        else:
            what = "no run.json" if not meta else "run.json lacks agent/env_id"
            agent = agent if isinstance(agent, str) and agent else parsed[1]
            env_id = env_id if isinstance(env_id, str) and env_id else parsed[0]
            seed = seed if isinstance(seed, int) else parsed[2]
            warnings.append(f"{folder}: {what}; agent '{agent}' and env '{env_id}' taken from the run name")
    if not isinstance(seed, int) or isinstance(seed, bool):
        seed = parsed[2] if parsed else None
    hardware = " on ".join(str(meta[k]) for k in ("device", "machine") if meta.get(k)) or "unknown"
    settings, runtime = meta.get("env_settings"), meta.get("runtime")
    return Run(path=folder, name=name, agent=agent, env_id=env_id, seed=seed,
               status=str(meta.get("status", "unknown")), hardware=hardware, event_files=event_files,
               env_settings=settings if isinstance(settings, dict) else None,
               runtime=runtime if isinstance(runtime, dict) else None, meta=meta)


def load_scalars(run, max_steps=0):
    """The run's scalars as TensorBoard shows them: one accumulator over the folder, so a resumed session's
    purge (SummaryWriter(purge_step=...), or a step going back) drops what the earlier session logged after its
    checkpoint. Elapsed time: each event file is one session, starting at its first event; the pause between
    two sessions is left out, so elapsed = time spent in the sessions before + time since this session began.
    max_steps > 0: events after that env step are dropped (the run is read as if it had stopped there)."""
    try:
        acc = EventAccumulator(run.path, size_guidance={"scalars": 0})
        acc.Reload()
        events = {tag: acc.Scalars(tag) for tag in acc.Tags().get("scalars", [])}
        starts = []
        for path in run.event_files:
            try:
                starts.append(EventAccumulator(path).FirstEventTimestamp())  # reads only the first event
            except ValueError:
                pass  # an empty file: its writer has not flushed anything yet
    except Exception as e:  # noqa: BLE001 -- any reader failure is bad input
        raise InputError(f"cannot read the event files in {run.path}: {one_line(e)}")
    if not starts or not any(events.values()):
        return
    starts = np.sort(np.asarray(starts, dtype=float))
    walls = np.asarray([e.wall_time for evs in events.values() for e in evs], dtype=float)
    session = lambda w: np.clip(np.searchsorted(starts, w, side="right") - 1, 0, None)  # noqa: E731
    in_session = session(walls)
    ends = np.array([walls[in_session == k].max() if np.any(in_session == k) else t for k, t in enumerate(starts)])
    offsets = np.concatenate([[0.0], np.cumsum(ends - starts)])
    for tag, evs in events.items():
        if evs:
            a = np.asarray([(e.step, e.wall_time, e.value) for e in evs], dtype=float)
            a = a[np.argsort(a[:, 0], kind="stable")]  # events at one step keep their logged order
            k = session(a[:, 1])
            kept = a[:, 0] <= max_steps if max_steps else np.ones(len(a), bool)
            if kept.any():
                run.scalars[tag] = (a[kept, 0], (a[:, 1] - starts[k] + offsets[k])[kept], a[kept, 2])
    if not run.scalars:
        return
    run.wall_seconds = float(max(s[1].max() for s in run.scalars.values())) if max_steps else float(offsets[-1])
    run.steps = int(max(s[0].max() for s in run.scalars.values()))
    run.pieces = run_pieces(run.meta.get("sessions"), in_session, events, ends - starts)


def check_event_file(path):
    """Read one event file as TensorBoard does and say what its reader drops without a word: it stops at the first
    record that is cut short (a crash, a full disk or a copy that stopped during a write) or whose CRC does not match
    (a corrupt record), and ignores the rest of the file. The TFRecord framing (8-byte length, 4-byte CRC, the data,
    4-byte CRC) is walked by length to count the records there. Returns (problem or None, the last env step of a
    scalar read, or None). OSError if the file cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    frames, pos = 0, 0
    while pos + 12 <= len(data):
        end = pos + 16 + struct.unpack("<Q", data[pos:pos + 8])[0]
        if end > len(data):
            break
        frames, pos = frames + 1, end
    read, last = 0, None
    for raw in RawEventFileLoader(path).Load():
        read += 1
        event = event_pb2.Event.FromString(raw)
        if event.HasField("summary"):
            last = event.step if last is None else max(last, event.step)
    if read < frames:
        return (f"record {read + 1} of {frames} is corrupt (its CRC does not match): TensorBoard reads none of the"
                f" {frames - read} record(s) from there on"), last
    if pos < len(data):
        return (f"it ends inside a record (the record at byte {pos:,} is cut short, by a crash, a full disk or an"
                " unfinished copy, or its length is corrupt): TensorBoard reads nothing from there on"), last
    return None, last


def cross_check(run, max_steps, warnings):
    """Check what the event files gave against what run.json records: each event file whole (check_event_file), the
    last env step read against run.json "global_step", and one event file per training piece of run.json "sessions"
    reaching the piece's end step. Every shortfall is a warning naming the run; run.coverage says what the run's
    figures cover: {"env_steps_read", "global_step" (run.json's, None if it has none), "complete", "problems"}."""
    problems, last_steps = [], []
    for path in run.event_files:
        try:
            problem, last = check_event_file(path)
        except Exception as e:  # noqa: BLE001 -- unreadable: say so, as for a corrupt record
            problem, last = f"cannot be read: {one_line(e)}", None
        last_steps.append(last)
        if problem:
            problems.append(f"event file {os.path.basename(path)}: {problem}")
    number = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    recorded = run.meta.get("global_step") if number(run.meta.get("global_step")) else None
    if recorded is not None and (not max_steps or recorded <= max_steps) and run.steps < recorded:
        problems.append(f"the events stop at env step {run.steps:,} but run.json records global_step {recorded:,}:"
                        f" this run's figures cover env steps 0-{run.steps:,} only")
    sessions = run.meta.get("sessions")
    if (isinstance(sessions, list) and sessions and all(isinstance(x, dict) and number(x.get("end_step")) for x in sessions)
            and not any(x.get("note") for x in sessions)):  # (a "note": earlier pieces merged into one record)
        n, m = len(sessions), len(run.event_files)
        if m > n:
            problems.append(f"{m} event files for the {n} training piece(s) run.json records: another run may share this"
                            " folder (its episodes are then counted as this run's), or a process stopped before its"
                            " first checkpoint")
        elif m < n:
            problems.append(f"run.json records {n} training pieces but the folder has {m} event file(s): the events of"
                            f" {n - m} piece(s) are missing")
        else:  # the last piece is the global_step check above
            for k, (x, last) in enumerate(zip(sessions[:-1], last_steps[:-1])):
                if (last is None or last < x["end_step"]) and (not max_steps or x["end_step"] <= max_steps):
                    problems.append(f"piece {k + 1} (env steps {x.get('start_step', 0):,}-{x['end_step']:,}): its event"
                                    f" file {os.path.basename(run.event_files[k])} stops at "
                                    + ("no step" if last is None else f"env step {last:,}"))
    if problems and run.status == "running":
        problems.append("the run is still running: its events are flushed every 2 minutes and run.json at each"
                        " checkpoint, so the two can differ for now")
    run.coverage = {"env_steps_read": run.steps, "global_step": recorded, "complete": not problems, "problems": problems}
    warnings += [f"{run.path}: {p}" for p in problems]


def run_pieces(sessions, in_session, events, durations):
    """The pieces a run was trained in, as dicts (start_step, end_step, wall_seconds, sps, machine, settings, source).

    From run.json "sessions" (written by the training scripts: each process's first and last env step, wall
    seconds, machine and runtime settings) when they cover the run from step 0 with no gap; otherwise one piece per
    event file, each starting where the one before ended, with its last logged step and its wall time read off the
    events and the machine unknown. `in_session`: every event's event-file index, in the order of `events`' tags
    and events; `durations`: each file's seconds from its first to its last event."""
    if isinstance(sessions, list) and sessions and all(isinstance(x, dict) for x in sessions):
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        whole = all(number(x.get(k)) for x in sessions for k in ("start_step", "end_step", "wall_seconds"))
        if whole and sessions[0]["start_step"] == 0 and all(
                b["start_step"] == a["end_step"] for a, b in zip(sessions, sessions[1:])):
            return [piece(x["start_step"], x["end_step"], x["wall_seconds"],
                          x["machine"] if isinstance(x.get("machine"), str) else None, piece_settings(x), "run.json")
                    for x in sessions]
    steps = np.asarray([e.step for evs in events.values() for e in evs])
    pieces, start = [], 0
    for i, wall in enumerate(durations):
        here = steps[in_session == i]
        if len(here):
            pieces.append(piece(start, int(here.max()), float(wall), None, "", "event files"))
            start = int(here.max())
    return pieces


def piece(start, end, wall, machine, settings, source):
    return {"start_step": int(start), "end_step": int(end), "wall_seconds": float(wall),
            "sps": (end - start) / wall if wall > 0 else None, "machine": machine, "settings": settings,
            "source": source}


def piece_settings(session):
    """'bf16, 2 torch threads, 2 env threads' from a session record's runtime keys (those it has)."""
    parts = [str(session["precision"])] if session.get("precision") else []
    for key, what in (("torch_threads", "torch thread"), ("env_threads", "env thread"),
                      ("env_processes", "env process")):
        n = session.get(key)
        if isinstance(n, int) and not isinstance(n, bool):
            parts.append(f"{n} {what}" + ("" if n == 1 else "es" if what.endswith("s") else "s"))
    return ", ".join(parts)


def analyse_run(run, args):
    """Final return, convergence step/time and SPS of one seed."""
    if RETURN_TAG in run.scalars:
        steps, elapsed, values = run.scalars[RETURN_TAG]
        run.episodes = len(values)
        run.final_return_episodes = min(run.episodes, args.final_episodes)
        run.final_return = float(values[-args.final_episodes:].mean())
        f = run.final_return
        run.target = args.threshold if args.threshold is not None else f - (1 - args.converge_fraction) * abs(f)
        # a trailing mean of --smooth episodes exists from the --smooth-th episode on; before it, nothing is judged
        run.too_few_episodes = run.episodes < args.smooth
        smoothed = moving_average(values, args.smooth)
        first = args.smooth - 1
        hit = np.nonzero(smoothed[first:] >= run.target - 1e-9 * max(1.0, abs(run.target)))[0]
        if len(hit):
            run.converge_step = int(steps[first + hit[0]])
            run.converge_seconds = float(elapsed[first + hit[0]])
    if SPS_TAG in run.scalars:
        run.sps = float(run.scalars[SPS_TAG][2][-1])
    elif run.wall_seconds > 0 and run.steps > 0:
        run.sps = run.steps / run.wall_seconds


def group_stats(g, args):
    with_ep = [r for r in g.runs if r.episodes > 0]
    reached = [r for r in with_ep if r.converge_step is not None]
    too_few = [r for r in with_ep if r.too_few_episodes]
    steps = [r.steps for r in g.runs]
    conv = mean_ci([r.converge_step for r in reached])
    conv_s = mean_ci([r.converge_seconds for r in reached])
    for c in (conv, conv_s):
        c.update(n_reached=len(reached), n_with_episodes=len(with_ep), n_too_few=len(too_few), smooth=args.smooth)
    final = mean_ci([r.final_return for r in with_ep])
    final.update(n_short=sum(r.final_return_episodes < args.final_episodes for r in with_ep),
                 final_episodes=args.final_episodes)
    g.stats = {
        "n_seeds": len(g.runs),
        "seeds": [r.seed for r in g.runs],
        "n_with_episodes": len(with_ep),
        "env_steps": {"mean": float(np.mean(steps)), "min": int(min(steps)), "max": int(max(steps))},
        "wall_seconds": mean_ci([r.wall_seconds for r in g.runs]),
        "episodes": int(sum(r.episodes for r in g.runs)),
        "final_return": final,
        "steps_to_converge": conv,
        "seconds_to_converge": conv_s,
        "sps": mean_ci([r.sps for r in g.runs]),
        "hardware": sorted({r.hardware for r in g.runs}),
        "not_finished": [f"seed {r.seed} ({r.status})" for r in g.runs if r.status not in ("finished", "unknown")],
        "read_in_part": [f"seed {r.seed}" for r in g.runs if r.coverage and not r.coverage["complete"]],
        "env_settings": g.env_settings,
    }


# ---------------------------------------------------------------- the answer


def compare_convergence(a, b, key, fmt, what, unit_of_run):
    """Who reaches its target first (lower is better); unit_of_run(group) = the shortest run in that unit."""
    sa, sb = a.stats[key], b.stats[key]
    for g, s in ((a, sa), (b, sb)):
        if s["n_with_episodes"] == 0:
            return {"verdict": "inconclusive", "text": f"{what}: cannot tell, {g.agent} has no episodes yet"}
    full_a = sa["n_reached"] == sa["n_with_episodes"]
    full_b = sb["n_reached"] == sb["n_with_episodes"]
    desc = {}
    for g, s in ((a, sa), (b, sb)):
        reached = f"{s['n_reached']}/{s['n_with_episodes']} seeds reached" + too_few_note(s)
        desc[g.agent] = f"{g.agent} {fmt_ci(s, fmt, reached)}" if s["n_reached"] else f"{g.agent} not reached ({reached})"
    both = f"{desc[a.agent]} vs {desc[b.agent]}"
    if sa["n_reached"] == 0 and sb["n_reached"] == 0:
        return {"verdict": "inconclusive", "text": f"{what}: neither agent reached its target; {both}"}
    few = [g.agent for g, s in ((a, sa), (b, sb)) if s["n_too_few"]]
    if few:  # a seed without a smoothed return may or may not have converged: no winner can be named
        return {"verdict": "inconclusive", "text": f"{what}: inconclusive, {' and '.join(few)} has seeds with fewer"
                f" than --smooth {sa['smooth']} episodes, too few to tell whether they converged; {both}"}
    if full_a != full_b and (sa["n_reached"] == 0 or sb["n_reached"] == 0):
        win, lose, sw = (a, b, sa) if full_a else (b, a, sb)
        if unit_of_run(lose) < sw["mean"]:
            return {"verdict": "inconclusive", "text": f"{what}: inconclusive, {lose.agent} did not reach its target"
                    f" but its runs ({fmt(unit_of_run(lose))}) are shorter than {win.agent} needed; {both}"}
        return {"verdict": win.agent, "text": f"{what}: {win.agent} is faster ({lose.agent} did not reach its"
                f" target within its runs); {both}"}
    if not (full_a and full_b):
        return {"verdict": "inconclusive", "text": f"{what}: inconclusive, not every seed reached its target; {both}"}
    return _ci_verdict(a, b, sa, sb, lower_better=True, what=what, better="is faster", both=both)


def _ci_verdict(a, b, sa, sb, lower_better, what, better, both):
    lead = a if (sa["mean"] < sb["mean"]) == lower_better else b
    if sa["mean"] == sb["mean"]:
        return {"verdict": "inconclusive", "text": f"{what}: a tie; {both}"}
    if sa["ci95"] is None or sb["ci95"] is None:
        few = ", ".join(f"{g.agent} has {s['n']} seed" for g, s in ((a, sa), (b, sb)) if s["ci95"] is None)
        return {"verdict": "inconclusive", "text": f"{what}: inconclusive ({few}, so no confidence interval;"
                f" {lead.agent} {better} on this data); {both}"}
    overlap = (sa["mean"] - sa["ci95"] <= sb["mean"] + sb["ci95"]) and (sb["mean"] - sb["ci95"] <= sa["mean"] + sa["ci95"])
    if overlap:
        return {"verdict": "inconclusive", "text": f"{what}: inconclusive, the 95% CIs overlap"
                f" ({lead.agent} {better} on average); {both}"}
    return {"verdict": lead.agent, "text": f"{what}: {lead.agent} {better} (95% CIs do not overlap); {both}"}


def compare_pair(a, b, args):
    fa, fb = a.stats["final_return"], b.stats["final_return"]
    if fa["mean"] is None or fb["mean"] is None:
        empty = a if fa["mean"] is None else b
        final = {"verdict": "inconclusive", "text": f"final return: cannot tell, {empty.agent} has no episodes yet"}
    else:
        final = _ci_verdict(a, b, fa, fb, lower_better=False, what="final return", better="scores higher",
                            both=f"{a.agent} {final_cell(fa)} vs {b.agent} {final_cell(fb)}")
    steps = compare_convergence(a, b, "steps_to_converge", fmt_steps, "env steps to converge",
                                lambda g: g.stats["env_steps"]["min"])
    wall = compare_convergence(a, b, "seconds_to_converge", fmt_seconds, "wall-clock time to converge",
                               lambda g: min(r.wall_seconds for r in g.runs))
    caveats = []
    la, lb = a.stats["env_steps"]["mean"], b.stats["env_steps"]["mean"]
    if abs(la - lb) > 0.1 * max(la, lb):
        caveats.append(f"the runs differ in length ({a.agent} {fmt_steps(la)} vs {b.agent} {fmt_steps(lb)} env"
                       " steps), so the final returns are measured at different points of training")
    if args.threshold is None:
        caveats.append(f"'converge' means reaching {args.converge_fraction:.0%} of the agent's OWN final return,"
                       " so an agent that plateaus lower can converge sooner; --threshold R compares both"
                       " against one return")
    if a.stats["hardware"] != b.stats["hardware"]:
        caveats.append(f"wall-clock times come from different hardware ({a.agent}: {', '.join(a.stats['hardware'])};"
                       f" {b.agent}: {', '.join(b.stats['hardware'])})")
    for g in (a, b):
        fs = g.stats["final_return"]
        if fs["n_short"]:
            caveats.append(f"{g.agent}'s final return averages fewer than --final-episodes {fs['final_episodes']}"
                           f" episodes in {fs['n_short']}/{fs['n']} seed(s)")
        if g.stats["read_in_part"]:
            caveats.append(f"{g.agent} has runs whose events are read only in part (corrupt, cut short, or short of"
                           f" run.json's global_step; see the warnings): {', '.join(g.stats['read_in_part'])}")
        if g.stats["not_finished"]:
            caveats.append(f"{g.agent} has runs that did not finish: {', '.join(g.stats['not_finished'])}")
        if g.stats["env_steps"]["min"] != g.stats["env_steps"]["max"]:
            caveats.append(f"{g.agent}'s seeds differ in length ({fmt_steps(g.stats['env_steps']['min'])}"
                           f"–{fmt_steps(g.stats['env_steps']['max'])} env steps)")
    short = []
    for name, c in (("in env steps", steps), ("in wall-clock time", wall)):
        short.append(f"{c['verdict']} converges faster {name}" if c["verdict"] != "inconclusive"
                     else f"who converges faster {name} is inconclusive")
    to_what = (f" ({a.agent} {fmt_num(fa['mean'])} vs {b.agent} {fmt_num(fb['mean'])})"
               if fa["mean"] is not None and fb["mean"] is not None else "")
    short.append((f"{final['verdict']} reaches the higher final return" if final["verdict"] != "inconclusive"
                  else "who reaches the higher final return is inconclusive") + to_what)
    n = f"{a.agent} {a.stats['n_seeds']} seed(s), {b.agent} {b.stats['n_seeds']} seed(s)"
    arena = a.env_id + (f" [{a.variant}]" if a.variant else "")
    return {"env_id": a.env_id, "env_settings": a.env_settings, "arena": arena, "groups": [a.agent, b.agent],
            "steps": steps, "wall_clock": wall, "final_return": final, "caveats": caveats,
            "short": f"{arena} ({n}): " + "; ".join(short) + "."}


def answer(groups, args, warnings):
    """Compare every two groups of one env id with the same env settings (an "arena")."""
    comparisons, lines = [], []
    envs = sorted({g.env_id for g in groups})
    arenas = {}
    for g in groups:
        arenas.setdefault((g.env_id, settings_key(g.env_settings)), []).append(g)
    for (env, _), gs in arenas.items():
        if len(gs) < 2:
            g = gs[0]
            arena = env + (f" [{g.variant}]" if g.variant else "")
            line = f"{arena}: only one agent ({g.agent}, {g.stats['n_seeds']} seed(s)), nothing to compare; "
            if g.stats["n_with_episodes"] == 0:
                line += "it has no episodes yet."
            else:
                line += (f"final return {final_cell(g.stats['final_return'])}, env steps to converge"
                         f" {conv_cell(g.stats['steps_to_converge'], fmt_steps)}.")
            lines.append(line)
            continue
        for i in range(len(gs)):
            for j in range(i + 1, len(gs)):
                c = compare_pair(gs[i], gs[j], args)
                comparisons.append(c)
                lines.append(c["short"])
    if len(envs) > 1:
        warnings.append(f"the runs cover {len(envs)} env ids ({', '.join(envs)}): they are grouped and compared"
                        " separately")
    return comparisons, lines


# ---------------------------------------------------------------- plots


def color_of(agent, palette):
    if agent in AGENT_COLORS:
        return AGENT_COLORS[agent]
    if agent not in palette:
        palette[agent] = OTHER_COLORS[len(palette) % len(OTHER_COLORS)]
    return palette[agent]


def mean_band(curves, n=300):
    """Mean and 95% CI of curves [(x, y)] on the x range that every curve covers (None if there is none)."""
    curves = [monotone(x, y) for x, y in curves if len(x)]
    if not curves:
        return None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if hi < lo:
        return None
    grid = np.linspace(lo, hi, n) if hi > lo else np.array([lo])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    half = t975(len(curves) - 1) * ys.std(axis=0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else None
    return grid, ys.mean(axis=0), half


def time_unit(seconds):
    return (3600.0, "hours") if seconds >= 7200 else (60.0, "minutes") if seconds >= 120 else (1.0, "seconds")


def draw_curves(ax, g, series, color, label, marks=None):
    """Faint per-seed curves, the seed mean with its 95% CI band; series = [(x, y)] per seed."""
    for x, y in series:
        ax.plot(x, y, color=color, alpha=0.3, lw=0.8)
    band = mean_band(series)
    if band is not None:
        grid, m, half = band
        ax.plot(grid, m, color=color, lw=2, label=f"{label} (mean of {len(series)} seed{'s' * (len(series) > 1)})")
        if half is not None:
            ax.fill_between(grid, m - half, m + half, color=color, alpha=0.2, lw=0)
    if marks:
        xs, ys = zip(*marks)
        ax.scatter(xs, ys, color=color, marker="x", s=40, zorder=3)


def coverage_note(groups):
    """'' when every run's events are whole and reach run.json's global_step, else a line naming the runs read only in
    part (cross_check), for the foot of every plot."""
    part = [f"{r.name} ({fmt_steps(r.coverage['env_steps_read'])}"
            + (f" of {fmt_steps(r.coverage['global_step'])}" if r.coverage.get("global_step") is not None else "") + ")"
            for g in groups for r in g.runs if r.coverage and not r.coverage["complete"]]
    return (f"read only in part, see the warnings: {', '.join(part)}" if part else "")


def fig_png(fig, note=""):
    """The figure as PNG bytes; note: a line at its foot (what the figure does not cover)."""
    if note:
        fig.text(0.5, 0.0, note, ha="center", va="bottom", fontsize=8, color="#a40", wrap=True)
        fig.subplots_adjust(bottom=max(fig.subplotpars.bottom, 0.12))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def plot_returns(groups, args, wall):
    envs = sorted({g.env_id for g in groups})
    max_s = max((r.wall_seconds for g in groups for r in g.runs), default=0.0)
    scale, unit = time_unit(max_s) if wall else (1.0, "")
    fig, axes = plt.subplots(len(envs), 1, figsize=(9, 4.5 * len(envs)), squeeze=False)
    palette = {}
    for ax, env in zip(axes[:, 0], envs):
        drawn, few = False, 0
        for g in [g for g in groups if g.env_id == env]:
            series, marks = [], []
            for r in g.runs:
                if r.episodes == 0 or r.too_few_episodes:
                    few += r.too_few_episodes
                    continue
                steps, elapsed, values = r.scalars[RETURN_TAG]
                x = elapsed / scale if wall else steps
                first = args.smooth - 1  # from the first full trailing mean on, as convergence is judged
                series.append((x[first:], moving_average(values, args.smooth)[first:]))
                if r.converge_step is not None:
                    marks.append((r.converge_seconds / scale if wall else r.converge_step, r.target))
            if series:
                draw_curves(ax, g, series, color_of(g.name, palette), g.name, marks)
                drawn = True
        if args.threshold is not None:
            ax.axhline(args.threshold, color="gray", ls="--", lw=1, label=f"threshold {args.threshold:g}")
        if few:
            ax.text(0.01, 0.99, f"{few} seed(s) with fewer than {args.smooth} episodes (--smooth): not drawn",
                    ha="left", va="top", fontsize=8, color="#a40", transform=ax.transAxes)
        if not drawn and not few:
            ax.text(0.5, 0.5, "no episodes yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{env}: episodic return (trailing mean of {args.smooth}), x = seed reached its target")
        ax.set_xlabel(f"wall-clock time since start ({unit})" if wall else "env steps")
        ax.set_ylabel("episodic return")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig_png(fig, coverage_note(groups))


def plot_tags(groups, tags, args, title, multi_env):
    cols = min(3, len(tags))
    rows = math.ceil(len(tags) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    palette = {}
    for ax, tag in zip(axes.flat, tags):
        drawn = False
        for g in groups:
            series = [(r.scalars[tag][0], moving_average(r.scalars[tag][2], args.smooth))
                      for r in g.runs if tag in r.scalars]
            if series:
                draw_curves(ax, g, series, color_of(g.label if multi_env else g.name, palette),
                            g.label if multi_env else g.name)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("env steps", fontsize=8)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig_png(fig, coverage_note(groups))


def plot_sps(groups, args, multi_env):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    palette = {}
    names, means, errs, colors = [], [], [], []
    for g in groups:
        name = g.label if multi_env else g.name
        color = color_of(name, palette)
        series = [(r.scalars[SPS_TAG][0], r.scalars[SPS_TAG][2]) for r in g.runs if SPS_TAG in r.scalars]
        if series:
            draw_curves(ax1, g, series, color, name)
        s = g.stats["sps"]
        if s["mean"] is not None:
            names.append(name), means.append(s["mean"]), errs.append(s["ci95"] or 0.0), colors.append(color)
    ax1.set_title("charts/SPS (env steps per second)")
    ax1.set_xlabel("env steps")
    ax1.grid(alpha=0.3)
    if ax1.lines:
        ax1.legend(fontsize=8)
    else:
        ax1.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax1.transAxes)
    if names:
        ax2.bar(range(len(names)), means, yerr=errs, color=colors, capsize=4)
        ax2.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax2.set_title("final SPS, mean over seeds (95% CI)")
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig_png(fig, coverage_note(groups))


# ---------------------------------------------------------------- tables, markdown, html


def too_few_note(s):
    """'; k with fewer than N episodes' when seeds had too few episodes for a smoothed return, else ''."""
    return f"; {s['n_too_few']} with fewer than {s['smooth']} episodes" if s["n_too_few"] else ""


def conv_cell(s, fmt):
    if s["n_with_episodes"] == 0:
        return "no episodes yet"
    if s["n_reached"] == 0:
        return f"not reached (0/{s['n_with_episodes']}{too_few_note(s)})"
    note = f"{s['n_reached']}/{s['n_with_episodes']} reached{too_few_note(s)}"
    if s["n_reached"] < s["n_with_episodes"]:
        note += ", mean of those"
    return fmt_ci(s, fmt, note)


def final_cell(s):
    """The final return, saying when some seeds had fewer than --final-episodes episodes to average."""
    short = f"{s['n_short']}/{s['n']} seed(s) averaged fewer than {s['final_episodes']} episodes" if s["n_short"] else ""
    return fmt_ci(s, fmt_num, short)


def settings_key(settings):
    """Seeds are pooled only when this is equal: the env settings as canonical JSON, None when not recorded."""
    return None if settings is None else json.dumps(settings, sort_keys=True)


def mark_variants(groups, warnings):
    """Name what sets a group's env settings apart, where an env id has groups with different settings."""
    for env in sorted({g.env_id for g in groups}):
        gs = [g for g in groups if g.env_id == env]
        keys = {settings_key(g.env_settings) for g in gs}
        if len(keys) < 2:
            continue
        recorded = [g.env_settings for g in gs if g.env_settings is not None]
        differ = sorted({k for s in recorded for k in s if len({json.dumps(t.get(k)) for t in recorded}) > 1})
        for g in gs:
            g.variant = ("env settings not recorded" if g.env_settings is None
                         else ", ".join(f"{k}={g.env_settings.get(k)}" for k in differ) or "env settings recorded")
        warnings.append(f"{env}: the runs differ in env settings ({'; '.join(sorted({g.variant for g in gs}))}):"
                        " seeds are pooled only with seeds of the same settings, and groups are compared only with"
                        " groups of the same settings"
                        + ("; run.json files without env_settings (older runs) are kept apart from those that record"
                           " them" if None in keys else ""))


def group_table(groups, args):
    head = ["agent", "env id", "seeds", "env steps", "episodes", f"final return (last {args.final_episodes} ep.)",
            "env steps to converge", "wall time to converge", "SPS"]
    rows = []
    for g in groups:
        s = g.stats
        st = s["env_steps"]
        steps = fmt_steps(st["max"]) if st["min"] == st["max"] else f"{fmt_steps(st['min'])}–{fmt_steps(st['max'])}"
        if s["read_in_part"]:
            steps += f" ({len(s['read_in_part'])} seed(s) read only in part)"
        seeds = str(s["n_seeds"])
        if s["n_with_episodes"] < s["n_seeds"]:
            seeds += f" ({s['n_seeds'] - s['n_with_episodes']} without episodes)"
        final = final_cell(s["final_return"]) if s["n_with_episodes"] else "no episodes yet"
        rows.append([g.name, g.env_id, seeds, steps, str(s["episodes"]), final,
                     conv_cell(s["steps_to_converge"], fmt_steps), conv_cell(s["seconds_to_converge"], fmt_seconds),
                     fmt_ci(s["sps"], lambda v: f"{v:.0f}")])
    return head, rows


def run_table(groups, args):
    head = ["run", "agent", "seed", "status", "env steps", "episodes", "final return", "target",
            "env steps to converge", "wall time to converge", "SPS", "wall time"]
    rows = []
    for g in groups:
        for r in g.runs:
            none = ("no episodes yet" if r.episodes == 0 else
                    f"not reached (too few episodes: {r.episodes} < --smooth {args.smooth})" if r.too_few_episodes
                    else "not reached")
            final = fmt_num(r.final_return) if r.episodes else "no episodes yet"
            if r.episodes and r.final_return_episodes < args.final_episodes:
                final += f" (mean of {r.final_return_episodes} < {args.final_episodes} episodes)"
            steps = fmt_steps(r.steps)
            if r.coverage and not r.coverage["complete"]:
                steps += (f" of {fmt_steps(r.coverage['global_step'])}" if r.coverage["global_step"] is not None
                          and r.coverage["global_step"] > r.steps else "") + " (read only in part: see the warnings)"
            rows.append([r.name, g.name, str(r.seed), r.status, steps, str(r.episodes),
                         final, fmt_num(r.target),
                         fmt_steps(r.converge_step) if r.converge_step is not None else none,
                         fmt_seconds(r.converge_seconds) if r.converge_seconds is not None else none,
                         f"{r.sps:.0f}" if r.sps is not None else "n/a", fmt_seconds(r.wall_seconds)])
    return head, rows


def pieces_table(groups):
    head = ["run", "piece", "env steps", "wall time", "SPS", "machine", "settings"]
    rows = []
    for g in groups:
        for r in g.runs:
            for i, p in enumerate(r.pieces, 1):
                rows.append([r.name, str(i), f"{p['start_step']:,} → {p['end_step']:,}", fmt_seconds(p["wall_seconds"]),
                             f"{p['sps']:.0f}" if p["sps"] is not None else "n/a",
                             p["machine"] or "not recorded" + (" (read off the event files)" if p["source"] == "event files"
                                                               else ""), p["settings"]])
    return head, rows


def md_table(head, rows):
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def html_table(head, rows):
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def definitions(args):
    conv = (f"the first env step at which the smoothed return (trailing mean of {args.smooth} episodes; the first"
            f" {args.smooth - 1} episodes are skipped) reaches "
            + (f"the threshold {args.threshold:g}" if args.threshold is not None else
               f"{args.converge_fraction:.0%} of the seed's own final return (final - {1 - args.converge_fraction:.2g}"
               " x |final|)")
            + f"; 'not reached' otherwise, and for a seed with fewer than {args.smooth} episodes (no smoothed return;"
            " such seeds make the comparison inconclusive). Group value: mean ± 95% CI over the seeds that reached it.")
    return [f"Final return: mean of each seed's last {args.final_episodes} episodes (all if fewer, which the tables"
            " say), then mean ± 95% CI over seeds (t distribution; 1 seed: CI n/a).",
            "Converge: " + conv,
            "Wall time: seconds since the run's first event; for a resumed run, the pause between the sessions and"
            " the earlier session's time after its last kept event are left out.",
            "SPS: each seed's last charts/SPS value, mean ± 95% CI over seeds.",
            "Seeds are pooled only with seeds of the same agent, env id and env settings (run.json env_settings;"
            " runs without them are pooled with each other).",
            "Coverage: every figure covers the events TensorBoard reads. Each run's event files are checked for cut-short"
            " or corrupt records (where TensorBoard stops reading without a word) and against run.json (global_step, one"
            " event file per training piece); a run read only in part says so in the tables, the plots and the"
            " warnings."]


PIECES_NOTE = ("A piece is one training process: a run stopped (SIGTERM) and continued with --resume, maybe on"
               " another machine, has several. Wall time and SPS are the piece's own, from the start of its training"
               " loop (after loading and env set-up) to its last checkpoint; SPS = env steps / wall time. From"
               " run.json sessions when they cover the run from step 0, else read off the event files (one piece per"
               " file, ending at its last logged step). The whole run is listed, whatever --max-steps says.")

PLOTS = [("return_vs_steps.png", "Episodic return vs env steps"),
         ("return_vs_wallclock.png", "Episodic return vs wall-clock time"),
         ("losses.png", "Losses"), ("sps.png", "Steps per second")]


def render_markdown(groups, lines, comparisons, warnings, args, created):
    out = ["# Run comparison: memory (RAM) agent vs pixel agent", "",
           f"Made by compare_runs.py on {created} from {sum(len(g.runs) for g in groups)} run(s) in"
           f" {len(groups)} agent group(s).", "", "## Answer", ""]
    out += [f"- {l}" for l in lines]
    for c in comparisons:
        out += ["", f"**{c['groups'][0]} vs {c['groups'][1]} on {c['arena']}**", ""]
        out += [f"- {c[k]['text']}" for k in ("steps", "wall_clock", "final_return")]
        out += [f"- caveat: {cv}" for cv in c["caveats"]]
    out += ["", "## Per agent", "", md_table(*group_table(groups, args)), ""]
    out += [f"- {d}" for d in definitions(args)]
    out += ["", "## Per run", "", md_table(*run_table(groups, args)), ""]
    out += ["## Pieces", "", PIECES_NOTE, "", md_table(*pieces_table(groups)), ""]
    if warnings:
        out += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    out += ["## Plots", ""] + [f"![{t}]({f})" for f, t in PLOTS] + [""]
    return "\n".join(out)


def render_html(groups, lines, comparisons, warnings, args, created, pngs):
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Run comparison</title><style>",
             "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}",
             "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #bbb;padding:4px 8px}",
             "th{background:#eee}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}.warn{color:#a40}",
             "</style></head><body>", "<h1>Run comparison: memory (RAM) agent vs pixel agent</h1>",
             f"<p>Made by compare_runs.py on {e(created)} from {sum(len(g.runs) for g in groups)} run(s) in"
             f" {len(groups)} agent group(s).</p><h2>Answer</h2><ul>"]
    parts += [f"<li>{e(l)}</li>" for l in lines] + ["</ul>"]
    for c in comparisons:
        parts.append(f"<h3>{e(c['groups'][0])} vs {e(c['groups'][1])} on {e(c['arena'])}</h3><ul>")
        parts += [f"<li>{e(c[k]['text'])}</li>" for k in ("steps", "wall_clock", "final_return")]
        parts += [f"<li><i>caveat:</i> {e(cv)}</li>" for cv in c["caveats"]] + ["</ul>"]
    parts += ["<h2>Per agent</h2>", html_table(*group_table(groups, args)), "<ul>"]
    parts += [f"<li>{e(d)}</li>" for d in definitions(args)] + ["</ul>"]
    for name, title in PLOTS:
        b64 = base64.b64encode(pngs[name]).decode("ascii")
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(name)}' src='data:image/png;base64,{b64}'>")
    parts += ["<h2>Per run</h2>", html_table(*run_table(groups, args))]
    parts += ["<h2>Pieces</h2>", f"<p>{e(PIECES_NOTE)}</p>", html_table(*pieces_table(groups))]
    if warnings:
        parts += ["<h2>Warnings</h2><ul>"] + [f"<li class='warn'>{e(w)}</li>" for w in warnings] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_json(groups, lines, comparisons, warnings, args, created):
    runs = [{"run_dir": r.path, "run_name": r.name, "agent": r.agent, "env_id": r.env_id, "seed": r.seed,
             "status": r.status, "hardware": r.hardware, "event_files": len(r.event_files), "env_steps": r.steps,
             "wall_seconds": r.wall_seconds, "episodes": r.episodes, "final_return": r.final_return,
             "target": r.target, "steps_to_converge": r.converge_step, "seconds_to_converge": r.converge_seconds,
             "sps": r.sps, "final_return_episodes": r.final_return_episodes,
             "too_few_episodes": r.too_few_episodes, "env_settings": r.env_settings, "runtime": r.runtime,
             "pieces": r.pieces, "coverage": r.coverage}
            for g in groups for r in g.runs]
    return {"format": "memory-pixel-interp/compare", "version": 1, "created": created,
            "args": dataclasses.asdict(args), "definitions": definitions(args), "answer": lines,
            "comparisons": comparisons,
            "groups": [{"agent": g.agent, "env_id": g.env_id, "variant": g.variant, **g.stats} for g in groups],
            "runs": runs, "warnings": warnings, "plots": [f for f, _ in PLOTS]}


def finite(obj):
    """JSON-safe copy: NaN/inf become null (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_outputs(out_dir, files):
    """Write every file to a temp name first, then rename them all: a failure leaves the old outputs intact."""
    tmps = []
    try:
        os.makedirs(out_dir, exist_ok=True)
        for name, data in files.items():
            tmp = os.path.join(out_dir, f"{name}.tmp-{os.getpid()}")
            tmps.append(tmp)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        clash = [name for name in files if os.path.isdir(os.path.join(out_dir, name))]
        if clash:  # checked before any rename, so the outputs are replaced all together or not at all
            raise OSError(errno.EISDIR, f"'{clash[0]}' there is a folder")
        for tmp, name in zip(tmps, files):
            os.replace(tmp, os.path.join(out_dir, name))
    except OSError as e:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise InputError(f"cannot write the output folder '{out_dir}': {e.strerror or one_line(e)}")


# ---------------------------------------------------------------- main


def main(args):
    if not args.run_dirs:
        raise InputError("give at least one run folder (runs/<run_name>/) or a folder of runs (runs/)")
    existing = os.path.abspath(args.out_dir)
    while not os.path.exists(existing):  # fail before the slow part if the folder cannot be made
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"cannot make the output folder '{args.out_dir}': '{existing}' is a file")
    probe = os.path.join(existing, f".compare-write-test.tmp-{os.getpid()}")
    try:  # a read-only folder: found now, not after reading every run
        open(probe, "wb").close()
        os.remove(probe)
    except OSError as e:
        raise InputError(f"cannot write the output folder '{args.out_dir}': {e.strerror or one_line(e)}")

    warnings = []
    runs = [read_run_meta(folder, events, warnings) for folder, events in find_runs(args.run_dirs)]
    print(f"read {len(runs)} run(s):")
    for r in runs:
        load_scalars(r, args.max_steps)
        analyse_run(r, args)
        cross_check(r, args.max_steps, warnings)
        print(f"  {r.path}: agent={r.agent} env={r.env_id} seed={r.seed} status={r.status} steps={r.steps:,}"
              f" episodes={r.episodes} wall={fmt_seconds(r.wall_seconds)} ({len(r.event_files)} event file(s))")
        if r.episodes == 0:
            warnings.append(f"{r.path}: no episodes yet (no {RETURN_TAG} events)")

    if args.split_by:
        for r in runs:
            value = r.meta
            for part in args.split_by.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            r.agent = f"{r.agent} ({args.split_by.split('.')[-1]}={value})"
    by_key = {}  # seeds are pooled by agent, env id and env settings
    for r in runs:
        by_key.setdefault((r.agent, r.env_id.replace("/", "_"), settings_key(r.env_settings)), []).append(r)
    order = {"ram": 0, "pixel": 1}  # the memory agent first, as the research question is put
    groups = [Group(agent=rs[0].agent, env_id=next((r.env_id for r in rs if "/" in r.env_id), rs[0].env_id),
                    runs=sorted(rs, key=lambda r: (r.seed is None, r.seed or 0, r.name)), env_settings=rs[0].env_settings)
              for _, rs in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][2] or "", order.get(kv[0][0], 2),
                                                                  kv[0][0]))]
    mark_variants(groups, warnings)
    print("groups:")
    for g in groups:
        group_stats(g, args)
        seeds = [r.seed for r in g.runs]
        if len(set(seeds)) < len(seeds):
            warnings.append(f"{g.label}: the same seed appears more than once ({seeds})")
        st = g.stats["env_steps"]
        print(f"  {g.label}: {len(g.runs)} seed(s) {seeds}, env steps {st['min']:,}"
              + (f"..{st['max']:,}" if st["max"] != st["min"] else ""))

    comparisons, lines = answer(groups, args, warnings)
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    multi_env = len({g.env_id for g in groups}) > 1
    pngs = {"return_vs_steps.png": plot_returns(groups, args, wall=False),
            "return_vs_wallclock.png": plot_returns(groups, args, wall=True),
            "losses.png": plot_tags(groups, LOSS_TAGS, args, f"losses (trailing mean of {args.smooth} updates)",
                                    multi_env),
            "sps.png": plot_sps(groups, args, multi_env)}
    files = dict(pngs)
    files["summary.md"] = render_markdown(groups, lines, comparisons, warnings, args, created).encode()
    files["summary.json"] = (json.dumps(finite(summary_json(groups, lines, comparisons, warnings, args, created)),
                                        indent=2, allow_nan=False) + "\n").encode()
    files["index.html"] = render_html(groups, lines, comparisons, warnings, args, created, pngs).encode()
    write_outputs(args.out_dir, files)

    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("answer:")
    for l in lines:
        print(f"  {l}")
    print(f"wrote {', '.join(os.path.join(args.out_dir, f) for f in files)}")


if __name__ == "__main__":
    cli_args = parse_args()
    check_ranges(cli_args, RANGES)
    try:
        main(cli_args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
