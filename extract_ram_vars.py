"""Find which of an Atari game's 128 RAM bytes are game state, from the emulator alone.

    python extract_ram_vars.py --env-id BreakoutNoFrameskip-v4          # writes ram_vars/<env-id>.json
    python extract_ram_vars.py --env-id PongNoFrameskip-v4 --total-frames 2000   # a tiny budget
    python extract_ram_vars.py --checkpoint runs/X/checkpoint.pt        # let a trained agent drive part of the play

No per-game address table is used anywhere: everything is measured on the emulator (ale_py.ALEInterface).

1. Explore and record. The game is played for `--total-frames` emulated frames and every frame's 128 RAM
   bytes are recorded (value histogram and frame-to-frame changes per byte). A random policy never gets far
   (on Breakout it breaks a handful of bricks), so play is Go-Explore-like: an archive of cloned states
   (RNG included) is kept in cells keyed by (score, lives); inside a cell the states most novel in RAM
   (sum over bytes of 1/sqrt(1 + times that byte's value was seen)) are kept. Each rollout restores a state
   from a cell chosen with a preference for higher score, more lives and cells chosen less often, and
   continues with "sticky" random actions (one action held for 1-31 frames); a few rollouts start from
   reset. With `--checkpoint` (a pixel or RAM agent, FORMATS.md section 2/3) a `--policy-fraction` of the
   frames is played by the agent from reset (noop start, FIRE, frame skip 4, CleanRL observations) and the
   states it reaches join the archive, so exploration also branches from where the agent gets.
2. Intervene. Bytes that never changed are "constant". Every changing byte is tested at base states: the
   state right after reset (every game passes through it), states sampled uniformly from all recorded
   frames, states 16-56 frames before a reward or a lost life (bytes read only at collisions / scoring
   matter there), and Go-Explore archive states (far along, novel). At a base it is set once (`ale.setRAM`, at the
   frame boundary) to other values it was seen to take, `--horizon` frames are emulated with the same
   actions as an untouched twin run from the same state, and the screens (read after each emulated frame,
   since setRAM does not redraw) and the other 127 RAM bytes are compared frame by frame. Each twin is
   replayed twice (clones include the RNG) and a base whose two untouched replays differ is dropped, so
   differences are causal, not noise. Whether the game kept the set value or overwrote it on the next frame
   is recorded; overwritten alone does not make a byte scratch if the future differed. Bytes with no effect
   whose value the game kept are re-tested over `--long-horizon` frames. A changing byte that altered the
   future is "state"; one that never did is sorted further in step 4 (derived, stored, input-driven, scratch).
3. Bitmaps. For every state byte whose change reached the screen, each bit is flipped in
   `--bitmap-contexts` (base state, byte value) contexts, the value is held (re-applied) for 1-2 frames,
   and the screens are diffed. Contexts where the game rewrote a held value, or where no bit changes the
   screen (the bitmap is hidden then), are left out. A bit is a "block" when its flip changes pixels in
   >= 75% of the remaining contexts, the same bounding box comes back in >= 75% of those, the box is
   compact (changed pixels fill >= 50% of it) and small (<= 5% of the screen). A byte is "bitmap" when
   >= 2 bits are blocks with pairwise disjoint boxes, every other bit has no screen effect, the value
   held in at least half of the contexts and the byte showed on screen in at least a quarter (e.g.
   Breakout's brick rows; a position, a moving object or a score digit fails: its change moves with the
   value, the game rewrites it, or the boxes overlap).

4. Kinds beyond state / scratch. Twins and interventions are replayed on a second emulator with sticky actions
   off (cloneState does not keep the action a sticky repeat reuses, so on ALE/*-v5 ids two replays of one state
   could differ); a null intervention (a byte's own value written back) is run at every base and must differ in
   no trial (`produced_by.null_interventions`). A byte that never changed in play is written with a few other
   values: if the future differs it is "latent" (state play did not reach, e.g. a high score digit), else
   "constant". A changing byte with no effect is, in this order: "derived" when, over every frame of the twins,
   it is a function (copy, offset, affine, table) of one byte that has an effect, on the same or the previous
   frame (a display copy: the record names the source); "stored" when the written change was still in the
   byte after the first frame in >= 25% of the trials (memory, not a temporary: state read only at events the
   trials did not reach, e.g. the pins of a bowling frame); "input-driven" when, re-tested with each action of
   the minimal set held for the horizon, it had an effect (the controller rewrites it under random actions);
   "derived" (mapping "computed") when the game overwrote it within one frame (in > 75% of the trials) and
   writing some bytes with an effect changed it on the next frame (a value recomputed every frame from other
   bytes, e.g. a multiplexed sprite's position: the record names them); else "scratch".
5. Roles. Every selected or derived byte gets a role with its evidence, from play and interventions alone, the
   first that fits in this order: lives / score from ALE's own signals (ALE computes reward and lives() from RAM
   after every frame, so writing a lives or score byte changes lives() or the next frame's reward, with the sign
   of the written change or by several different amounts, in >= 30% of its trials; this also names score digits play never reached); copy /
   function of byte N (or of bytes [N, ...] for a computed byte); bitmap; lives (changes when ale.lives() does);
   x- / y-position (holding it at several values for 4 frames, so objects drawn on alternate frames show, moves a
   screen object's centre along one axis: in a line with the value, |r| >= 0.9, or along that axis only, as with
   coarse/fine-encoded x positions; checked before counting, since a moving object also steps at fixed
   intervals); score / BCD score (changes on rewarded frames, where those are at most 30% of play); counter / timer / toggle (fixed step at fixed
   intervals); appearance (holding it changes what is drawn in one small place, not where: an object's kind, sprite
   or colour); flag (two values); screen state (writing it changes the screen, but no fit above holds: e.g. an object
   off screen at most bases); unknown. Then relations between bytes: a display copy of a position byte is
   that position (`copy_of`), and a byte left unknown, flag, counter, timer, toggle, appearance or screen state that equals the frame-to-frame
   change of a position byte (as a signed byte) is its velocity, or whose value or one bit fixes the sign of that
   change its direction; a byte called a position yields to velocity only (holding a velocity byte moves its
   object too). Last, a position byte's `moved_by` (the actions that, held 8 frames, moved it against NOOP) and
   `object`: the player's, the player's shot (FIRE only) or other. A latent byte is score or lives by the ALE signals,
   else latent (screen element).
   `coverage` reports how far play got (best score, lives seen, rarely changing selected bytes).

Selection rule (default): selected = kinds "state", "bitmap", "latent" and "input-driven", i.e. bytes whose
written value altered the future screen or other RAM bytes in more than `--min-effect` of the trials
(default 0: in at least one trial), and "stored" (no effect seen, but memory the game keeps); excluded:
"constant", "scratch", "derived" (a label: its sources, selected at the default flags, are the state).
Input-driven bytes are not compared with `--min-effect`. `--drop-bitmaps` also excludes bitmap
bytes (reason "bitmap"); bytes at or below `--min-effect` are excluded with reason "weak-effect", and so are
stored bytes when `--min-effect` is above 0.

Output: `<out-dir>/<env-id with / -> _>.json` in the FORMATS.md section 1 schema (written atomically):
selected indices, excluded indices with reasons, one record per byte (kind, min, max, n_distinct,
change_rate, "values" when <= 16 distinct, and "intervention": the trial figures of `summarize_trials`,
"effect_fraction" (the larger of the short and long-horizon differed fractions), "long_horizon" (same
figures for the re-test, when run) and "bitmap" (per-bit effect and box [x0, y0, x1, y1) for tested
bytes)), the selection rule, and produced_by (frames, seed, policy, args, seconds, base/frame counts).
The result is deterministic for a given --seed (only the timings differ).
"""
import collections
import contextlib
import io
import itertools
import json
import os
import re
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Optional

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions.categorical import Categorical


@dataclass
class Args:
    env_id: str = "BreakoutNoFrameskip-v4"
    """any ALE gymnasium id (`BreakoutNoFrameskip-v4`, `ALE/Pong-v5`, ...); the ROM name is derived from it"""
    seed: int = 1
    """seed of the emulator and of every random choice (same seed -> same JSON, timings aside)"""
    total_frames: int = 300_000
    """emulated frames of exploration play that are recorded (2000: a tiny budget, as the tests use)"""
    out_dir: str = "ram_vars"
    """folder of the output JSON (`<out-dir>/<env-id>.json`, `/` in the id becomes `_`)"""
    checkpoint: Optional[str] = None
    """optional pixel or RAM agent checkpoint (runs/X/checkpoint.pt) that plays part of the exploration"""
    policy_fraction: float = 0.5
    """with --checkpoint: fraction of the exploration frames played by the agent (the rest is Go-Explore)"""
    n_bases: int = 0
    """base states per intervention test (reset state, a third uniform over recorded frames, a third shortly
    before rewards / lost lives, the rest from the archive); 0 = auto: total_frames/10000 clipped to [10, 30]"""
    values_per_base: int = 2
    """other observed values each byte is set to at each base state"""
    horizon: int = 48
    """frames emulated after an intervention, compared with the untouched twin"""
    long_horizon: int = 600
    """frames of the re-test of bytes that had no effect but whose value the game kept (0 = no re-test)"""
    long_bases: int = 0
    """base states of that re-test (2 values tried at each); 0 = auto (3 for budgets under 50000 frames, else 6)"""
    bitmap_contexts: int = 12
    """(base state, byte value) contexts in which each bit is flipped for the bitmap test"""
    drop_bitmaps: bool = False
    """exclude bitmap bytes (graphics-like state such as brick rows) from the selection"""
    min_effect: float = 0.0
    """a state byte is selected only if the fraction of its trials whose future differed is above this (above 0,
    stored bytes, which had no effect in any trial, are excluded too)"""
    roles_into: Optional[str] = None
    """an older ram vars JSON of the same game (e.g. the one a shipped memory agent was trained on) that gets this
    run's byte roles: each byte record's "role" is added or replaced, everything else (`selected` included) is kept"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {
    "seed": "[0, 2147483647]", "total_frames": "[100, inf)", "policy_fraction": "[0, 1]", "n_bases": "[0, inf)",
    "values_per_base": "[1, inf)", "horizon": "[1, inf)", "long_horizon": "[0, inf)", "long_bases": "[0, inf)",
    "bitmap_contexts": "[1, inf)", "min_effect": "[0, 1)",
}


# ---------------------------------------------------------------- errors, env ids, emulator
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


def rom_name(env_id: str) -> str:
    """ALE ROM name of a gymnasium ALE id, from ale_py's own registration ('BreakoutNoFrameskip-v4' -> 'breakout')."""
    gym.register_envs(ale_py)
    spec = gym.registry.get(env_id)
    game = spec.kwargs.get("game") if spec is not None and "ale_py" in str(spec.entry_point) else None
    if game is None:
        raise InputError(f"unknown env id '{env_id}' (not an ALE gymnasium id such as BreakoutNoFrameskip-v4 or ALE/Pong-v5)")
    return game


def registered_play_settings(env_id: str) -> dict:
    """What the id's registration says about play: sticky-action probability and frame skip (ale_py's kwargs)."""
    kwargs = gym.registry[env_id].kwargs
    frameskip = kwargs.get("frameskip", 4)
    return {"repeat_action_probability": float(kwargs.get("repeat_action_probability", 0.25)),
            "frameskip": frameskip if isinstance(frameskip, int) else list(frameskip)}


def make_ale(game: str, seed: int, repeat_action_probability: float) -> ale_py.ALEInterface:
    """Raw emulator, one frame per act(), with the given sticky-action probability."""
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", repeat_action_probability)
    ale.loadROM(ale_py.roms.get_rom_path(game))
    return ale


