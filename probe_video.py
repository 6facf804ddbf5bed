"""Decoded-state video: what a probe reads out of the pixel agent, frame by frame, beside the game.

    python probe_video.py --probe-dir probe/BreakoutNoFrameskip-v4                     # relu3, natural read-out
    python probe_video.py --probe-dir probe/BreakoutNoFrameskip-v4 --layer relu_fc --vars 0x63 0x65 0x48
    python probe_video.py --probe-dir probe/BreakoutNoFrameskip-v4 --readout intervention --frames 300

Input: a folder written by probe_function_vectors.py (results.json; activations.npz too for --readout intervention)
and the pixel checkpoint it probed (results.json's inputs.pixel_checkpoint, or --pixel-checkpoint: the same agent at
the same global step). Output, in --probe-dir unless --out says otherwise: `decoded_<layer>_<readout>.mp4` (VP9 in MP4,
written by OpenCV's FFmpeg; 15 frames/s, one per agent step, which is the game's own speed) and, beside it,
`decoded_<layer>_<readout>.json` (what is shown, how it was fitted, how well the read-out followed the RAM in the
video: docs/FORMATS.md section 6). Then probe_report.py runs again, so that the probe's report.html shows the video.

Each frame shows
  * the game: the emulator's RGB screen at full resolution (scaled by --scale), as the agent sees it at that step;
  * per variable: its true value (the RAM at that step), the value read out of --layer, and both over the last
    --trace frames;
  * for a position-like variable: a line where the read-out puts the object (an x-position: vertical, a
    y-position: horizontal) and two triangles on the screen's edges where the true value puts it;
  * beside each variable: the activation map of the --layer channel labelled with it in results.json (of the channels
    labelled with it, the one its intervention moves most; if none is, the channel it moves most, and the panel says
    so); for relu_fc the labelled unit's activation, as a bar.

Read-outs (--readout): one linear (ridge) read-out per variable from the flattened layer output.
  * natural: the probe's step 7 recipe (AtariARI's protocol, Anand et al. 2019) fitted here: the agent plays
    --fit-steps steps on each of --num-envs emulators (noop starts, FIRE after a reset or a lost life, --epsilon random
    actions), and fit_ridge (alpha by leave-episodes-out CV) maps the layer on those unedited frames to the RAM at that
    step: the value for ordinal variables, the one-hot class (read-out = argmax) for categorical ones. The video's game
    is played by one more emulator, seeded after the fitting ones: the video is held out.
  * intervention: the probe's own read-out of the value (activations.npz `probe_w_<layer>`, `probe_b_<layer>`), fitted
    on screens where the byte was held at drawn values (its step 4), applied to the unedited frames of the video.

Position-like variables come from the emulator, no per-game table: from --calib-bases states of the fitting rollouts
the byte is held (setRAM before each of 16 frames, the probe's intervention) at up to --calib-values values; the centre
of the pixels that changed, less those that changed for most values (where the object was), is fitted against the
value along each axis, and where |r| >= 0.9 (the extractor's position test) pixel = a + b * value on that axis places
the markers. Without --vars: the position-like variables among those probed (at most --max-vars, the best
natural-frame probe score at --layer first), else the best-scored ones.
"""
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from ale_py import Action, ALEInterface, LoggerMode, roms
from torch.distributions.categorical import Categorical


@dataclass
class Args:
    probe_dir: str = ""
    """folder written by probe_function_vectors.py (results.json; activations.npz for --readout intervention)"""
    pixel_checkpoint: str = ""
    """the probed pixel agent's checkpoint.pt (default: results.json's inputs.pixel_checkpoint)"""
    layer: Literal["relu1", "relu2", "relu3", "relu_fc"] = "relu3"
    """the layer read out: network.<layer>"""
    vars: tuple[str, ...] = ()
    """RAM variables shown, among those the probe probed: 72, 0x48 or ram[0x48] (index into getRAM()); default: the
    position-like ones (see above)"""
    max_vars: int = 3
    """without --vars: show at most this many variables"""
    readout: Literal["natural", "intervention"] = "natural"
    """natural: a ridge read-out fitted here on the agent's unedited frames (the probe's step 7); intervention: the
    probe's read-out fitted on screens with the byte held (activations.npz probe_w_<layer>)"""
    frames: int = 600
    """video frames, one per agent step (4 emulator frames; 15 per second: 600 = 40 s)"""
    fit_steps: int = 500
    """agent steps per fitting emulator (the natural read-out's frames, the calibration's states, the display ranges)"""
    num_envs: int = 4
    """fitting emulators played side by side (seeds --seed, --seed + 1, ...; the video's game is seed + num_envs)"""
    epsilon: float = 0.0
    """probability of a uniformly random action, in the fitting rollouts and the video (the probe's rollouts: 0.1)"""
    noop_max: int = 30
    """random number (1..noop_max) of NOOP frames after each reset"""
    calib_bases: int = 4
    """states from which each variable is held at several values to find the object it moves"""
    calib_values: int = 7
    """values each variable is held at per state (spread over the values it took in the fitting rollouts)"""
    scale: int = 2
    """the game is drawn this many times its size (nearest neighbour)"""
    trace: int = 90
    """frames of history in each variable's true / read-out plot"""
    seed: int = 1
    """seed of numpy, torch and the emulators"""
    out: str = ""
    """the video file (.mp4; the .json is written beside it); default <probe-dir>/decoded_<layer>_<readout>.mp4"""
    report: bool = True
    """run probe_report.py on --probe-dir afterwards, so that its report.html shows the video"""
    batch_size: int = 256
    """frames per forward pass when fitting"""
    torch_threads: int = 1
    """CPU threads for torch (0 = torch's default)"""
    cuda: bool = True
    """use CUDA when it is available"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {
    "max_vars": "[1, 8]", "frames": "[1, 100000]", "fit_steps": "[8, inf)", "num_envs": "[1, inf)", "epsilon": "[0, 1]",
    "noop_max": "[0, inf)", "calib_bases": "[1, inf)", "calib_values": "[3, 256]", "scale": "[1, 8]", "trace": "[2, inf)",
    "seed": "[0, 2147483647]", "batch_size": "[1, inf)", "torch_threads": "[0, inf)",
}
RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # relative to trace(K)/n, chosen by leave-episodes-out CV
COLOURS = [(255, 140, 0), (0, 200, 255), (255, 60, 200), (90, 255, 90), (255, 255, 60), (160, 130, 255), (255, 90, 90),
           (60, 255, 220)]  # RGB, one per variable
PANEL_WIDTH = 460
FONT = cv2.FONT_HERSHEY_SIMPLEX

ALEInterface.setLoggerMode(LoggerMode.Error)  # no banner per emulator


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


# ---------------------------------------------------------------- models (FORMATS.md §3, verbatim)
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


# ---------------------------------------------------------------- inputs
def rom_name(env_id: str) -> str:
    """ALE ROM name of a gymnasium ALE id, from ale_py's own registration ('BreakoutNoFrameskip-v4' -> 'breakout')."""
    gym.register_envs(ale_py)
    spec = gym.registry.get(env_id)
    game = spec.kwargs.get("game") if spec is not None and "ale_py" in str(spec.entry_point) else None
    if game is None:
        raise InputError(f"unknown env id '{env_id}' (not an ALE gymnasium id such as BreakoutNoFrameskip-v4 or ALE/Pong-v5)")
    return game