def check_out_dir(out_dir: str, path: str):
    """Fail now, before minutes of work, if the output cannot be written."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = f"{path}.tmp-{os.getpid()}"
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        raise InputError(f"cannot write to output folder '{out_dir}': {e.strerror or e}")


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


def write_json_atomic(path: str, obj):
    """The JSON file, one space per indentation level, written atomically."""
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


@contextlib.contextmanager
def emulator_stderr_silenced():
    """The emulator's C++ core prints e.g. "Illegal Instruction!" straight to fd 2 when an intervention
    crashes the game's CPU (a byte holding a return address); keep stderr for our own one-line errors."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class Progress:
    """Prints `[stage] done/total frames (%), frames/s, ETA` at most every `every` seconds."""

    def __init__(self, stage: str, total: int, every: float = 2.0):
        self.stage, self.total, self.every = stage, max(int(total), 1), every
        self.t0 = self.last = time.time()

    def update(self, done: int, extra: str = "", force: bool = False):
        now = time.time()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = max(self.total - done, 0) / max(rate, 1e-9)
        print(f"[{self.stage}] {done}/{self.total} frames ({100 * done / self.total:.0f}%), "
              f"{rate:.0f} frames/s, ETA {eta:.0f}s{(', ' + extra) if extra else ''}", flush=True)


# ---------------------------------------------------------------- agents (FORMATS.md section 3, verbatim)
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


def load_checkpoint(path: str, game: str, n_actions: int):
    """-> (model, kind, ram_indices). Any problem is a InputError naming the checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # nothing is unpickled
    except Exception as e:  # missing, directory, truncated, not a torch file, ...
        raise InputError(f"cannot read checkpoint '{path}': {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != "memory-pixel-interp/checkpoint":
        raise InputError(f"'{path}' is not a memory-pixel-interp checkpoint (no format 'memory-pixel-interp/checkpoint')")
    kind, kwargs = ckpt.get("agent"), ckpt.get("model_kwargs")
    if kind not in ("pixel", "ram") or not isinstance(kwargs, dict) or "state_dict" not in ckpt:
        raise InputError(f"checkpoint '{path}' lacks agent/model_kwargs/state_dict")
    if ckpt.get("game") not in (None, game):
        raise InputError(f"checkpoint '{path}' is for game '{ckpt.get('game')}', not '{game}'")
    if kwargs.get("n_actions") != n_actions:
        raise InputError(f"checkpoint '{path}' has {kwargs.get('n_actions')} actions, {game} has {n_actions}")
    ram_indices = None
    try:
        if kind == "pixel":
            model = Agent(**kwargs)
        else:
            ram_indices = [int(i) for i in ckpt.get("ram_indices") or []]
            if len(ram_indices) != kwargs.get("n_ram") or not all(0 <= i < 128 for i in ram_indices):
                raise ValueError("ram_indices do not match model_kwargs.n_ram or are outside 0..127")
            model = RamAgent(**kwargs)
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise InputError(f"checkpoint '{path}' does not load into the {kind} agent: {str(e).splitlines()[0]}")
    model.eval()
    return model, kind, ram_indices


# ---------------------------------------------------------------- exploration
def sticky_random_actions(rng, actions, n):
    """n random actions, each one held for 1-31 frames (log-uniform), so the agent actually gets somewhere."""
    out, hold, a = [], 0, actions[0]
    for _ in range(n):
        if hold == 0:
            a, hold = actions[rng.integers(len(actions))], int(2 ** rng.uniform(0, 5))
        hold -= 1
        out.append(a)
    return out


class Reservoir:
    """Uniform random sample of k items from a stream; an item is built (cloned) only if it is kept."""

    def __init__(self, k, rng):
        self.k, self.rng, self.seen, self.items = k, rng, 0, []

    def offer(self, make):
        self.seen += 1
        j = len(self.items) if len(self.items) < self.k else int(self.rng.integers(self.seen))
        if j < self.k:
            if j == len(self.items):
                self.items.append(make())
            else:
                self.items[j] = make()


class Explorer:
    """Emulates frames one at a time, records every frame's RAM, keeps a Go-Explore archive, and samples
    base states for the interventions: uniformly over all visited frames, and shortly before events."""

    CELL_SIZE = 16        # states kept per (score, lives) cell, the most RAM-novel ones
    INSERT_EVERY = 32     # frames between archive insertion attempts (also after every reward)
    RECENT_EVERY = 8      # a state is cloned into the recent ring every 8 frames ...
    EVENT_LEAD = 16       # ... and one >= 16 frames before a reward or a lost life becomes an event candidate

    def __init__(self, ale, rng, total_frames, n_sampled):
        self.ale, self.rng, self.total = ale, rng, total_frames
        sample_rng = np.random.default_rng(rng.integers(2**63))
        self.uniform = Reservoir(n_sampled, sample_rng)   # visited (non-terminal) states, uniformly
        self.events = Reservoir(n_sampled, sample_rng)    # states 16-56 frames before a reward / lost life
        self.recent = collections.deque(maxlen=6)         # (frame, entry) along the current trajectory
        self.lives_now = 0
        self.lives_seen = set()                           # ale.lives() values met in play (coverage report)
        self.reset_entry = None                           # the state right after the first reset
        self.actions = list(ale.getMinimalActionSet())
        self.counts = np.zeros((128, 256), np.int64)      # value histogram per byte
        self.changes = np.zeros(128, np.int64)            # frame-to-frame changes per byte
        self.transitions = 0
        self.frames = 0
        self.ram = np.zeros(128, np.uint8)
        self.prev = None
        self.cells = {}                                   # (score, lives) -> {"entries": [...], "chosen": n}
        self.best_score = 0.0
        self.progress = Progress("explore", total_frames)
        self._idx = np.arange(128)

    def record(self):
        self.ale.getRAM(self.ram)
        self.counts[self._idx, self.ram] += 1
        if self.prev is not None:
            self.changes += self.ram != self.prev
            self.transitions += 1
        self.prev = self.ram.copy()
        self.frames += 1
        self.progress.update(self.frames, f"archive {len(self.cells)} cells, best score {self.best_score:g}")

    def entry(self):
        return {"state": self.ale.cloneState(include_rng=True), "ram": self.ram.copy()}

    def frame(self, action) -> float:
        reward = self.ale.act(action)
        self.record()
        if self.ale.game_over():
            return reward
        self.uniform.offer(self.entry)
        lives = self.ale.lives()
        if reward != 0 or lives < self.lives_now:          # an event: offer a state from shortly before it
            before = [e for f, e in self.recent if f <= self.frames - self.EVENT_LEAD]
            if before and not before[-1].get("offered"):
                before[-1]["offered"] = True
                self.events.offer(lambda: before[-1])
        self.lives_now = lives
        self.lives_seen.add(lives)
        if self.frames % self.RECENT_EVERY == 0:
            self.recent.append((self.frames, self.entry()))
        return reward

    def restart_trajectory(self):
        self.recent.clear()
        self.lives_now = self.ale.lives()

    def novelty(self, ram):
        return float((1.0 / np.sqrt(1.0 + self.counts[self._idx, ram])).sum())

    def insert(self, score, lives):
        """Offer the current state to the (score, lives) cell; keep the CELL_SIZE most novel states."""
        self.best_score = max(self.best_score, score)
        cell = self.cells.setdefault((score, lives), {"entries": [], "chosen": 0})
        entry = {"state": self.ale.cloneState(include_rng=True), "ram": self.ram.copy(),
                 "score": score, "lives": lives, "chosen": 0}
        entries = cell["entries"]
        if len(entries) < self.CELL_SIZE:
            entries.append(entry)
            return
        novs = [self.novelty(e["ram"]) for e in entries]
        j = int(np.argmin(novs))
        if self.novelty(self.ram) > novs[j]:
            entries[j] = entry

    def start_from_reset(self):
        self.ale.reset_game()
        self.prev = None
        self.record()
        self.restart_trajectory()
        if self.reset_entry is None:
            self.reset_entry = self.entry()
        self.uniform.offer(self.entry)
        return 0.0, self.ale.lives()

    def choose(self):
        """Cell: prefer higher score (weight halves per better score level), more lives, less chosen."""
        keys = list(self.cells)
        score = np.array([k[0] for k in keys], float)
        lives = np.array([k[1] for k in keys], float)
        levels = np.unique(score)
        above = len(levels) - 1 - np.searchsorted(levels, score)
        chosen = np.array([self.cells[k]["chosen"] for k in keys], float)
        w = 0.5 ** above * ((lives + 1) / (lives.max() + 1)) ** 2 / np.sqrt(1 + chosen)
        w = 0.9 * w / w.sum() + 0.1 / len(w)
        cell = self.cells[keys[self.rng.choice(len(keys), p=w)]]
        cell["chosen"] += 1
        entries = cell["entries"]
        nov = np.array([self.novelty(e["ram"]) for e in entries])
        pw = nov / np.sqrt(1 + np.array([e["chosen"] for e in entries], float))
        entry = entries[self.rng.choice(len(entries), p=pw / pw.sum())]
        entry["chosen"] += 1
        return entry

    def random_rollout(self):
        """One Go-Explore rollout: restore an archived state (5%: reset) and play sticky random actions."""
        if not self.cells or self.rng.random() < 0.05:
            score, lives = self.start_from_reset()
            self.insert(score, lives)
        else:
            entry = self.choose()
            self.ale.restoreState(entry["state"])
            self.restart_trajectory()
            self.prev = entry["ram"].copy()
            score, lives = entry["score"], entry["lives"]
        for step, action in enumerate(sticky_random_actions(self.rng, self.actions, int(self.rng.integers(100, 1000)))):
            if self.frames >= self.total:
                return
            reward = self.frame(action)
            score += reward
            if self.ale.game_over():
                return
            if self.ale.lives() < lives:
                lives = self.ale.lives()
                if self.rng.random() < 0.8:        # a lost life is mostly a dead end for getting further
                    return
            if reward != 0 or step % self.INSERT_EVERY == self.INSERT_EVERY - 1:
                self.insert(score, lives)

    def policy_episode(self, policy, budget):
        """One episode of the checkpoint agent from reset (CleanRL semantics); its states join the archive."""
        score, lives = self.start_from_reset()
        stop = self.frames + budget
        for _ in range(int(self.rng.integers(1, 31))):              # noop reset
            if self.frames < self.total:
                score += self.frame(self.actions[0])
        policy.reset(self)
        step = 0
        while self.frames < min(stop, self.total) and not self.ale.game_over():
            if policy.needs_fire and (step == 0 or self.ale.lives() < lives):
                lives = self.ale.lives()
                score += self.frame(self.actions[1])                # fire reset
                if self.ale.game_over() or self.frames >= self.total:
                    break
            reward = policy.step(self, score)
            score += reward
            step += 1
            if not self.ale.game_over() and (reward != 0 or step % (self.INSERT_EVERY // 4) == 0):
                self.insert(score, self.ale.lives())


class CheckpointPolicy:
    """A pixel agent (84x84 gray, 4-stack, max over the last 2 of 4 skipped frames) or RAM agent (ram[indices]).
    screen_dims: (H, W) of the game's screen, ale.getScreenDims() (210x160 on most games, not all)."""

    def __init__(self, model, kind, ram_indices, actions, screen_dims):
        self.model, self.kind, self.ram_indices = model, kind, ram_indices
        self.actions = actions
        self.needs_fire = len(actions) >= 3 and actions[1] == ale_py.Action.FIRE
        self.stack = None
        self.gray = [np.zeros(tuple(screen_dims), np.uint8), np.zeros(tuple(screen_dims), np.uint8)]

    def reset(self, ex):
        """First observation: the current frame, repeated 4 times (CleanRL's frame stack on reset)."""
        if self.kind == "pixel":
            ex.ale.getScreenGrayscale(self.gray[0])
            self.gray[1][:] = self.gray[0]
            self.stack = np.repeat(cv2.resize(self.gray[0], (84, 84), interpolation=cv2.INTER_AREA)[None], 4, axis=0)

    @torch.no_grad()
    def step(self, ex, score) -> float:
        if self.kind == "pixel":
            x = torch.from_numpy(self.stack[None].copy())
        else:
            x = torch.from_numpy(ex.ram[self.ram_indices][None].copy())
        action = int(self.model.get_action_and_value(x)[0].item())
        reward = 0.0
        for k in range(4):
            if ex.frames >= ex.total:
                break
            reward += ex.frame(self.actions[action])
            if self.kind == "pixel" and k >= 2:
                ex.ale.getScreenGrayscale(self.gray[k - 2])
            if ex.ale.game_over():
                break
        if self.kind == "pixel":
            pooled = np.maximum(self.gray[0], self.gray[1])
            self.stack = np.concatenate([self.stack[1:], cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA)[None]])
        return reward