def load_checkpoint(path: str, kind: str, flag: str) -> dict:
    if not path:
        raise InputError(f"{flag} is required")
    if not Path(path).is_file():
        raise InputError(f"{kind} checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # nothing is unpickled
    except Exception as e:  # torch raises many types on a damaged file
        raise InputError(f"cannot read {kind} checkpoint {path}: {type(e).__name__}: {str(e)[:120]}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != "memory-pixel-interp/checkpoint":
        raise InputError(f"{path} is not a memory-pixel-interp checkpoint")
    if ckpt.get("agent") != kind:
        raise InputError(f"{flag} {path} holds a {ckpt.get('agent')!r} agent, expected {kind!r}")
    for key in ("env_id", "model_kwargs", "state_dict"):
        if key not in ckpt:
            raise InputError(f"checkpoint {path} lacks {key!r}")
    try:
        model = (Agent if kind == "pixel" else RamAgent)(**ckpt["model_kwargs"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as e:
        raise InputError(f"checkpoint {path} does not rebuild the {kind} model: {type(e).__name__}: {str(e)[:160]}")
    ckpt["model"] = model.eval()
    return ckpt


def var_index(text: str) -> int:
    """--vars: '72', '0x48' or 'ram[0x48]' -> RAM index 0..127."""
    m = re.fullmatch(r"\s*(?:ram\[)?\s*(0x[0-9a-fA-F]+|\d+)\s*\]?\s*", text)
    if not m or not 0 <= int(m.group(1), 0) <= 127:
        raise InputError(f"--vars: {text!r} is not a RAM index 0..127 (e.g. 72, 0x48, ram[0x48])")
    return int(m.group(1), 0)


def check_inputs(args: Args):
    """Everything that can be wrong with the inputs is found here, before anything is written. Returns (results.json,
    the pixel checkpoint, the ROM name, the indices asked for by --vars, the probe's read-out (W (V, d), b (V,)) of
    --layer or None, the output path)."""
    if not args.probe_dir:
        raise InputError("--probe-dir is required (a folder written by probe_function_vectors.py)")
    probe_dir = Path(args.probe_dir)
    try:
        res = json.loads((probe_dir / "results.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{probe_dir / 'results.json'} does not exist (run probe_function_vectors.py first)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {probe_dir / 'results.json'}: {e}")
    if not isinstance(res, dict) or res.get("format") != "memory-pixel-interp/probe":
        raise InputError(f"{probe_dir / 'results.json'} is not a probe result (format != memory-pixel-interp/probe)")
    if not isinstance(res.get("variables"), list) or not res["variables"] or args.layer not in (res.get("layers") or {}):
        raise InputError(f"{probe_dir / 'results.json'} has no variables or no layer {args.layer!r}")
    game = rom_name(res["env_id"])
    path = args.pixel_checkpoint or str((res.get("inputs") or {}).get("pixel_checkpoint") or "")
    if not args.pixel_checkpoint and path and not Path(path).is_absolute() and not Path(path).is_file():
        raise InputError(f"the probed checkpoint {path} (results.json inputs.pixel_checkpoint, relative to where the probe "
                         "ran) is not found from here: pass --pixel-checkpoint")
    pix = load_checkpoint(path, "pixel", "--pixel-checkpoint")
    if rom_name(pix["env_id"]) != game:
        raise InputError(f"--pixel-checkpoint is for {pix['env_id']}, the probe for {res['env_id']}")
    probed_step = (res.get("inputs") or {}).get("pixel_global_step")
    if probed_step is not None and pix.get("global_step") != probed_step:
        raise InputError(f"--pixel-checkpoint {path} is at global_step {pix.get('global_step')}, the probe's at {probed_step}: "
                         "not the probed agent (its unit labels and read-outs would not fit)")
    probed = [v["index"] for v in res["variables"]]
    asked = [var_index(t) for t in args.vars]
    for i in asked:
        if i not in probed:
            raise InputError(f"--vars: ram[0x{i:02x}] was not probed (probed: {', '.join(v['name'] for v in res['variables'])})")
    weights = None
    if args.readout == "intervention":
        try:
            with np.load(probe_dir / "activations.npz") as z:
                names = [str(n) for n in z["var_names"]]
                weights = (z[f"probe_w_{args.layer}"].astype(np.float32), z[f"probe_b_{args.layer}"].astype(np.float32))
        except FileNotFoundError:
            raise InputError(f"--readout intervention needs {probe_dir / 'activations.npz'}, which does not exist")
        except Exception as e:  # zipfile, KeyError, a truncated file
            raise InputError(f"cannot read the probe's read-out from {probe_dir / 'activations.npz'}: {type(e).__name__}: {e}")
        if names != [v["name"] for v in res["variables"]]:
            raise InputError(f"{probe_dir / 'activations.npz'} and results.json list different variables (another run?)")
    out = Path(args.out or probe_dir / f"decoded_{args.layer}_{args.readout}.mp4")
    if out.suffix != ".mp4":
        raise InputError(f"--out {out} must end in .mp4")
    folder = out.parent
    if not os.access(folder if folder.exists() else next(p for p in folder.parents if p.exists()), os.W_OK) or (
            folder.exists() and not folder.is_dir()):
        raise InputError(f"cannot write {out}: {folder} is not a writable folder")
    return res, pix, game, asked, weights, out


# ---------------------------------------------------------------- emulation (the probe's observation)
class Emulator:
    """One ALEInterface with the pixel agent's observation: frame skip 4, max over the last 2 frames, gray,
    cv2.resize to 84x84 INTER_AREA, 4-frame stack (oldest first, zeros after a reset) - ale_py's AtariVectorEnv."""

    def __init__(self, game: str, seed: int):
        self.ale = ALEInterface()
        self.ale.setInt("random_seed", seed)
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.ale.loadROM(roms.get_rom_path(game))
        self.action_set = self.ale.getMinimalActionSet()
        self.fire = self.action_set.index(Action.FIRE) if Action.FIRE in self.action_set else None
        self.noop = self.action_set[0]
        self.stack = np.zeros((4, 84, 84), np.uint8)
        self.episode, self.lives, self.needs_fire = -1, 0, False

    def reset(self, rng, noop_max: int):
        self.ale.reset_game()
        for _ in range(int(rng.integers(1, noop_max + 1)) if noop_max > 0 else 0):
            self.ale.act(self.noop)
        self.stack[:] = 0
        self.stack[-1] = cv2.resize(self.ale.getScreenGrayscale(), (84, 84), interpolation=cv2.INTER_AREA)
        self.episode += 1
        self.lives = self.ale.lives()
        self.needs_fire = self.fire is not None

    def step(self, action: int, pin=None):
        """One agent step (4 frames); `pin` = (ram index, value) is written before every frame.
        Returns (maxed raw gray frame (H, W) uint8, H, W = ale.getScreenDims(): 210x160 on most games, 250x160
        on KingKong), reward); the 84x84 frame is pushed onto self.stack."""
        reward, last = 0, []
        for k in range(4):
            if pin is not None:
                self.ale.setRAM(pin[0], pin[1])
            reward += self.ale.act(self.action_set[action])
            if k >= 2:
                last.append(self.ale.getScreenGrayscale())
        raw = np.maximum(last[0], last[1])
        self.stack = np.roll(self.stack, -1, axis=0)
        self.stack[-1] = cv2.resize(raw, (84, 84), interpolation=cv2.INTER_AREA)
        lives = self.ale.lives()
        self.needs_fire = self.fire is not None and lives < self.lives
        self.lives = lives
        return raw, reward

    def replay(self, state, actions, pin=None):
        """Restore `state` and play `actions` (4 agent steps), pinning `pin`; -> (stack, last raw frame, RAM)."""
        self.ale.restoreState(state)
        self.stack[:] = 0
        for a in actions:
            raw, _ = self.step(int(a), pin)
        return self.stack.copy(), raw, self.ale.getRAM().copy()


def choose_actions(agent, stacks, emus, rng, epsilon: float, device):
    """One batched forward pass on the stacks (n, 4, 84, 84) uint8: actions sampled from the policy (as PPO acts), FIRE
    where an emulator needs it (after a reset or a lost life), else a uniformly random action with probability epsilon.
    The layer's output is captured by the forward hook of main."""
    with torch.no_grad():
        action, _, _, _ = agent.get_action_and_value(torch.as_tensor(stacks, device=device))
    actions = action.cpu().numpy()
    for i, e in enumerate(emus):
        if e.needs_fire:
            actions[i] = e.fire
        elif rng.random() < epsilon:
            actions[i] = int(rng.integers(len(e.action_set)))
    return actions


def rollout(emus, agent, captured, steps: int, rng, args, device):
    """The agent plays all emulators for `steps` agent steps. Returns the frames it saw with what they are labelled
    with: "X" (n, d) float32 (the layer, flattened), "maps" (n, *layer shape) float32, "ram" (n, 128) uint8 (the RAM
    at that step), "group" (n,) int (emulator, episode: the CV folds), and "bases": (state, the 4 actions taken next,
    RAM) of states with 4 more steps in the same episode (the calibration's), at most 4 * --calib-bases of them."""
    for e in emus:
        e.reset(rng, args.noop_max)
    X, ram, group, cand = [], [], [], []
    history = [[] for _ in emus]
    prog = Progress("rollout", steps, "steps")
    for t in range(steps):
        stacks = np.stack([e.stack for e in emus])
        rams = np.stack([e.ale.getRAM() for e in emus])
        actions = choose_actions(agent, stacks, emus, rng, args.epsilon, device)
        X.append(captured["out"].float().cpu().numpy())
        ram.append(rams)
        group.append([i * 100000 + e.episode for i, e in enumerate(emus)])
        for i, e in enumerate(emus):
            history[i].append((e.ale.cloneState(), int(actions[i]), rams[i], e.episode))
            e.step(int(actions[i]))
            if e.ale.game_over():
                history[i].append(None)  # no base state spans a game over
                e.reset(rng, args.noop_max)
        prog.update(t + 1)
    for h in history:
        for k in range(len(h) - 4):
            window = h[k:k + 4]
            if all(w is not None for w in window) and len({w[3] for w in window}) == 1:
                cand.append((window[0][0], np.array([w[1] for w in window]), window[0][2]))
    picks = rng.choice(len(cand), min(len(cand), 4 * args.calib_bases), replace=False) if cand else []
    maps = np.concatenate(X)
    return {"X": maps.reshape(len(maps), -1), "maps": maps, "ram": np.concatenate(ram),
            "group": np.array(group).reshape(-1), "bases": [cand[i] for i in sorted(picks)]}


# ---------------------------------------------------------------- where a variable puts an object
def locate(emu, bases, index: int, values, n_bases: int):
    """Hold ram[index] (Emulator.replay: restore a base state, setRAM before each of 16 frames, the 4 agent steps the
    agent took there) at each of `values`, and at its own value; per value, the pixels of the last frame that differ
    from the own value's screen, less those that differ for most values (where the object was), have a centre. A value
    counts when the byte ended other than with its own value held (the probe's "kept": a game may move it on after each
    write) and the screen changed; a base counts with 3 such values (the object may be off screen at some bases).
    Per axis a line pixel = a + b * value is fitted, leaving out points off it by more than max(3 px, 3 x the median
    distance) (a value can put the object where the game wraps it or hides it), and it is a position when the points
    left are >= 60% of all, take 5 or more values and span 8 or more pixels, and the line holds them (|r| >= 0.9,
    |b| >= 0.05 px per unit: the extractor's position test), and what moved is object-sized along that axis (its median
    extent <= a quarter of the screen: not a brick row).
    Returns ({"axis": "x" | "y", "a", "b" (screen pixels), "r", "points", "outliers"}, None), else (None, why)."""
    vs, cx, cy, sx, sy, used = [], [], [], [], [], 0
    for state, actions, ram in bases:
        if used >= n_bases:
            break
        own = int(ram[index])
        ref_end = emu.replay(state, actions, (index, own))[2]
        ref = emu.ale.getScreenGrayscale()  # the last frame alone: a moving object is in one place
        masks = {}
        for v in values:
            if v != own:
                end = emu.replay(state, actions, (index, int(v)))[2]
                screen = emu.ale.getScreenGrayscale()
                if end[index] != ref_end[index] and (screen != ref).any():
                    masks[int(v)] = screen != ref
        if len(masks) < 3:
            continue
        used += 1
        common = np.sum(list(masks.values()), 0) >= max(2, len(masks) / 2)  # where the object was: in most masks
        for v, m in masks.items():
            yy, xx = np.nonzero(m & ~common)
            if len(xx):
                vs.append(v)
                cx.append(float(xx.mean()))
                cy.append(float(yy.mean()))
                sx.append(int(np.ptp(xx)))
                sy.append(int(np.ptp(yy)))
    if len(set(vs)) < 3:
        return None, (f"holding it at {len(values)} values from {len(bases)} states moved nothing on screen often enough "
                      f"({used} states with 3 or more values that kept and changed the screen)")
    vs, best = np.array(vs, float), None
    for axis, c, span, size in (("x", cx, sx, emu.ale.getScreenDims()[1]), ("y", cy, sy, emu.ale.getScreenDims()[0])):
        c, keep = np.array(c), np.ones(len(vs), bool)
        for _ in range(3):
            if len(np.unique(vs[keep])) < 3 or np.ptp(c[keep]) == 0:
                break
            b, a = np.polyfit(vs[keep], c[keep], 1)
            off = np.abs(c - (a + b * vs))
            keep = off <= max(3.0, 3 * float(np.median(off[keep])))
        if keep.sum() < 0.6 * len(vs) or len(np.unique(vs[keep])) < 5 or np.ptp(c[keep]) < 8:
            continue
        r = float(np.corrcoef(vs[keep], c[keep])[0, 1])
        b, a = (float(x) for x in np.polyfit(vs[keep], c[keep], 1))
        if (abs(r) >= 0.9 and abs(b) >= 0.05 and np.median(np.array(span)[keep]) <= size / 4
                and (best is None or abs(r) > abs(best["r"]))):
            best = {"axis": axis, "a": round(a, 3), "b": round(b, 4), "r": round(r, 3), "points": int(keep.sum()),
                    "outliers": int((~keep).sum())}
    return best, None if best else ("what it moves on screen does not move along one axis with the value (|r| < 0.9 "
                                    "with outliers left out), or is not object-sized")


# ---------------------------------------------------------------- read-outs
def fit_ridge(X, Y, groups, alphas=RIDGE_ALPHAS):
    """Ridge (dual form) on centred features (not rescaled: a unit that is almost silent on the training
    states must not be blown up), alpha chosen by leave-base-states-out CV on the training set.
    X (n, d) float tensor, Y (n, k). Returns (W (d, k), b (k,))."""
    mu = X.mean(0)
    Z = X - mu
    K = Z @ Z.T
    eye = torch.eye(K.shape[0], device=X.device)
    uniq = np.unique(groups)
    n_folds = min(3, len(uniq))
    best = alphas[len(alphas) // 2]
    if n_folds >= 2:
        fold_of = {g: i % n_folds for i, g in enumerate(uniq)}
        folds = np.array([fold_of[g] for g in groups])
        err = np.zeros(len(alphas))
        for f in range(n_folds):
            tr, va = torch.as_tensor(folds != f, device=X.device), torch.as_tensor(folds == f, device=X.device)
            Ktr, ym = K[tr][:, tr], Y[tr].mean(0)
            kva = K[va][:, tr] - K[va][:, tr].mean(1, keepdim=True) - Ktr.mean(0) + Ktr.mean()  # centred on the fold
            Ktr = Ktr - Ktr.mean(0) - Ktr.mean(1, keepdim=True) + Ktr.mean()
            scale = torch.trace(Ktr) / Ktr.shape[0] + 1e-12
            for ai, a in enumerate(alphas):
                A = torch.linalg.solve(Ktr + a * scale * eye[:len(Ktr), :len(Ktr)], Y[tr] - ym)
                err[ai] += ((kva @ A + ym - Y[va]) ** 2).sum().item()
        best = alphas[int(np.argmin(err))]
    ym = Y.mean(0)
    A = torch.linalg.solve(K + best * (torch.trace(K) / K.shape[0] + 1e-12) * eye, Y - ym)
    W = Z.T @ A
    return W, ym - mu @ W


def fit_readouts(fit, variables, weights, res, args, device):
    """Per shown variable a function (n, d) layer features -> (n,) read-out values, and how it was made."""
    X = torch.as_tensor(fit["X"], device=device)
    readouts = []
    for var in variables:
        j = var["slot"]
        if args.readout == "intervention":
            w, b = torch.as_tensor(weights[0][j], device=device), float(weights[1][j])
            readouts.append(((lambda F, w=w, b=b: (F @ w + b).cpu().numpy()),
                             {"how": "the probe's ridge read-out of the value, fitted on screens with the byte held (activations.npz "
                                     f"probe_w_{args.layer}, probe_b_{args.layer})",
                              "probe_score": ((res["variables"][j].get("probe") or {}).get(args.layer) or {}).get("score")}))
            continue
        y = fit["ram"][:, var["index"]].astype(np.int64)
        classes = np.unique(y)
        info = {"n_frames": int(len(y)), "episodes": int(len(np.unique(fit["group"]))),
                "natural_probe_score": ((res["variables"][j].get("natural") or {}).get(args.layer) or {}).get("score")}
        if len(classes) == 1:  # nothing to fit: the read-out says the one value it saw
            readouts.append(((lambda F, c=float(classes[0]): np.full(len(F), c)), dict(info, how="constant: one value in the fitting frames")))
        elif var["categorical"]:
            W, b = fit_ridge(X, torch.as_tensor((y[:, None] == classes[None]).astype(np.float32), device=device), fit["group"])
            readouts.append(((lambda F, W=W, b=b, c=classes: c[(F @ W + b).argmax(1).cpu().numpy()].astype(float)),
                             dict(info, how="ridge classifier on the one-hot value (classes of the fitting frames), argmax")))
        else:
            W, b = fit_ridge(X, torch.as_tensor(y[:, None].astype(np.float32), device=device), fit["group"])
            readouts.append(((lambda F, W=W, b=b: (F @ W + b)[:, 0].cpu().numpy()), dict(info, how="ridge regression of the value")))
    return readouts


# ---------------------------------------------------------------- drawing
def text(img, s, x, y, colour=(230, 230, 230), size=0.42):
    cv2.putText(img, s, (int(x), int(y)), FONT, size, colour, 1, cv2.LINE_AA)


def draw_markers(game, var, true, read, scale, colour):
    """On the scaled game (RGB, in place): the read-out's line (dashed, across the screen) and the true value's
    triangles on the two edges, along the variable's axis."""
    pos = var["position"]
    h, w = game.shape[:2]
    along, across = (w, h) if pos["axis"] == "x" else (h, w)
    p_read, p_true = ((pos["a"] + pos["b"] * v + 0.5) * scale for v in (read, true))
    if 0 <= p_read < along:
        for q in range(0, across, 8):
            ends = [(int(p_read), q), (int(p_read), min(q + 4, across - 1))]
            cv2.line(game, *(e if pos["axis"] == "x" else e[::-1] for e in ends), colour, max(1, scale // 2))
    if 0 <= p_true < along:
        for edge, sign in ((0, 1), (across - 1, -1)):
            tri = np.array([(p_true, edge), (p_true - 5, edge + 9 * sign), (p_true + 5, edge + 9 * sign)])
            cv2.fillPoly(game, [(tri if pos["axis"] == "x" else tri[:, ::-1]).astype(np.int32)], colour)


def draw_row(panel, y0, row_h, var, t, colour, args):
    """One variable's part of the panel: name, what it is, true and read-out values, the unit's map (or bar) and the
    trace of both over the last --trace frames (a sweep: only the column at the cursor changes from frame to frame)."""
    s, pos = var["series"], var["position"]
    where = f"  screen {pos['axis']} = {pos['b']:.2f} v {pos['a']:+.0f} (r {pos['r']:.2f})" if pos else ""
    text(panel, f"{var['name']}  {var['role'] or var['kind']}{where}", 8, y0 + 15, colour, 0.44)
    text(panel, f"RAM {s['true'][t]:.0f}   read-out {s['read'][t]:.1f}", 8, y0 + 31)
    unit, m = var["unit"], max(20, min(row_h - 72, 120))
    if unit is not None:
        act, vmax = s["unit"][t], unit["display_max"]
        if np.ndim(act) == 2:  # a conv channel's map
            img = cv2.applyColorMap(np.clip(act / vmax * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[:, :, ::-1]
            panel[y0 + 38:y0 + 38 + m, 8:8 + m] = cv2.resize(img, (m, m), interpolation=cv2.INTER_NEAREST)
        else:  # an fc unit: its activation as a bar
            cv2.rectangle(panel, (8, y0 + 38), (8 + m, y0 + 38 + 14), (70, 70, 70), 1)
            cv2.rectangle(panel, (8, y0 + 38), (8 + int(m * min(act / vmax, 1.0)), y0 + 38 + 14), colour, -1)
        label = f"channel {unit['unit']}" if np.ndim(act) == 2 else f"unit {unit['unit']} = {float(act):.2f}"
        text(panel, f"{args.layer} {label}", 8, y0 + 38 + m + 13, size=0.36)
        text(panel, unit["why"], 8, y0 + 38 + m + 26, (150, 150, 150), 0.32)
    x0, x1, ty0, ty1 = 8 + m + 12, PANEL_WIDTH - 10, y0 + 38, y0 + row_h - 8
    cv2.rectangle(panel, (x0, ty0), (x1, ty1), (70, 70, 70), 1)
    lo, hi = s["range"]
    frames = np.arange(max(0, t - args.trace + 1), t + 1)
    xs = (x0 + 1 + (frames % args.trace) * (x1 - x0 - 2) / (args.trace - 1)).astype(np.int32)
    for key, c in (("true", (235, 235, 235)), ("read", colour)):
        ys = (ty1 - 1 - np.clip((s[key][frames] - lo) / (hi - lo), 0, 1) * (ty1 - ty0 - 2)).astype(np.int32)
        for k in range(1, len(frames)):
            if frames[k] % args.trace:  # no segment across the sweep's wrap
                cv2.line(panel, (xs[k - 1], ys[k - 1]), (xs[k], ys[k]), c, 1)
    cv2.line(panel, (xs[-1], ty0 + 1), (xs[-1], ty1 - 1), (90, 90, 90), 1)
    text(panel, f"{hi:.0f}", x1 - 30, ty0 + 11, (140, 140, 140), 0.32)
    text(panel, f"{lo:.0f}", x1 - 30, ty1 - 3, (140, 140, 140), 0.32)


def draw_frame(rgb, shown, t, header, args):
    """The whole video frame (RGB): a header line, the scaled game with the markers, the panel of variables."""
    s = args.scale
    game = cv2.resize(rgb, (rgb.shape[1] * s, rgb.shape[0] * s), interpolation=cv2.INTER_NEAREST)
    for j, var in enumerate(shown):
        if var["position"] is not None:
            draw_markers(game, var, var["series"]["true"][t], var["series"]["read"][t], s, COLOURS[j])
    height = max(game.shape[0], 150 * len(shown))
    panel = np.zeros((height, PANEL_WIDTH, 3), np.uint8)
    row_h = height // len(shown)
    for j, var in enumerate(shown):
        draw_row(panel, j * row_h, row_h, var, t, COLOURS[j], args)
    body = np.zeros((height, game.shape[1] + PANEL_WIDTH, 3), np.uint8)
    body[:game.shape[0], :game.shape[1]] = game
    body[:, game.shape[1]:] = panel
    top = np.zeros((40, body.shape[1], 3), np.uint8)
    text(top, header[0], 6, 15, size=0.4)
    text(top, header[1] + f"   frame {t + 1}/{args.frames}", 6, 32, (170, 170, 170), 0.36)
    frame = np.concatenate([top, body])
    return np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))  # even sides for the encoder


# ---------------------------------------------------------------- output
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


class Progress:
    def __init__(self, stage: str, total: int, unit: str = "samples"):
        self.stage, self.total, self.unit, self.t0, self.last = stage, total, unit, time.time(), 0.0

    def update(self, done: int):
        now = time.time()
        if now - self.last < 2.0 and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        print(f"[{self.stage}] {done}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  ETA {eta:.0f}s", flush=True)


def unit_for(res, j: int, layer: str):
    """The unit / channel of `layer` shown for variable slot j: of those labelled with it (results.json layers), the
    one it moves most; else the one it moves most (top_units). None when it moves none."""
    labelled = [u for u in res["layers"][layer].get("units", []) if u.get("var") == j]
    if labelled:
        u = max(labelled, key=lambda u: u["effect"])
        return {"unit": int(u["unit"]), "effect": u["effect"], "specificity": u.get("specificity"), "labelled": True,
                "why": f"labelled with it ({len(labelled)} in the layer), effect {u['effect']:.2f} SD"}
    top = (res["variables"][j].get("top_units") or {}).get(layer) or []
    if not top:
        return None
    owner = res["layers"][layer]["units"][top[0]["unit"]].get("name") if res["layers"][layer].get("units") else None
    return {"unit": int(top[0]["unit"]), "effect": top[0]["effect"], "specificity": top[0].get("specificity"), "labelled": False,
            "why": f"none labelled with it; moved most by it ({top[0]['effect']:.2f} SD), labelled {owner or 'none'}"}


def main(args: Args):
    t_start = time.time()
    res, pix, game, asked, weights, out = check_inputs(args)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    agent = pix["model"].to(device)
    captured = {}
    agent.get_submodule(f"network.{args.layer}").register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.detach()))
    print(f"decoded-state video of {res['env_id']} ({game}), pixel agent at step {pix.get('global_step')}, "
          f"network.{args.layer}, {args.readout} read-out, {args.frames} frames -> {out}", flush=True)

    # 1. the agent's own play: the natural read-out's frames, the calibration's states, the display ranges
    emus = [Emulator(game, args.seed + i) for i in range(args.num_envs)]
    fit = rollout(emus, agent, captured, args.fit_steps, rng, args, device)

    # 2. which variables, and where the position-like ones put their object
    slots = {v["index"]: j for j, v in enumerate(res["variables"])}
    candidates = asked or [v["index"] for v in res["variables"]]
    found = {}
    prog = Progress("locate", len(candidates), "variables")
    for k, i in enumerate(candidates):
        values = np.unique(np.percentile(fit["ram"][:, i], np.linspace(5, 95, args.calib_values)).round().astype(int))
        kind = res["variables"][slots[i]].get("kind")
        found[i] = (None, "a bitmap (its bits draw blocks), not a position") if kind == "bitmap" else \
            locate(emus[0], fit["bases"], i, values, args.calib_bases)
        prog.update(k + 1)
    if not asked:
        score = lambda i: ((res["variables"][slots[i]].get("natural") or {}).get(args.layer) or {}).get("score")  # noqa: E731
        ranked = sorted(candidates, key=lambda i: -(score(i) if score(i) is not None else -np.inf))
        positions = [i for i in ranked if found[i][0] is not None]
        asked = (positions or ranked)[: args.max_vars]
    shown = []
    for i in asked:
        v = res["variables"][slots[i]]
        shown.append({"slot": slots[i], "index": i, "name": v["name"], "address": v.get("address"), "kind": v.get("kind"),
                      "role": v.get("role"), "categorical": bool(v.get("categorical")), "position": found[i][0],
                      "position_reason": found[i][1], "unit": unit_for(res, slots[i], args.layer)})
    for var in shown:
        print(f"[locate] {var['name']}: " + (f"{var['position']['axis']} = {var['position']['a']:.1f} + {var['position']['b']:.3f} "
              f"* value (r = {var['position']['r']:.2f})" if var["position"] else f"no marker: {var['position_reason']}"), flush=True)

    # 3. the read-outs, and the display ranges from the fitting frames
    readouts = fit_readouts(fit, shown, weights, res, args, device)
    F = torch.as_tensor(fit["X"], device=device)
    for var, (readout, _) in zip(shown, readouts):
        y, r = fit["ram"][:, var["index"]].astype(float), readout(F)
        lo, hi = np.percentile(np.concatenate([y, r]), [1, 99])
        var["series"] = {"range": (lo - 1, hi + 1) if hi - lo < 2 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))}
        if var["unit"] is not None:
            acts = fit["maps"][:, var["unit"]["unit"]]
            var["unit"]["display_max"] = float(max(np.percentile(acts, 99.5), 1e-6))
    del F

    # 4. the video's game: one more emulator, seeded after the fitting ones
    emu = Emulator(game, args.seed + args.num_envs)
    emu.reset(rng, args.noop_max)
    rgbs, feats, rams = [], [], []
    prog = Progress("play", args.frames, "frames")
    for t in range(args.frames):
        rgbs.append(emu.ale.getScreenRGB())
        rams.append(emu.ale.getRAM().copy())
        action = choose_actions(agent, emu.stack[None], [emu], rng, args.epsilon, device)[0]
        feats.append(captured["out"][0].float().cpu().numpy())
        emu.step(int(action))
        if emu.ale.game_over():
            emu.reset(rng, args.noop_max)
        prog.update(t + 1)
    feats, rams = np.stack(feats), np.stack(rams)
    V = torch.as_tensor(feats.reshape(len(feats), -1), device=device)
    for var, (readout, info) in zip(shown, readouts):
        true, read = rams[:, var["index"]].astype(float), readout(V)
        var["series"].update(true=true, read=read, unit=feats[:, var["unit"]["unit"]] if var["unit"] is not None else None)
        score = {"mae": float(np.abs(read - true).mean())}
        if var["categorical"] and args.readout == "natural":
            score["accuracy"] = float((read == true).mean())
        score["r2"] = float(1 - ((true - read) ** 2).sum() / ((true - true.mean()) ** 2).sum()) if np.ptp(true) > 0 else None
        var["readout"], var["video_score"] = info, score

    # 5. render and write (temp file + rename), then the sidecar
    step = pix.get("global_step")
    header = (f"{res['env_id']}  pixel agent, step {step:,}  |  network.{args.layer}  |  {args.readout} read-out" if step is not None
              else f"{res['env_id']}  pixel agent  |  network.{args.layer}  |  {args.readout} read-out",
              "dashed line: where the read-out puts the object; triangles: where the RAM puts it; traces: RAM (white), read-out")
    first = draw_frame(rgbs[0], shown, 0, header, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.mp4")
    codec = "vp09"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), 15, (first.shape[1], first.shape[0]))
    if not writer.isOpened():  # an OpenCV build without FFmpeg's VP9 encoder
        codec = "mp4v"
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), 15, (first.shape[1], first.shape[0]))
        print("warning: this OpenCV build has no VP9 encoder: the video is MPEG-4 Part 2, which most browsers do not play",
              flush=True)
    if not writer.isOpened():
        try:  # a full disk also keeps the writer from opening: say which it is
            with open(tmp, "wb") as f:
                f.write(bytes(4096))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise InputError(f"cannot write {out}: {e.strerror or e}")
        finally:
            tmp.unlink(missing_ok=True)
        raise InputError(f"this OpenCV build cannot write {out} (no MP4 encoder)")
    prog = Progress("render", args.frames, "frames")
    try:
        for t in range(args.frames):
            writer.write(cv2.cvtColor(first if t == 0 else draw_frame(rgbs[t], shown, t, header, args), cv2.COLOR_RGB2BGR))
            prog.update(t + 1)
        writer.release()
        cap = cv2.VideoCapture(str(tmp))  # OpenCV's writer says nothing of a full disk: the file must read back whole
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if frames != args.frames:
            raise InputError(f"cannot write {out}: the video written reads back with {frames} of {args.frames} frames "
                             f"(a full disk?)")
        os.replace(tmp, out)
    except OSError as e:
        raise InputError(f"cannot write {out}: {e.strerror or e}")
    finally:
        writer.release()
        if tmp.exists():
            tmp.unlink()
    sidecar = {
        "format": "memory-pixel-interp/probe-video", "version": 1, "video": out.name, "env_id": res["env_id"], "game": game,
        "pixel_checkpoint": str(args.pixel_checkpoint or res["inputs"]["pixel_checkpoint"]), "pixel_global_step": step,
        "probe_dir": str(args.probe_dir), "layer": args.layer, "module": f"network.{args.layer}", "readout": args.readout,
        "frames": args.frames, "fps": 15, "frame_size": [int(first.shape[1]), int(first.shape[0])], "codec": codec,
        "screen": [int(x) for x in emu.ale.getScreenDims()], "scale": args.scale,
        "fit": {"emulators": args.num_envs, "steps_per_emulator": args.fit_steps, "frames": int(len(fit["ram"])),
                "episodes": int(len(np.unique(fit["group"]))), "epsilon": args.epsilon,
                "video_seed": args.seed + args.num_envs, "calibration_states": len(fit["bases"])},
        "variables": [{"name": v["name"], "index": v["index"], "address": v["address"], "kind": v["kind"], "role": v["role"],
                       "categorical": v["categorical"], "unit": {k: x for k, x in (v["unit"] or {}).items()} or None,
                       "position": v["position"], "position_reason": v["position_reason"], "readout": v["readout"],
                       "video_score": v["video_score"]} for v in shown],
        "args": asdict(args), "seconds": round(time.time() - t_start, 1),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    json_path = out.with_suffix(".json")
    try:
        write_atomic(json_path, lambda f: f.write(json.dumps(sidecar, indent=1).encode()))
    except OSError as e:
        raise InputError(f"cannot write {json_path}: {e.strerror or e}")
    for v in shown:
        sc = v["video_score"]
        print(f"[video] {v['name']}: R^2 {sc['r2'] if sc['r2'] is None else round(sc['r2'], 3)}, mean |error| {sc['mae']:.2f}"
              + (f", accuracy {sc['accuracy']:.2f}" if "accuracy" in sc else ""), flush=True)
    print(f"[done] {out} ({out.stat().st_size / 1e6:.2f} MB, {args.frames} frames {first.shape[1]}x{first.shape[0]}, {codec}) "
          f"and {json_path.name} in {time.time() - t_start:.1f}s", flush=True)
    report = Path(__file__).with_name("probe_report.py")
    if args.report and out.parent.resolve() == Path(args.probe_dir).resolve() and report.exists():
        code = subprocess.run([sys.executable, str(report), "--out-dir", str(args.probe_dir)]).returncode
        if code != 0:  # its `error:` line (a full disk: 2) is already on stderr
            raise SystemExit(code if code > 0 else 1)


if __name__ == "__main__":
    cli = parse_args()
    check_ranges(cli, RANGES)
    try:
        main(cli)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