def explore(ale, rng, args, policy, n_sampled):
    ex = Explorer(ale, rng, args.total_frames, n_sampled)
    policy_frames = 0
    while ex.frames < args.total_frames:
        if policy is not None and policy_frames < args.policy_fraction * max(ex.frames, 1):
            before = ex.frames
            ex.policy_episode(policy, budget=max(int(args.policy_fraction * args.total_frames) - policy_frames, 1000))
            policy_frames += ex.frames - before
        else:
            ex.random_rollout()
    ex.progress.update(ex.frames, f"archive {len(ex.cells)} cells, best score {ex.best_score:g}", force=True)
    return ex, policy_frames


# ---------------------------------------------------------------- interventions
def replay(ale, state, actions):
    """Restore `state`, emulate `actions`; -> (rams (T,128), screens (T,H,W), rewards (T,), lives (T,)) after
    each frame."""
    h, w = ale.getScreenDims()
    rams = np.zeros((len(actions), 128), np.uint8)
    screens = np.zeros((len(actions), h, w), np.uint8)
    rewards, lives = np.zeros(len(actions)), np.zeros(len(actions), int)
    ale.restoreState(state)
    for t, a in enumerate(actions):
        rewards[t] = ale.act(a)
        lives[t] = ale.lives()
        ale.getRAM(rams[t])
        ale.getScreen(screens[t])
    return rams, screens, rewards, lives


def make_twin(ale, state, actions):
    """Untouched run from `state`, replayed twice: -> (rams, screens, rewards, lives) or None if they differ."""
    first = replay(ale, state, actions)
    second = replay(ale, state, actions)
    if not (np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])):
        return None
    return first


def intervention_trial(ale, base, index, value):
    """Set byte `index` to `value` at `base` (once), emulate the twin's actions, compare with the twin.

    base: {"state", "actions", "twin_ram" (T,128), "twin_screen" (T,H,W), "ram" (128,)}, optionally "twin_reward" (T,)
    and "twin_lives" (T,): then "reward_delta_1" / "lives_delta_1" are ALE's reward of the first frame / its lives()
    after it less the twin's (ALE reads both from RAM: the write of a score or lives byte shows), else 0.
    """
    ale.restoreState(base["state"])
    ale.setRAM(index, int(value))
    ram = np.zeros(128, np.uint8)
    screen = np.zeros(base["twin_screen"].shape[1:], np.uint8)
    other = np.zeros(128, bool)
    pixels = np.zeros(len(base["actions"]))
    first_diff, value_after_1, persisted_1, first = None, None, False, np.zeros(128, bool)
    reward_1 = lives_1 = None
    for t, a in enumerate(base["actions"]):
        reward = ale.act(a)
        if t == 0:   # ALE computes reward and lives() from RAM after each frame: a written score / lives byte shows here
            reward_1, lives_1 = reward, ale.lives()
        ale.getRAM(ram)
        ale.getScreen(screen)
        d = ram != base["twin_ram"][t]
        own = bool(d[index])
        d[index] = False
        other |= d
        pixels[t] = np.count_nonzero(screen != base["twin_screen"][t])
        if t == 0:
            value_after_1, persisted_1, first = int(ram[index]), own, d.copy()
        if first_diff is None and (pixels[t] > 0 or d.any()):
            first_diff = t + 1
    return {"differed": first_diff is not None, "screen_differed": bool(pixels.any()),
            "ram_differed": bool(other.any()), "first_diff_frame": first_diff,
            "other_ram_changed": int(other.sum()), "other_ram_set": other, "other_ram_first": first,
            "screen_pixels_mean": float(pixels.mean()), "screen_pixels_first": float(pixels[0]),
            "value": int(value), "value_after_1": value_after_1, "kept_1": value_after_1 == int(value),
            "persisted_1": persisted_1, "persisted_end": bool(ram[index] != base["twin_ram"][-1][index]),
            "reward_delta_1": float(reward_1 - base["twin_reward"][0]) if "twin_reward" in base else 0.0,
            "lives_delta_1": int(lives_1 - base["twin_lives"][0]) if "twin_lives" in base else 0,
            "value_delta": int(value) - int(base["ram"][index])}


def follows(trials, key):
    """Over the trials in which `key` (reward_delta_1 / lives_delta_1) is not 0: |mean of sign(that change) x
    sign(written value - own value)|, 1.0 when the signal moves with the written value (or always against it), near
    0 when it changes whichever way the value went (a write that triggers an event); None without such trials."""
    s = [np.sign(t[key]) * np.sign(t["value_delta"]) for t in trials if t[key] != 0]
    return round(abs(float(np.mean(s))), 4) if s else None


def summarize_trials(trials, horizon):
    """A byte's "intervention" record. Fractions are over trials (base state x value set):
    differed_fraction: the future (screen or another RAM byte, at any of the `horizon` frames) differed from
    the twin; screen_/ram_differed_fraction: the screen / another byte did; immediate_screen_fraction: the
    screen differed after the first frame; mean_other_ram_changed: other bytes that differed at some frame;
    mean_screen_pixels_changed: differing pixels per frame (mean over frames and trials); kept_fraction: the
    byte still held the set value after 1 frame; persisted_fraction / overwritten_fraction: after 1 frame
    the byte still differed from / was back in step with the twin; persisted_end_fraction: same at the last
    frame; median_first_diff_frame; most_affected_bytes: the other bytes most often changed; values_tried;
    reward_changed_fraction / lives_changed_fraction: ALE's reward of the first frame / ale.lives() after it
    differed from the twin's (ALE computes both from RAM, so the write of a score or lives byte shows at once);
    reward_follows_value / lives_follows_value: `follows` (1.0: the change went with the written value's sign);
    reward_changes_distinct / lives_changes_distinct: how many different non-zero changes the writes made.
    """
    n = len(trials)
    if n == 0:
        return {"trials": 0}
    f = lambda key: round(sum(bool(t[key]) for t in trials) / n, 4)
    first = [t["first_diff_frame"] for t in trials if t["first_diff_frame"] is not None]
    hits = np.zeros(128, int)
    for t in trials:
        hits += t["other_ram_set"]
    return {
        "trials": n, "horizon": horizon,
        "differed_fraction": f("differed"),
        "screen_differed_fraction": f("screen_differed"),
        "ram_differed_fraction": f("ram_differed"),
        "immediate_screen_fraction": round(sum(t["screen_pixels_first"] > 0 for t in trials) / n, 4),
        "mean_other_ram_changed": round(float(np.mean([t["other_ram_changed"] for t in trials])), 3),
        "mean_screen_pixels_changed": round(float(np.mean([t["screen_pixels_mean"] for t in trials])), 2),
        "mean_screen_pixels_first_frame": round(float(np.mean([t["screen_pixels_first"] for t in trials])), 2),
        "kept_fraction": f("kept_1"),            # byte still held the set value after 1 frame
        "persisted_fraction": f("persisted_1"),  # byte still differed from the twin after 1 frame
        "overwritten_fraction": round(1 - sum(bool(t["persisted_1"]) for t in trials) / n, 4),
        "persisted_end_fraction": f("persisted_end"),
        "median_first_diff_frame": float(np.median(first)) if first else None,
        "most_affected_bytes": [int(i) for i in np.argsort(-hits, kind="stable")[:5] if hits[i] > 0],
        "values_tried": sorted({t["value"] for t in trials})[:32],
        "reward_changed_fraction": f("reward_delta_1"),     # ALE's reward of the first frame differed from the twin's
        "lives_changed_fraction": f("lives_delta_1"),       # ale.lives() after the first frame did
        "reward_follows_value": follows(trials, "reward_delta_1"),
        "lives_follows_value": follows(trials, "lives_delta_1"),
        "reward_changes_distinct": len({t["reward_delta_1"] for t in trials} - {0.0}),
        "lives_changes_distinct": len({t["lives_delta_1"] for t in trials} - {0}),
    }


def screen_after_hold(ale, state, actions, index, value, buf, n_frames=2):
    """Restore, hold byte `index` at `value` (re-applied before each frame) for `n_frames` frames.

    -> (list of the screens (H, W) uint8 after each frame, value actually present after each frame).
    """
    ale.restoreState(state)
    out, present = [], []
    for a in actions[:n_frames]:
        ale.setRAM(index, int(value))
        ale.act(a)
        present.append(int(ale.getRAM()[index]))
        ale.getScreen(buf)
        out.append(buf.copy())
    return out, present


def bbox(mask):
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


BLOCK_MIN_NONEMPTY = 0.75   # a block bit changes the screen in >= 75% of contexts
BLOCK_MIN_SAME_BOX = 0.75   # ... with the same bounding box in >= 75% of those
BLOCK_MIN_FILL = 0.5        # ... changed pixels fill >= 50% of the box
BLOCK_MAX_AREA = 0.05       # ... the box covers <= 5% of the screen
NONE_MAX_NONEMPTY = 0.25    # a bit with no screen effect changes it in <= 25% of contexts


def bitmap_test(ale, bases, index, observed, rng, n_contexts):
    """Flip each bit of byte `index` in several (base, value) contexts and diff the screens.

    bases: dicts with "state", "actions", "ram". observed: values the byte was seen to take.
    A context counts only if the game left the held value (and every flipped one) alone ("held"), and only
    if some bit changed the screen there ("shown": a bitmap can be hidden, e.g. between rounds).
    -> dict with per-bit results over the shown contexts (effect "block"/"none"/"inconsistent", box
    [x0, y0, x1, y1) in screen pixels, x = column) and "is_bitmap".
    """
    h, w = ale.getScreenDims()
    buf = np.zeros((h, w), np.uint8)
    contexts = []
    for k in range(n_contexts):     # spread over the bases; alternate the base's own value and another observed one
        base = bases[(k * len(bases)) // n_contexts]
        own = int(base["ram"][index])
        others = [v for v in observed if v != own]
        contexts.append((base, own if k % 2 == 0 or not others else int(rng.choice(others))))
    held = []                       # per held context: per bit (box, changed pixels) or None
    for base, value in contexts:
        (a1, a2), present = screen_after_hold(ale, base["state"], base["actions"], index, value, buf)
        row = [] if present[0] == value else None
        for bit in range(8 if row is not None else 0):
            flipped = value ^ (1 << bit)
            (b1, b2), p = screen_after_hold(ale, base["state"], base["actions"], index, flipped, buf)
            if p[0] != flipped:
                row = None
                break
            diff = a1 != b1
            if not diff.any():
                diff = a2 != b2
            row.append((bbox(diff), int(diff.sum())) if diff.any() else None)
        if row is not None:
            held.append(row)
    shown = [row for row in held if any(r is not None for r in row)]
    bits, boxes = [], []
    for bit in range(8):
        res = [row[bit] for row in shown]
        n = len(res)
        nonempty = [r for r in res if r is not None]
        rec = {"bit": bit, "contexts": n, "changed_screen": len(nonempty)}
        if n == 0 or len(nonempty) <= NONE_MAX_NONEMPTY * n:
            rec["effect"] = "none"
        else:
            boxes_seen = [r[0] for r in nonempty]
            mode = max(set(boxes_seen), key=lambda b: (boxes_seen.count(b), b))
            same = [r for r in nonempty if r[0] == mode]
            area = (mode[2] - mode[0]) * (mode[3] - mode[1])
            fill = float(np.mean([r[1] for r in same])) / area
            rec.update({"box": list(mode), "same_box_fraction": round(len(same) / len(nonempty), 4),
                        "fill": round(fill, 4), "box_area": area})
            block = (len(nonempty) >= BLOCK_MIN_NONEMPTY * n and len(same) >= BLOCK_MIN_SAME_BOX * len(nonempty)
                     and fill >= BLOCK_MIN_FILL and area <= BLOCK_MAX_AREA * h * w)
            rec["effect"] = "block" if block else "inconsistent"
            if block:
                boxes.append(mode)
        bits.append(rec)
    disjoint = all(a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
                   for i, a in enumerate(boxes) for b in boxes[i + 1:])
    n_block = sum(b["effect"] == "block" for b in bits)
    n_bad = sum(b["effect"] == "inconsistent" for b in bits)
    enough = len(held) >= max(2, -(-n_contexts // 2)) and len(shown) >= max(2, -(-n_contexts // 4))
    is_bitmap = n_block >= 2 and n_bad == 0 and disjoint and enough
    why = (f"{n_block} bits toggle fixed disjoint screen blocks, the others do not change the screen "
           f"({len(shown)} contexts)" if is_bitmap else
           f"{n_block} block bits, {n_bad} bits with inconsistent screen effects, boxes disjoint: {disjoint}; "
           f"value held in {len(held)} of {n_contexts} contexts, shown on screen in {len(shown)}")
    return {"tested": True, "is_bitmap": is_bitmap, "why": why, "contexts": n_contexts,
            "contexts_held": len(held), "contexts_shown": len(shown), "bits": bits}


def make_bases(ale, ex, args, actions, rng, n_bases):
    """Base states for the interventions, each with its sticky-random action sequence and untouched twin:
    the state after reset (every game passes through it), states shortly before events and states drawn
    uniformly from all visited frames (interleaved), and archive states (novel / far along). A base whose
    two untouched replays differ is dropped."""
    entries = [e for c in ex.cells.values() for e in c["entries"]]
    sampled = [e for pair in itertools.zip_longest(ex.events.items, ex.uniform.items) for e in pair if e is not None]
    picked = rng.choice(len(entries), size=min(max(n_bases - 1 - len(sampled), 0), len(entries)), replace=False)
    candidates = [ex.reset_entry] + sampled + [entries[k] for k in sorted(picked.tolist())]
    n_long = args.long_bases or (3 if args.total_frames < 50_000 else 6)
    bases, long_bases, dropped = [], [], 0
    for e in candidates:
        acts = sticky_random_actions(rng, actions, args.horizon)
        twin = make_twin(ale, e["state"], acts)
        if twin is None:
            dropped += 1
            continue
        bases.append({"state": e["state"], "ram": e["ram"], "actions": acts, "twin_ram": twin[0], "twin_screen": twin[1],
                      "twin_reward": twin[2], "twin_lives": twin[3]})
        if args.long_horizon and len(long_bases) < n_long:
            lacts = sticky_random_actions(rng, actions, args.long_horizon)
            ltwin = make_twin(ale, e["state"], lacts)
            if ltwin is None:
                dropped += 1
            else:
                long_bases.append({"state": e["state"], "ram": e["ram"], "actions": lacts,
                                   "twin_ram": ltwin[0], "twin_screen": ltwin[1], "twin_reward": ltwin[2],
                                   "twin_lives": ltwin[3]})
    return bases, long_bases, dropped


def test_bytes(ale, changing, observed, bases, long_bases, args, rng):
    """Intervention trials for every changing byte, long re-test of kept-but-inert bytes, bitmap test.
    -> ({index: intervention summary}, {index: (128,) int, per other byte the trials in which it differed from the
    twin right after the first frame}, intervention frames, bitmap-test frames)."""
    planned = sum(min(args.values_per_base, len(observed[i]) - 1) for i in changing) * len(bases) * args.horizon
    prog = Progress("intervene", planned)
    done_frames, results, first_hits = 0, {}, {}
    for n, i in enumerate(changing):
        trials = []
        for base in bases:
            own = int(base["ram"][i])
            others = [v for v in observed[i] if v != own]
            for v in rng.choice(others, size=min(args.values_per_base, len(others)), replace=False):
                trials.append(intervention_trial(ale, base, i, v))
                done_frames += args.horizon
                prog.update(done_frames, f"byte {n + 1}/{len(changing)} (index {i})")
        results[i] = summarize_trials(trials, args.horizon)
        first_hits[i] = sum((t["other_ram_first"] for t in trials), np.zeros(128, int))
    prog.update(done_frames, "done", force=True)

    # no effect, but the game kept the value: it may be read only rarely -> re-test over a long horizon
    for i in changing:
        r = results[i]
        if r["differed_fraction"] == 0 and r["persisted_fraction"] > 0 and long_bases:
            trials = []
            for base in long_bases:
                others = [v for v in observed[i] if v != int(base["ram"][i])]
                for v in rng.choice(others, size=min(2, len(others)), replace=False):
                    trials.append(intervention_trial(ale, base, i, v))
                    done_frames += args.long_horizon
            r["long_horizon"] = summarize_trials(trials, args.long_horizon)
            print(f"[long] index {i}: {r['long_horizon']['differed_fraction']:.2f} of {len(trials)} "
                  f"{args.long_horizon}-frame trials differed", flush=True)

    # bitmap test on the bytes that matter and whose change reached the screen
    bitmap_frames = 0
    for i in changing:
        r = results[i]
        r["effect_fraction"] = max(r["differed_fraction"], r.get("long_horizon", {}).get("differed_fraction", 0.0))
        if r["effect_fraction"] > 0 and r["screen_differed_fraction"] > 0:
            r["bitmap"] = bitmap_test(ale, bases, i, observed[i], rng, args.bitmap_contexts)
            bitmap_frames += r["bitmap"]["contexts"] * 9 * 2
        else:
            r["bitmap"] = {"tested": False}
    return results, first_hits, done_frames, bitmap_frames


# ---------------------------------------------------------------- what the bytes are (kinds beyond state / scratch, roles)
def null_interventions(ale, bases, rng, n_bytes=8):
    """Write a byte's own value back (no change at all) at every base, `n_bytes` bytes each: a differing trial
    would mean the replays are not exact (e.g. sticky actions on); -> {"trials", "differed"}."""
    trials = differed = 0
    for base in bases:
        for i in rng.choice(128, size=n_bytes, replace=False):
            trials += 1
            differed += int(intervention_trial(ale, base, int(i), int(base["ram"][i]))["differed"])
    return {"trials": trials, "differed": differed}


def latent_trials(ale, bases, index, rng, n_bases=4):
    """A byte that never changed in play, written at the first `n_bases` bases (the reset state first) with a few
    other values (own ^ 1, own ^ 0x80, 0 or 255, a random one); -> the intervention trials."""
    trials = []
    for base in bases[:n_bases]:
        own = int(base["ram"][index])
        for v in sorted({own ^ 1, own ^ 0x80, 0 if own else 255, int(rng.integers(256))} - {own}):
            trials.append(intervention_trial(ale, base, index, v))
    return trials


def held_action_bases(ale, bases, actions, horizon, n_bases=3):
    """Twins of the first `n_bases` bases with each action of the minimal set held for `horizon` frames."""
    out = []
    for base in bases[:n_bases]:
        for a in actions:
            held = [a] * horizon
            twin = make_twin(ale, base["state"], held)
            if twin is not None:
                out.append(dict(base, actions=held, twin_ram=twin[0], twin_screen=twin[1], twin_reward=twin[2],
                                twin_lives=twin[3], held_action=a.name))
    return out


def held_action_trials(ale, held_bases, index, observed, rng):
    """Set the byte again in twins whose action is held the whole time, so a byte that the next input rewrites
    under random actions (facing, direction) can show its effect; -> (trials, actions under which it showed,
    whether the byte's value at the end of the untouched twins depended on the held action)."""
    trials, showed, ends = [], set(), {}
    for b in held_bases:
        ends.setdefault(b["held_action"], set()).add(int(b["twin_ram"][-1][index]))
        others = [v for v in observed if v != int(b["ram"][index])]
        for v in rng.choice(others, size=min(2, len(others)), replace=False):
            t = intervention_trial(ale, b, index, int(v))
            trials.append(t)
            if t["differed"]:
                showed.add(b["held_action"])
    varies = len({frozenset(v) for v in ends.values()}) > 1
    return trials, sorted(showed), varies


def find_source(index, twins, candidates):
    """Is byte `index` a function of one other byte of `candidates` (bytes with an effect of their own, so that two
    bytes that only change together, or a chain of copies, do not name each other), on the same frame (lag 0) or
    the frame before (lag 1), over every frame of the untouched twins? twins: list of (T, 128) uint8 RAM arrays.
    -> {"source", "lag", "mapping": "copy" | "offset" | "affine" | "table", "offset" | "a", "b" | "table", "frames",
    "other_sources"} or None. A source must take at most a quarter as many values as there are frames (else anything
    is a function of it)."""
    for lag in (0, 1):
        y = np.concatenate([t[lag:, index] for t in twins]).astype(int)
        xs = np.concatenate([t[: len(t) - lag] for t in twins]).astype(int)
        if len(y) < 8 or len(np.unique(y)) < 2:
            return None
        found = []
        for j in sorted(set(candidates) - {index}):
            x = xs[:, j]
            n_x = len(np.unique(x))
            if n_x < 2 or n_x > len(x) / 4:
                continue
            order = np.lexsort((y, x))
            same = x[order][1:] == x[order][:-1]
            if (y[order][1:][same] != y[order][:-1][same]).any():
                continue  # one source value, two byte values: not a function of it
            d = (y - x) % 256
            if (y == x).all():
                rec = {"mapping": "copy"}
            elif (d == d[0]).all():
                rec = {"mapping": "offset", "offset": int(d[0])}
            else:
                a, b = np.polyfit(x, y, 1)
                a, b = round(float(a), 4), round(float(b), 4)
                if np.allclose(a * x + b, y, atol=0.01):
                    rec = {"mapping": "affine", "a": a, "b": b}
                else:
                    pairs = dict(zip(x.tolist(), y.tolist()))
                    rec = {"mapping": "table", "table": {str(k): pairs[k] for k in sorted(pairs)[:32]}}
            rank = ["copy", "offset", "affine", "table"].index(rec["mapping"])
            found.append((rank, n_x, j, rec))
        if found:
            rank, n_x, j, rec = min(found, key=lambda f: (f[0], -f[1], f[2]))
            return {"source": j, "lag": lag, **rec, "frames": int(len(y)),
                    "other_sources": [f[2] for f in sorted(found, key=lambda f: (f[0], -f[1], f[2]))[1:6]]}
    return None


STORED_MIN_PERSISTED = 0.25  # an inert changing byte the game kept (past frame 1) in >= 25% of trials is "stored"


def computed_source(index, first_hits, candidates, results):
    """The bytes of `candidates` whose written value changed byte `index` right after the first frame, in the
    intervention trials (`first_hits[j][index]` of `results[j]["trials"]`): a byte the game rewrites every frame from
    several others (a display position computed from an object table, a multiplexed sprite slot). -> {"source" (the
    byte that changed it most often), "sources" (all of them, most often first), "mapping": "computed", "lag": 0,
    "trials_changed": {"<j>": [trials in which it changed, trials]}} or None when no write changed it."""
    hits = sorted(((int(first_hits[j][index]), j) for j in candidates if j != index and first_hits[j][index] > 0),
                  key=lambda h: (-h[0], h[1]))
    if not hits:
        return None
    return {"source": hits[0][1], "sources": [j for _, j in hits], "mapping": "computed", "lag": 0,
            "trials_changed": {str(j): [n, results[j]["trials"]] for n, j in hits[:8]}}


POSITION_HOLD_FRAMES = 4   # frames a value is held in the position test: an object drawn every 2nd-4th frame shows


def position_test(ale, bases, index, observed, n_bases=4, n_values=7, max_bases=30):
    """Hold the byte at several values for POSITION_HOLD_FRAMES frames at up to `n_bases` bases (of the first
    `max_bases`; a base where fewer than 3 values change the screen is skipped, e.g. no ball in play) and find what
    moved: per value, the pixels that differ, on any of the held frames (flicker: objects drawn on alternate
    frames), from the screens at the base's own value, less those that differ for >= 60% of the
    values (where the object was before: it left that place for most values); their centre against the value.
    The line is fitted robustly (Siegel's repeated median, with an intercept per base, so a relative position or
    an object drawn around a base-dependent offset counts too); points far off it (values the game clamps,
    wraps or that end a life) are dropped before r is taken. -> {"axis": "x" | "y", "fit": "line", "px_per_unit", "r",
    "points", "outliers"} when the centre moves along one axis in step with the value (|r| >= 0.9 over >= 4 kept
    points, >= 70% of them kept), else `axis_only_position` (fit "axis": it moves along one axis, not in a line with
    the value), else {"fit": "place", ...} when what changed stays in one small place whatever the value (`in_place`:
    what is drawn there changes, not where), else None; but {"axis", "fit": "extent", "bases", "growing_bases"} first
    when in most bases what changed grows in place with the value (`grows_in_place`: a count drawn as a bar or a row of
    icons). Values whose change is far larger than the others' (`drop_event_masks`: a lost life, a redrawn screen) do
    not count as places of the object."""
    h, w = ale.getScreenDims()
    buf = np.zeros((h, w), np.uint8)
    vals = sorted(set(observed))
    picks = [vals[k] for k in sorted(set(np.linspace(0, len(vals) - 1, n_values).astype(int).tolist()))]
    groups = []  # per usable base: [(value, centre x, centre y)]
    extents = []  # per usable base: did what changed grow in place with the value (a bar / a row of icons)?
    places = []   # per base where >= 2 values changed the screen: the box of what changed if it stayed in place, or None
    for base in bases[:max_bases]:
        if len(groups) == n_bases:
            break
        own = int(base["ram"][index])
        ref = screen_after_hold(ale, base["state"], base["actions"], index, own, buf, POSITION_HOLD_FRAMES)[0]
        masks = {}
        for v in picks:
            if v != own:
                held = screen_after_hold(ale, base["state"], base["actions"], index, v, buf, POSITION_HOLD_FRAMES)[0]
                # any held frame: an object drawn on alternate frames (flicker, multiplexed sprites) shows on some
                m = np.any([s != r for s, r in zip(held, ref)], axis=0)
                if m.any():
                    masks[v] = m
        if len(masks) >= 2:
            places.append(in_place(masks, (h, w)))
        if len(masks) < 3:
            continue
        extents.append(grows_in_place(masks, own))
        masks = drop_event_masks(masks)
        if len(masks) < 3:
            continue
        before = np.mean(list(masks.values()), axis=0) >= 0.6
        pts = []
        for v, m in masks.items():
            rest = m & ~before
            if rest.any():
                yy, xx = np.nonzero(rest)
                pts.append((v, float(xx.mean()), float(yy.mean())))
        if len(pts) >= 3:
            groups.append(np.array(pts))
    if sum(len(g) for g in groups) < 4:
        return place_record(places)
    if sum(extents) * 2 > len(extents):   # most bases: a count drawn as a bar or a row of icons, not an object's place
        g = np.concatenate(groups)
        axis = "x" if np.ptp(g[:, 1]) >= np.ptp(g[:, 2]) else "y"
        return {"axis": axis, "fit": "extent", "bases": len(extents), "growing_bases": int(sum(extents))}
    best = None
    for axis, col in (("x", 1), ("y", 2)):
        # Siegel's repeated-median slope within bases (robust to < 50% outliers), an intercept per base, then
        # points within 3 robust SDs of that line (at least 2 px or 10% of the centres' range) are kept, r on them
        per_point, resid_parts = [], []
        for g in groups:
            for i in range(len(g)):
                d = [(g[j, col] - g[i, col]) / (g[j, 0] - g[i, 0]) for j in range(len(g)) if g[j, 0] != g[i, 0]]
                if d:
                    per_point.append(float(np.median(d)))
        if not per_point:
            continue
        slope = float(np.median(per_point))
        for g in groups:
            off = g[:, col] - slope * g[:, 0]
            resid_parts.append(off - np.median(off))
        res = np.abs(np.concatenate(resid_parts))
        spread = float(np.ptp(np.concatenate([g[:, col] for g in groups])))
        keep = res <= max(3 * 1.4826 * float(np.median(res)), 2.0, 0.1 * spread)
        if keep.sum() < max(4, 0.7 * len(keep)):
            continue
        v, c, k0 = [], [], 0
        for g in groups:   # centre each base on its kept points
            kg = keep[k0:k0 + len(g)]
            k0 += len(g)
            if kg.sum():
                v.append(g[kg, 0] - g[kg, 0].mean())
                c.append(g[kg, col] - g[kg, col].mean())
        v, c = np.concatenate(v), np.concatenate(c)
        if np.std(v) == 0 or np.std(c) == 0:
            continue
        r = float(np.corrcoef(v, c)[0, 1])
        fit = float(np.polyfit(v, c, 1)[0])
        if abs(r) >= 0.9 and abs(fit) >= 0.05 and (best is None or abs(r) > abs(best["r"])):
            best = {"axis": axis, "fit": "line", "px_per_unit": round(fit, 3), "r": round(r, 3),
                    "points": int(keep.sum()), "outliers": int((~keep).sum())}
    return best or axis_only_position(groups) or place_record(places)


EVENT_MASK_RATIO = 8   # a held value whose change covers > 8x the pixels of the smallest change set off an event


def drop_event_masks(masks):
    """masks: {held value: (H, W) bool, the pixels that differed from the base's own value} -> the same without the
    values whose change is an event rather than the object drawn elsewhere: more than EVENT_MASK_RATIO times the
    pixels of the smallest change (taken as at least 16 px), e.g. a lost life or a new level redrawing the screen."""
    if not masks:
        return masks
    limit = EVENT_MASK_RATIO * max(min(int(m.sum()) for m in masks.values()), 16)
    return {v: m for v, m in masks.items() if int(m.sum()) <= limit}


PLACE_MAX_SHIFT_PX = 4      # what a byte draws "in place": the centres of its changes within 4 px along each axis
PLACE_MAX_FRACTION = 0.25   # ... inside a box of at most a quarter of the screen's height and of its width


def in_place(masks, dims):
    """Did every value's change of the screen stay in one small place (the same object redrawn: its kind, sprite or
    colour, not its position)? masks: {held value: (H, W) bool} (>= 2 values), dims: (H, W). -> the box [row0,
    row1, col0, col1] of all the changes, when their centres lie within PLACE_MAX_SHIFT_PX along each axis and the box
    within PLACE_MAX_FRACTION of the screen's height and width; else None."""
    centres = np.array([[xx.mean(), yy.mean()] for yy, xx in (np.nonzero(m) for m in masks.values())])
    rows, cols = np.nonzero(np.any(list(masks.values()), axis=0))
    box = [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())]
    small = box[1] - box[0] < PLACE_MAX_FRACTION * dims[0] and box[3] - box[2] < PLACE_MAX_FRACTION * dims[1]
    return box if small and np.ptp(centres, axis=0).max() <= PLACE_MAX_SHIFT_PX else None


def place_record(places):
    """The "place" fit of position_test, or None: in most of the bases where the byte changed the screen (2 or more),
    what changed stayed in place (`in_place`). -> {"fit": "place", "bases", "in_place_bases", "box" (the first such
    base's [row0, row1, col0, col1])}."""
    boxes = [b for b in places if b is not None]
    if len(boxes) < 2 or len(boxes) * 2 <= len(places):
        return None
    return {"fit": "place", "bases": len(places), "in_place_bases": len(boxes), "box": boxes[0]}


EXTENT_MIN_NESTED = 0.9   # a bar / row of icons: what changed at a value holds >= 90% of what changed at a nearer one


def grows_in_place(masks, own):
    """Does what a byte draws grow in place with its value, like a bar or a row of icons (a count: oxygen, collected
    divers) rather than move (a position)? masks: {held value: (H, W) bool, the pixels that differed from the
    screens at the base's own value `own`}. Walking away from `own` on either side, the changed region of each value
    must contain >= EXTENT_MIN_NESTED of the nearer value's and be larger: the regions nest and grow. A moved object
    fails: its new places at two values are different pixels (only the place it left is shared). Needs >= 2
    such steps. -> bool."""
    nested, steps = [], 0
    for side in (sorted(v for v in masks if v > own), sorted((v for v in masks if v < own), reverse=True)):
        for a, b in zip(side, side[1:]):
            na, nb = int(masks[a].sum()), int(masks[b].sum())
            nested.append(int((masks[a] & masks[b]).sum()) / max(na, 1) if nb > na else 0.0)
            steps += 1
    return steps >= 2 and float(np.median(nested)) >= EXTENT_MIN_NESTED


AXIS_MIN_SPREAD_PX = 8   # an object the byte moves along one axis, not in a line with the value: >= 8 px of travel
AXIS_MAX_OFF_RATIO = 6   # ... and at most 1/6 of that (or 2 px) across the other axis


def axis_only_position(groups):
    """A position whose screen coordinate is not a line in the byte's value (Atari x positions are often stored as
    a coarse and a fine part, e.g. a fine offset in the high nibble): within each base, the centres of what moved
    spread along one axis (median range >= AXIS_MIN_SPREAD_PX) and hardly across the other (<= 1/AXIS_MAX_OFF_RATIO
    of it, or 2 px), over >= 5 points with >= 4 distinct centres along the axis. groups: per base, rows (value,
    centre x, centre y). -> the position record (fit "axis", r: Spearman's rank correlation of centre and value)
    or None."""
    pts = [g for g in groups if len(g) >= 3]
    if sum(len(g) for g in pts) < 5:
        return None
    for axis, col, other in (("x", 1, 2), ("y", 2, 1)):
        spread = float(np.median([np.ptp(g[:, col]) for g in pts]))
        off = float(np.median([np.ptp(g[:, other]) for g in pts]))
        distinct = len(np.unique(np.round(np.concatenate([g[:, col] - g[:, col].mean() for g in pts]))))
        if spread >= AXIS_MIN_SPREAD_PX and off <= max(2.0, spread / AXIS_MAX_OFF_RATIO) and distinct >= 4:
            rank = lambda a: np.argsort(np.argsort(a)).astype(float)
            v = np.concatenate([rank(g[:, 0]) - rank(g[:, 0]).mean() for g in pts])
            c = np.concatenate([rank(g[:, col]) - rank(g[:, col]).mean() for g in pts])
            rho = float(np.corrcoef(v, c)[0, 1]) if np.std(v) and np.std(c) else 0.0
            fit = float(np.polyfit(np.concatenate([g[:, 0] - g[:, 0].mean() for g in pts]),
                                   np.concatenate([g[:, col] - g[:, col].mean() for g in pts]), 1)[0])
            return {"axis": axis, "fit": "axis", "px_per_unit": round(fit, 3), "r": round(rho, 3),
                    "points": int(sum(len(g) for g in pts)), "outliers": 0, "spread_px": round(spread, 1),
                    "off_axis_px": round(off, 1)}
    return None


def event_role(values, events):
    """Fraction of a byte's changes over the twins' frames that fall on (or one frame after) an event frame
    (a reward, a lost life); -> (fraction, number of changes)."""
    hits = n = 0
    for vals, ev in zip(values, events):
        changed = np.flatnonzero(vals[1:] != vals[:-1]) + 1
        near = ev | np.concatenate([[False], ev[:-1]])
        hits += int(near[changed].sum())
        n += len(changed)
    return (hits / n if n else 0.0), n


def counter_role(values):
    """A counter or timer: a byte that steps by one fixed amount at fixed intervals over the twins' frames;
    -> {"step", "every"} or None."""
    steps, gaps = [], []
    for vals in values:
        v = vals.astype(int)
        changed = np.flatnonzero(v[1:] != v[:-1]) + 1
        steps += [((v[t] - v[t - 1] + 128) % 256) - 128 for t in changed]
        gaps += np.diff(changed).tolist()
    if len(steps) < 8 or not gaps:
        return None
    step = max(set(steps), key=steps.count)
    gap = max(set(gaps), key=gaps.count)
    if steps.count(step) >= 0.9 * len(steps) and gaps.count(gap) >= 0.9 * len(gaps):
        return {"step": int(step), "every": int(gap), "toggle": len(set(np.concatenate(values).tolist())) == 2}
    return None


MOTION_MIN_MOVES = 8         # frames on which the position byte moved, needed to call a byte its velocity / direction
MOTION_MIN_MATCH = 0.9       # ... of which this fraction must match (a velocity)
DIRECTION_MIN_MATCH = 0.95   # ... or have the sign the byte (or one of its bits) says, >= 4 moves each way (a direction)
SPEED_MAX_SIZES = 16         # a speed (a velocity by its sign only) takes at most 16 sizes: more is a position's range


def signed(v):
    """uint8 values (array) -> the same bytes read as two's complement, in [-128, 127] (int64)."""
    return ((np.asarray(v, np.int64) + 128) % 256) - 128


def motion_role(index, positions, twins):
    """Is byte `index` the velocity or the direction of a position byte? positions: {j: "x" | "y"}, the bytes called
    x- / y-positions; twins: list of (T, 128) uint8 RAM arrays of untouched play. Over the frames where byte j moved
    (its change d = ram[t+1, j] - ram[t, j], read as a signed byte, is not 0): a velocity when d equals the byte (read
    as signed, on frame t or t+1, or its negative) on >= MOTION_MIN_MATCH of them; a direction when the sign of d is a
    function of the byte or of one of its bits (>= DIRECTION_MIN_MATCH of the moves agree with the majority sign of
    that value) and the values of each majority sign hold 4 moves or more. Also a velocity (a speed, not the step
    itself) when the signed byte has the sign of d (or the opposite) on >= DIRECTION_MIN_MATCH of them, took both
    signs and two sizes or more (at most SPEED_MAX_SIZES: a position's range is not a speed), each on 4 moves or
    more. Needs MOTION_MIN_MOVES moves. "relation" says which: "equals" (the change itself) or "sign". -> role dict or None; an equal velocity
    beats a speed, a speed a direction, then the position with the most moves."""
    best = None
    for j in sorted(positions):
        if j == index:
            continue
        d = np.concatenate([signed(t[1:, j].astype(np.int64) - t[:-1, j]) for t in twins])
        v_now = np.concatenate([t[:-1, index] for t in twins]).astype(np.int64)
        v_next = np.concatenate([t[1:, index] for t in twins]).astype(np.int64)
        moved = d != 0
        n = int(moved.sum())
        if n < MOTION_MIN_MOVES or len(np.unique(np.concatenate([v_now, v_next]))) < 2:
            continue
        dm = d[moved]
        for v, when in ((v_now, "the same frame"), (v_next, "the next frame")):
            vm = signed(v[moved])
            for sign in (1, -1):
                match = float(np.mean(dm == sign * vm))
                if match >= MOTION_MIN_MATCH and len(np.unique(vm)) >= 2:
                    cand = (2, n, j, {"role": f"velocity of byte {j}", "relation": "equals",
                                      "evidence": f"{'minus ' if sign < 0 else ''}its value, read as a signed byte, equals "
                                                  f"the change of {positions[j]}-position byte {j} on {match:.0%} of "
                                                  f"the {n} frames it moved (the byte on {when})"})
                    best = max(best, cand, key=lambda c: c[:2] + (-c[2],)) if best else cand
                # a speed that is not the step itself (an object that moves 1 or 2 px a frame at speed 1): the signed
                # value's sign is the move's on >= DIRECTION_MIN_MATCH, with >= 2 sizes each seen on 4 moves or more
                sizes, counts = np.unique(np.abs(vm[vm != 0]), return_counts=True)
                same_sign = float(np.mean(np.sign(dm) == sign * np.sign(vm)))
                both_ways = min((vm > 0).sum(), (vm < 0).sum()) >= 4   # a signed value: it took both signs
                if same_sign >= DIRECTION_MIN_MATCH and both_ways and (counts >= 4).sum() >= 2 \
                        and len(sizes) <= SPEED_MAX_SIZES:
                    cand = (1.5, n, j, {"role": f"velocity of byte {j}", "relation": "sign",
                                        "evidence": f"{'minus ' if sign < 0 else ''}its value, read as a signed byte "
                                                    f"({len(sizes)} sizes), has the sign of the change of "
                                                    f"{positions[j]}-position byte {j} on {same_sign:.0%} of the {n} "
                                                    f"frames it moved (the byte on {when}; equal to it on {match:.0%})"})
                    best = max(best, cand, key=lambda c: c[:2] + (-c[2],)) if best else cand
            # direction: the sign of the move as a function of the whole byte (few values) or of one bit
            keys = [("", v[moved])] if len(np.unique(v[moved])) <= 4 else []
            keys += [(f" (bit {b})", (v[moved] >> b) & 1) for b in range(8)]
            for label, k in keys:
                if len(np.unique(k)) < 2:
                    continue
                agree, held = 0, {1: 0, -1: 0}  # held: the moves in the values whose majority is each sign
                for val in np.unique(k):
                    s = np.sign(dm[k == val])
                    major = 1 if (s > 0).sum() >= (s < 0).sum() else -1
                    agree += int((s == major).sum())
                    held[major] += len(s)
                frac = agree / n
                # both signs stand for a direction, each in 4 moves or more (a value seen on one stray move does not)
                if frac >= DIRECTION_MIN_MATCH and min(held.values()) >= 4:
                    cand = (1, n, j, {"role": f"direction of byte {j}" + label, "relation": "sign",
                                      "evidence": f"the sign of the change of {positions[j]}-position byte {j} is a "
                                                  f"function of {'its ' + label.strip(' ()') if label else 'its value'} "
                                                  f"(on {when}) on {frac:.0%} of the {n} frames it moved"})
                    best = max(best, cand, key=lambda c: c[:2] + (-c[2],)) if best else cand
    return best[3] if best else None


SIGNAL_MIN_FOLLOWS = 0.6    # ... and the change went with the written value's sign (or against it) in >= 80% of those
SIGNAL_MIN_DISTINCT = 3     # ... or took >= 3 different sizes (ALE clamps or wraps some scores' changes)
SIGNAL_MIN_FRACTION = 0.3   # a written byte changed ALE's reward (lives()) on the first frame in >= 30% of its trials


def signal_role(r, observed):
    """Score / lives from ALE's own signals: ALE computes the reward and lives() from RAM after every frame, so a
    byte whose write changed the first frame's reward (lives()) against the untouched twin, in at least
    SIGNAL_MIN_FRACTION of its intervention trials, with the sign of the written change (or always against it: `follows`
    >= SIGNAL_MIN_FOLLOWS) or by >= SIGNAL_MIN_DISTINCT different amounts (a write that triggers an event changes
    them by one amount whichever way the value went), is read as score (lives) by ALE itself. Works for values play
    never reached (a high score digit). r: a byte's "intervention" record. -> role dict or None."""
    lives, reward, n = r.get("lives_changed_fraction", 0), r.get("reward_changed_fraction", 0), r.get("trials", 0)
    def how(kind):   # the change follows the written value: its sign, or its size (several different changes)
        follows_, distinct = r.get(f"{kind}_follows_value") or 0, r.get(f"{kind}_changes_distinct", 0)
        if follows_ >= SIGNAL_MIN_FOLLOWS:
            return f"with the written value's sign in {(1 + follows_) / 2:.0%} of them (or against it)"
        if distinct >= SIGNAL_MIN_DISTINCT:
            return f"by {distinct} different amounts as the written value varied"
        return None
    lives_ok = lives >= SIGNAL_MIN_FRACTION and how("lives")
    reward_ok = reward >= SIGNAL_MIN_FRACTION and how("reward")
    if lives_ok and (lives >= reward or not reward_ok):
        return {"role": "lives", "evidence": f"writing it changed ale.lives() on the next frame in {lives:.0%} of "
                                             f"{n} trials, {how('lives')}"}
    if reward_ok:
        return score_role(observed, f"writing it changed ALE's reward on the next frame in {reward:.0%} of {n} "
                                    f"trials, {how('reward')}")
    return None


def score_role(observed, evidence):
    """The score role: "score (BCD digits)" when every observed value (list of int) has both nibbles <= 9, else "score";
    `evidence` (str) gets the BCD reason appended."""
    bcd = bool(observed) and all(v % 16 <= 9 and v // 16 <= 9 for v in observed)
    return {"role": "score" + (" (BCD digits)" if bcd else ""),
            "evidence": evidence + ("; every value seen has both nibbles <= 9" if bcd else "")}


LIVES_MIN_FIT = 0.95   # a lives byte from play: an affine function of ale.lives() on >= 95% of the twins' frames


def lives_fit(twins, lives):
    """Is a byte (twins: per base its (T,) values) an affine function a * lives + b of ALE's lives() (lives: per base
    (T,) ints) on >= LIVES_MIN_FIT of the frames, with 3 or more values of each? (A byte that only flips when a
    life is lost, or is reset then, is not the count.) -> "lives() * a + b" as text, or None."""
    v = np.concatenate(twins).astype(np.int64)
    n = np.concatenate(lives).astype(np.int64)
    if len(np.unique(n)) < 3 or len(np.unique(v)) < 3:
        return None
    lo, hi = np.unique(n)[[0, -1]]
    a_num = np.median(v[n == hi]) - np.median(v[n == lo])
    if a_num == 0 or a_num % (hi - lo):
        return None
    a = int(a_num // (hi - lo))
    b = int(np.median(v - a * n))
    if np.mean(v == a * n + b) < LIVES_MIN_FIT:
        return None
    return f"lives() * {a} + {b}" if a != 1 else f"lives() + {b}"


def position_role(pos):
    """position_test's answer with fit "line" or "axis" -> the x- / y-position role with its evidence."""
    if pos["fit"] == "axis":
        return {"role": f"{pos['axis']}-position", "position": pos,
                "evidence": f"holding it at {pos['points']} values moves a screen object {pos['spread_px']:.0f} px "
                            f"along {pos['axis']} and {pos['off_axis_px']:.0f} px across (not in a line with the "
                            f"value: rank r = {pos['r']:.2f}; any of {POSITION_HOLD_FRAMES} frames)"}
    return {"role": f"{pos['axis']}-position", "evidence": f"a screen object moves {pos['px_per_unit']:+.2f} px "
            f"along {pos['axis']} per unit (r = {pos['r']:.2f}, {pos['points']} held values, any of "
            f"{POSITION_HOLD_FRAMES} frames)", "position": pos}


SCORE_MAX_REWARDED = 0.3   # a score byte from play: rewarded frames (and the frames after them) are <= 30% of all


def describe_byte(rec, bases, ale, observed):
    """A role for a selected (or derived) byte, with its evidence, from play and interventions alone."""
    i = rec["index"]
    twins = [b["twin_ram"][:, i] for b in bases]
    signal = signal_role(rec["intervention"], observed)
    if signal:
        return signal
    if rec["kind"] == "derived" and rec["derived"]["mapping"] == "computed":
        src = rec["derived"]
        n, of = src["trials_changed"][str(src["source"])]
        return {"role": f"function of bytes {src['sources'][:4]}" + (" ..." if len(src["sources"]) > 4 else ""),
                "evidence": f"rewritten every frame; writing byte {src['source']} (ram[0x{0x80 + src['source']:02X}]) "
                            f"changed it on the next frame in {n} of {of} trials, {len(src['sources'])} byte(s) did"}
    if rec["kind"] == "derived":
        src = rec["derived"]
        what = {"copy": "a copy of", "offset": f"byte + {src.get('offset')} of", "affine": "an affine function of",
                "table": "a function (table) of"}[src["mapping"]]
        return {"role": f"copy of byte {src['source']}" if src["mapping"] == "copy" else f"function of byte {src['source']}",
                "evidence": f"on each of {src['frames']} frames of play, {what} byte {src['source']} "
                            f"(ram[0x{0x80 + src['source']:02X}]){' one frame before' if src['lag'] else ''}"}
    if rec["kind"] == "bitmap":
        blocks = sum(b["effect"] == "block" for b in rec["intervention"]["bitmap"]["bits"])
        return {"role": "bitmap", "evidence": f"{blocks} bits each toggle a fixed screen block"}
    lives_frac, lives_n = event_role(twins, [np.diff(b["twin_lives"], prepend=b["twin_lives"][0]) != 0 for b in bases])
    fit = lives_fit(twins, [b["twin_lives"] for b in bases])
    if lives_n >= 2 and lives_frac >= 0.8 and fit is not None:
        return {"role": "lives", "evidence": f"{lives_n} changes during play, {lives_frac:.0%} of them when ale.lives() "
                                             f"changed; its value is {fit} on {LIVES_MIN_FIT:.0%} or more of the frames"}
    # position before counting: an object that moves every frame also steps at fixed intervals (Freeway's cars)
    pos = None
    if rec["intervention"].get("screen_differed_fraction", 0) > 0 and len(observed) >= 3:
        pos = position_test(ale, bases, i, observed)
        if pos and pos["fit"] == "extent":
            return {"role": "counter", "extent": pos,
                    "evidence": f"drawn as a bar or a row of icons along {pos['axis']} that grows in place with the value "
                                f"(in {pos['growing_bases']} of {pos['bases']} bases; any of {POSITION_HOLD_FRAMES} frames)"}
        if pos and pos["fit"] != "place":
            return position_role(pos)
    rewarded = [b["twin_reward"] != 0 for b in bases]
    score_frac, score_n = event_role(twins, rewarded)
    # ... and rewards are rare enough for that to mean something (Skiing rewards every frame: any byte would pass)
    rare = np.mean(np.concatenate([r | np.concatenate([[False], r[:-1]]) for r in rewarded])) <= SCORE_MAX_REWARDED
    if score_n >= 2 and score_frac >= 0.8 and rare:
        return score_role(observed, f"{score_n} changes during play, {score_frac:.0%} of them on a rewarded frame")
    counter = counter_role(twins)
    if counter:
        return {"role": "toggle" if counter["toggle"] else "counter" if counter["every"] == 1 else "timer",
                "evidence": f"steps by {counter['step']:+d} every {counter['every']} frame(s)"
                            + (" between two values" if counter["toggle"] else "")}
    if pos and pos["fit"] == "place":   # what is drawn in one place changes with the value: its kind, sprite, colour
        r0, r1, c0, c1 = pos["box"]
        return {"role": "appearance", "appearance": pos,
                "evidence": f"holding it at other values changes what is drawn in one place (rows {r0}-{r1}, cols "
                            f"{c0}-{c1}), not where, in {pos['in_place_bases']} of {pos['bases']} bases (any of "
                            f"{POSITION_HOLD_FRAMES} frames): an object's kind, sprite or colour"}
    if len(observed) == 2:
        return {"role": "flag", "evidence": f"two values seen: {observed}"}
    drawn = rec["intervention"].get("screen_differed_fraction", 0)
    if drawn > 0:   # shown on screen, but as no one object moved along an axis, a count or a redraw in one place
        return {"role": "screen state", "evidence": f"writing it changed the screen in {drawn:.0%} of its trials; "
                                                    f"{len(observed)} values seen; no lives, score, counter, position, "
                                                    f"bar or in-place fit (e.g. an object off screen at most bases)"}
    return {"role": "unknown", "evidence": f"{len(observed)} values seen; no lives, score, counter, position or copy pattern"}


CONTROL_FRAMES = 8   # frames each action is held when asking which actions move a position byte
CONTROL_BASES = 4    # bases (the first ones where some action changed the RAM) on which that is asked


def moved_by_actions(ale, bases, indices):
    """Which of the player's actions move each position byte: at the first CONTROL_BASES bases where holding some
    action of the minimal set changed the RAM (not at a lost life's animation, say), each action is held for
    CONTROL_FRAMES frames from the base and the bytes compared with NOOP held as long. indices: RAM indices. ->
    ({index: sorted names of the actions that left it at another value than NOOP did in at least half of those
    bases}, bases used). The player's own object moves with the joystick within a few frames; a shot with FIRE;
    other objects rarely within CONTROL_FRAMES frames."""
    actions = list(ale.getMinimalActionSet())
    noop = ale_py.Action.NOOP if ale_py.Action.NOOP in actions else actions[0]
    counts = {i: {} for i in indices}
    used = 0
    for base in bases:
        if used == CONTROL_BASES:
            break
        rams = {}
        for a in actions:
            ale.restoreState(base["state"])
            for _ in range(CONTROL_FRAMES):
                ale.act(a)
            rams[a] = ale.getRAM().copy()
        if not any((rams[a] != rams[noop]).any() for a in actions):
            continue
        used += 1
        for i in indices:
            for a in actions:
                if rams[a][i] != rams[noop][i]:
                    counts[i][a.name] = counts[i].get(a.name, 0) + 1
    return {i: sorted(n for n, k in c.items() if used and 2 * k >= used) for i, c in counts.items()}, used


def name_roles(records, bases, ale, observed):
    """Give each kept byte's record (list of dicts, as main builds them) its "role" with the evidence, in place:
    latent bytes from their trials, the others with describe_byte (emulating on `ale`, from the base states),
    then the relations between bytes. observed: per byte, the sorted values seen in play (list of 128 lists)."""
    # what each kept byte is, with its evidence (from play and interventions; no per-game table)
    with emulator_stderr_silenced():
        for rec in records:
            if rec["kind"] == "latent":
                r = rec["intervention"]
                signal = signal_role(r, [])   # e.g. a score digit play never reached: ALE's reward still reads it
                rec["role"] = ({**signal, "evidence": "never changed in play; " + signal["evidence"]} if signal else
                               {"role": "latent screen element" if r["screen_differed_fraction"] > 0 else "latent",
                               "evidence": f"never changed in play; written values changed the screen in "
                                           f"{r['screen_differed_fraction']:.0%} and other RAM in {r['ram_differed_fraction']:.0%} of trials"})
            elif rec["kind"] in ("state", "bitmap", "input-driven", "stored", "derived"):
                rec["role"] = describe_byte(rec, bases, ale, observed[rec["index"]])
        # relations between bytes: the velocity or direction of a position byte (a byte no other evidence named),
        # then a display copy of a position byte is that position too (holding a copy moves nothing: the game
        # rewrites it), from the positions left once velocities are named
        positions = {r["index"]: r["role"]["role"][0] for r in records
                     if (r.get("role") or {}).get("role") in ("x-position", "y-position")}
        twin_rams = [b["twin_ram"] for b in bases]
        for rec in records:
            role = rec.get("role") or {}
            # holding a velocity byte also moves its object: a position yields to velocity (not to direction: a
            # bit of one moving object's position often goes with another's direction)
            fit = (role.get("position") or {}).get("fit") if rec["index"] in positions else None
            if (role.get("role") in ("unknown", "flag", "counter", "timer", "toggle", "appearance", "screen state")
                    and "extent" not in role) or fit is not None:
                motion = motion_role(rec["index"], positions, twin_rams)
                if motion and fit is not None and not motion["role"].startswith("velocity"):
                    motion = None
                if motion:
                    rec["role"] = {**motion, "evidence": motion["evidence"] + f"; before: {rec['role']['role']} "
                                                                              f"({rec['role']['evidence']})"}
        role_of = {r["index"]: (r.get("role") or {}).get("role") for r in records}
        positions = {i: axis for i, axis in positions.items() if role_of[i] in ("x-position", "y-position")}
        for rec in records:
            src = rec.get("derived") or {}
            if rec["kind"] == "derived" and src.get("source") in positions and (
                    src["mapping"] in ("copy", "offset") or (src["mapping"] == "affine" and abs(src["a"]) == 1)):
                rec["role"] = {"role": f"{positions[src['source']]}-position", "copy_of": src["source"],
                               "evidence": f"{rec['role']['evidence']}, a {positions[src['source']]}-position"}
        # whose position: the player's object moves when an action is held (a shot: only FIRE), other objects not
        moved, used = moved_by_actions(ale, bases, sorted(positions))
        for rec in records:
            role = rec.get("role") or {}
            j = role.get("copy_of", rec["index"])
            if role.get("role") in ("x-position", "y-position") and j in moved:
                names = moved[j]
                role["moved_by"] = names
                role["object"] = ("player" if any(n not in ("FIRE", "NOOP") for n in names) else
                                  "player's shot" if names else "other")
                role["evidence"] += (f"; holding {', '.join(names)} for {CONTROL_FRAMES} frames moved it against NOOP "
                                     f"in half or more of {used} bases: the {role['object']}'s" if names else
                                     f"; no action held for {CONTROL_FRAMES} frames moved it ({used} bases): not the "
                                     f"player's object")


# ---------------------------------------------------------------- main
KINDS = ("constant", "latent", "scratch", "derived", "stored", "input-driven", "state", "bitmap")


def read_roles_target(path: str, env_id: str) -> dict:
    """The --roles-into file: a ram vars JSON of env_id with 128 byte records. Raises InputError (one line) else."""
    try:
        with open(path) as f:
            target = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"--roles-into: cannot read '{path}': {getattr(e, 'strerror', None) or e}")
    if not (isinstance(target, dict) and target.get("format") == "memory-pixel-interp/ram-vars"
            and isinstance(target.get("bytes"), list) and len(target["bytes"]) == 128):
        raise InputError(f"--roles-into: '{path}' is not a ram vars JSON with 128 byte records")
    if target.get("env_id") != env_id:
        raise InputError(f"--roles-into: '{path}' is for {target.get('env_id')}, this run is {env_id}")
    check_out_dir(os.path.dirname(path) or ".", path)
    return target


def main(args: Args) -> int:
    t_start, cpu_start = time.time(), time.process_time()
    game = rom_name(args.env_id)
    out_path = os.path.join(args.out_dir, args.env_id.replace("/", "_") + ".json")
    check_out_dir(args.out_dir, out_path)
    target = read_roles_target(args.roles_into, args.env_id) if args.roles_into else None

    np_rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    settings = registered_play_settings(args.env_id)
    # play with the id's sticky actions; replay twins and trials on a twin emulator without them: cloneState does
    # not keep the action a sticky repeat would reuse, so with them two replays of one state can differ
    ale = make_ale(game, args.seed, settings["repeat_action_probability"])
    det = make_ale(game, args.seed, 0.0)
    actions = list(ale.getMinimalActionSet())
    policy, policy_desc = None, "go-explore: archive of cloned states by (score, lives), RAM-novelty, sticky random actions"
    if args.checkpoint:
        model, kind, ram_indices = load_checkpoint(args.checkpoint, game, len(actions))
        policy = CheckpointPolicy(model, kind, ram_indices, actions, ale.getScreenDims())
        policy_desc = (f"checkpoint {args.checkpoint} ({kind} agent, sampled actions) for "
                       f"{args.policy_fraction:.0%} of frames + {policy_desc}")
    print(f"extract_ram_vars: {args.env_id} (ROM {game}), {args.total_frames} frames, seed {args.seed}", flush=True)

    # 1. explore and record
    n_bases = args.n_bases or int(np.clip(args.total_frames // 10_000, 10, 30))
    ex, policy_frames = explore(ale, np_rng, args, policy, n_sampled=(n_bases - 1) // 3)
    counts = ex.counts
    n_distinct = (counts > 0).sum(1)
    changing = [i for i in range(128) if n_distinct[i] > 1]
    observed = [np.nonzero(counts[i])[0].tolist() for i in range(128)]
    print(f"explored {ex.frames} frames, {len(ex.cells)} cells, best score {ex.best_score:g}; "
          f"{len(changing)} of 128 bytes changed", flush=True)

    # 2-4. base states + twins, interventions, long re-test, bitmap test
    t_explored = time.time()
    with emulator_stderr_silenced():
        bases, long_bases, dropped = make_bases(det, ex, args, actions, np_rng, n_bases)
        if not bases:
            raise InputError(f"emulation of {game} is not deterministic under cloneState/restoreState: no usable base state")
        results, first_hits, done_frames, bitmap_frames = test_bytes(det, changing, observed, bases, long_bases, args, np_rng)
        null = null_interventions(det, bases, np_rng)
        # never changed in play, but does writing it change the future? (state that play did not reach)
        latent = {i: summarize_trials(latent_trials(det, bases, i, np_rng), args.horizon) for i in range(128)
                  if n_distinct[i] <= 1}
        # no effect under random actions: a function of a byte that has one, memory read only at events the tests
        # did not reach (the game keeps what is written), computed each frame from other bytes, or set by the input?
        inert = [i for i in changing if results[i]["effect_fraction"] == 0]
        effective = [i for i in changing if results[i]["effect_fraction"] > 0]
        sources = {i: find_source(i, [b["twin_ram"] for b in bases], effective) for i in inert}
        stored = {i for i in inert if sources[i] is None and results[i]["persisted_fraction"] >= STORED_MIN_PERSISTED}
        rest = [i for i in inert if sources[i] is None and i not in stored]
        held_bases = held_action_bases(det, bases, actions, args.horizon) if rest else []
        held = {}
        for i in rest:
            if held_bases:
                trials, showed, varies = held_action_trials(det, held_bases, i, observed[i], np_rng)
                held[i] = dict(summarize_trials(trials, args.horizon), actions_that_showed=showed, varies_with_action=varies)
            if not held.get(i, {}).get("actions_that_showed"):   # no effect of its own even with an action held
                sources[i] = computed_source(i, first_hits, effective, results)
    t_tested = time.time()

    # 5. classify and select
    records, selected, excluded = [], [], {}
    for i in range(128):
        vals = observed[i]
        rec = {"index": i, "address": f"0x{0x80 + i:02X}", "kind": None, "selected": False, "reason": "",
               "min": int(vals[0]), "max": int(vals[-1]), "n_distinct": int(n_distinct[i]),
               "change_rate": round(float(ex.changes[i]) / max(ex.transitions, 1), 6),
               "values": vals if len(vals) <= 16 else None}
        if n_distinct[i] <= 1:
            r = rec["intervention"] = latent[i]
            if r["differed_fraction"] > 0:
                rec["kind"] = "latent"
                rec["reason"] = (f"latent: value {vals[0]} in all {ex.frames} recorded frames, but writing other values "
                                 f"changed the future in {r['differed_fraction']:.0%} of {r['trials']} trials (screen "
                                 f"{r['screen_differed_fraction']:.0%}): state that play did not reach")
            else:
                rec["kind"] = "constant"
                rec["reason"] = (f"constant: value {vals[0]} in all {ex.frames} recorded frames; writing other values "
                                 f"changed nothing in {r['trials']} trials")
        else:
            r = results[i]
            rec["intervention"] = r
            lh = r.get("long_horizon")
            if r["effect_fraction"] == 0 and held.get(i, {}).get("actions_that_showed"):
                rec["kind"], rec["held_actions"] = "input-driven", held[i]
                rec["reason"] = (f"input-driven: no effect under random actions ({r['trials']} trials), but with an action "
                                 f"held the future differed in {held[i]['differed_fraction']:.0%} of {held[i]['trials']} "
                                 f"trials (actions {held[i]['actions_that_showed']}); the controller rewrites it")
            elif r["effect_fraction"] == 0 and sources.get(i) and sources[i]["mapping"] == "computed":
                src = sources[i]
                rec["kind"], rec["derived"] = "derived", src
                rec["reason"] = (f"derived: setting it never changed the future ({r['trials']} trials) and the game "
                                 f"overwrote it within 1 frame in {r['overwritten_fraction']:.0%} of them; writing byte(s) "
                                 f"{src['sources']} changed it on the next frame: computed every frame from them "
                                 f"(a label, not an agent input)")
            elif r["effect_fraction"] == 0 and sources.get(i):
                rec["kind"], rec["derived"] = "derived", sources[i]
                rec["reason"] = (f"derived: setting it never changed the future ({r['trials']} trials); over every frame "
                                 f"of play it is a {sources[i]['mapping']} of byte {sources[i]['source']}"
                                 f"{' one frame later' if sources[i]['lag'] else ''} (a label, not an agent input)")
            elif r["effect_fraction"] == 0 and i in stored:
                rec["kind"] = "stored"
                rec["reason"] = (f"stored: setting it never changed the future ({r['trials']} trials"
                                 + (f", nor over {args.long_horizon} frames" if lh else "")
                                 + f"), but it changes in play and the written change was still in the byte after the "
                                 f"first frame in {r['persisted_fraction']:.0%} of trials: memory, not a temporary, read "
                                 f"only at events the tests did not reach")
            elif r["effect_fraction"] == 0:
                rec["kind"] = "scratch"
                kept = (f"the game kept the value in {r['persisted_fraction']:.0%} of trials"
                        + (f", no effect over {args.long_horizon} frames either" if lh else "")
                        if r["persisted_fraction"] > 0 else "the game overwrote it within 1 frame in every trial")
                rec["reason"] = (f"scratch: setting it to other observed values never changed the screen or other RAM "
                                 f"within {args.horizon} frames ({r['trials']} trials; {kept})"
                                 + (f"; nor with an action held ({held[i]['trials']} trials)" if i in held else "")
                                 + "; no other byte it is a function of")
            else:
                rec["kind"] = "bitmap" if r["bitmap"].get("is_bitmap") else "state"
                rec["reason"] = (f"{rec['kind']}: the future differed in {r['differed_fraction']:.0%} of {r['trials']} trials "
                                 f"(screen {r['screen_differed_fraction']:.0%}, other RAM {r['ram_differed_fraction']:.0%})"
                                 + (f", {lh['differed_fraction']:.0%} over {args.long_horizon} frames" if lh else "")
                                 + (f"; {r['bitmap']['why']}" if rec["kind"] == "bitmap" else ""))
        if rec["kind"] in ("constant", "scratch", "derived"):
            excluded[str(i)] = rec["kind"]
        elif rec["kind"] == "stored" and args.min_effect > 0:
            excluded[str(i)] = "weak-effect"
            rec["reason"] += f" -- excluded: no effect seen, and --min-effect is {args.min_effect}"
        elif rec["kind"] == "bitmap" and args.drop_bitmaps:
            excluded[str(i)] = "bitmap"
            rec["reason"] += " -- excluded by --drop-bitmaps"
        elif rec["intervention"].get("effect_fraction", rec["intervention"]["differed_fraction"]) <= args.min_effect \
                and rec["kind"] not in ("input-driven", "stored"):
            excluded[str(i)] = "weak-effect"
            rec["reason"] += f" -- excluded: effect fraction <= --min-effect {args.min_effect}"
        else:
            rec["selected"] = True
            selected.append(i)
        records.append(rec)

    name_roles(records, bases, det, observed)
    lives_seen = sorted({int(v) for b in bases for v in b["twin_lives"]} | set(ex.lives_seen))
    rare = [{"index": i, "n_distinct": int(n_distinct[i]), "change_rate": round(float(ex.changes[i]) / max(ex.transitions, 1), 6)}
            for i in selected if n_distinct[i] >= 2 and ex.changes[i] / max(ex.transitions, 1) < 1e-3]
    coverage = {"best_score": float(ex.best_score), "lives_seen": lives_seen,
                "lives_lost": (max(lives_seen) - min(lives_seen)) if lives_seen else 0,
                "rarely_changing_selected_bytes": rare,
                "note": "rarely changing bytes (level, room, stage counters) took only the values listed; values play "
                        "did not reach are not known to the agent or the probe"}

    rule = ("selected = kinds 'state' (changed while playing, and setting it to other observed values at frame "
            "boundaries of base states -- the reset state, uniformly sampled visited frames, states shortly before "
            "rewards / lost lives, Go-Explore archive states; same actions as an untouched twin, replayed without "
            "sticky actions -- changed the future screen or other RAM bytes in more than "
            f"{args.min_effect:g} of the trials; {args.horizon} frames, {args.long_horizon} for bytes the game kept "
            "without effect), 'bitmap' (state whose bits each toggle a fixed screen block), 'latent' (never changed "
            "in play, but writing it changed the future) and 'input-driven' (no effect under random actions, an "
            "effect with an action held: the controller rewrites it)"
            + (" and 'stored' (changed in play, no effect seen, but the game keeps values written into it: memory "
               "read at events the trials did not reach)" if args.min_effect == 0 else "")
            + "; excluded: 'constant' (never changed, writing it changed nothing), 'scratch' (no effect, not a "
            "function of other bytes), 'derived' (a function of one byte with an effect over every frame of play, or "
            "recomputed every frame from bytes whose writes changed it: a label, see its 'derived' record)"
            + (", 'weak-effect' (effect at or below --min-effect)" if args.min_effect > 0 else "")
            + ("; bitmap bytes excluded by --drop-bitmaps" if args.drop_bitmaps
               else "; bitmap bytes included (--drop-bitmaps not set)"))
    seconds = time.time() - t_start
    out = {
        "format": "memory-pixel-interp/ram-vars", "version": 3,
        "env_id": args.env_id, "game": game,
        "selected": selected, "excluded": excluded, "bytes": records,
        "selection_rule": rule,
        "produced_by": {
            "script": "extract_ram_vars.py", "frames": int(ex.frames), "seed": args.seed, "policy": policy_desc,
            "args": asdict(args), "ale_py": ale_py.__version__, "seconds": round(seconds, 2),
            "cpu_seconds": round(time.process_time() - cpu_start, 2),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "policy_frames": int(policy_frames), "archive_cells": len(ex.cells),
            "archive_states": sum(len(c["entries"]) for c in ex.cells.values()),
            "best_score": float(ex.best_score), "bases": len(bases), "long_bases": len(long_bases),
            "event_bases_sampled": len(ex.events.items), "events_seen": ex.events.seen,
            "nondeterministic_bases_dropped": dropped,
            "intervention_frames": int(done_frames), "bitmap_test_frames": int(bitmap_frames),
            "explore_seconds": round(t_explored - t_start, 2), "test_seconds": round(t_tested - t_explored, 2),
            "env_settings": settings, "emulation": "one frame per act(); play with the id's sticky-action "
            "probability, twins and interventions replayed with sticky actions off",
            "null_interventions": null,
        },
        "coverage": coverage,
    }
    try:
        write_json_atomic(out_path, out)
    except OSError as e:  # a full disk: an earlier file of that name stays whole
        raise InputError(f"cannot write {out_path}: {e.strerror or e}")
    kinds = {k: sum(r["kind"] == k for r in records) for k in KINDS}
    print(f"wrote {out_path}: {len(selected)} selected {selected}; kinds {kinds}; {seconds:.1f}s", flush=True)
    if target is not None:  # an upgrade of an older file: its selection stays, its bytes get this run's roles
        for rec, old in zip(records, target["bytes"]):
            if rec.get("role"):
                old["role"] = rec["role"]
        target.setdefault("produced_by", {})["roles"] = {
            "from": out_path, "script": "extract_ram_vars.py", "version": 3, "seed": args.seed, "frames": int(ex.frames),
            "created": out["produced_by"]["created"],
            "note": "each byte's 'role' comes from this later run of the extractor; the rest of the file is unchanged"}
        try:
            write_json_atomic(args.roles_into, target)
        except OSError as e:
            raise InputError(f"cannot write {args.roles_into}: {e.strerror or e}")
        print(f"wrote the roles of {sum(bool(r.get('role')) for r in target['bytes'])} bytes into {args.roles_into} "
              f"(its {len(target.get('selected', []))} selected bytes unchanged)", flush=True)
    return 0


if __name__ == "__main__":
    args = parse_args()
    check_ranges(args, RANGES)
    try:
        sys.exit(main(args))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted, nothing written", file=sys.stderr)
        sys.exit(130)
