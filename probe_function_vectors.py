"""Probe a pixel-trained Atari PPO agent for the game's RAM variables: function vectors, with evidence.

Inputs: a pixel-agent checkpoint, a memory-agent (RAM) checkpoint and the `ram_vars/<env-id>.json` both were
trained with (docs/FORMATS.md §1-§3); the memory agent is optional (step 1). The pixel agent may also be one trained
elsewhere with the same Nature CNN (a Stable-Baselines3 / RL Zoo zip, a CleanRL model file, a cleanba Flax msgpack
file, an atari-agents DQN / M-DQN file, a Sample Factory 2.x APPO checkpoint `.pth` with its per-pixel input normaliser:
FORMATS.md §6), its weights renamed onto the same modules, or cleanba's IMPALA CNN. The layers probed are read from the model (probed_layers): the Nature CNN's relu1-3 and relu_fc; the
IMPALA CNN's seq<s>.pool, seq<s>.res0, seq<s>.res1 (s = 0-2), relu and relu_fc; then the heads actor and critic.
Outputs in `--out-dir` (default `probe/<env-id>`): `activations.npz`, `results.json`, and (via probe_report.py) the
atlas, a self-contained `report.html`.

Steps (README §Probe has the details and the .npz keys):
1. Key variables: play the memory agent; for each selected byte, replace it by the byte's value from other
   visited states and measure how far the agent's action distribution moves (mean total variation, KL).
   Without a memory agent (--ranking pixel-policy): write each byte into the emulator on base states of the pixel
   agent's own play, as step 2 does, and measure how far the pixel agent's action distribution moves.
   Rank; keep the top K (plus `--include-vars`). results.json's `ranking` says which ranking was used.
2. Screens from set RAM values: play the pixel agent (noop starts, epsilon-random actions) and clone base
   states across its episodes. For every (base state, key variable): one control sample that pins the
   variable at its own value, and `--samples-per-var` samples that pin it at drawn values (re-applied with
   `setRAM` before every emulated frame), emulating the 4 agent steps (16 frames) the pixel agent's 4-frame
   stack needs with the actions the agent took there. The value actually present at the end is recorded;
   samples whose variable did not change are dropped.
3. Activations of every hooked layer for every sample (batched forward passes), all kept in memory for steps
   4-5; activations.npz gets every sample's fc / head outputs and conv channel means, and the conv maps of the
   unperturbed samples (`--save-maps all`: of every sample).
4. Per variable and layer: difference-of-means direction (function vector), ridge probe scored on held-out
   base states (R^2, or accuracy / weighted F1 for categorical variables) against shuffled labels, and a
   causal test: add the vector at that layer to control samples and measure how far downstream layers, the
   policy and the value move toward the samples where the variable really has the new value, against random
   directions of the same norm.
5. Every conv channel / fc unit labelled with the address whose intervention moves it most. Effect of
   variable v on unit u = mean over v's kept draws (changing at most `--unit-max-other-changed` other bytes)
   of |a_u(draw) - a_u(its control)|, averaged over positions for a conv channel, divided by the unit's
   natural spread (SD of a_u over the unperturbed screens, natural references and controls, across base
   states; averaged over positions; floored at 10% of the layer's median spread): `effect`, in SD units.
   Label = argmax_v effect among the variables whose effect is also large in absolute terms (the mean largest change
   over positions >= `--min-unit-peak-change` x the layer's typical peak activation on the unperturbed screens; none
   below `--min-unit-effect` SD, none for a dead unit, none for a "silent" one whose peak is below `--silent-fraction`
   x the typical peak); `specificity` = that
   effect / sum over all variables of the unit's effects (1 = only this variable moves it). The within-base
   correlation ratio eta and Pearson r are kept as secondary figures; they are not used for the label
   (screens are deterministic, so eta = 1 for any unit that responds at all to a two-valued byte).
6. Per variable, the mean |screen difference| it causes and the bounding box of that region.
7. Natural frames (AtariARI's protocol): every layer on the unedited 4-frame stacks of step 2's rollouts, labelled
   with the RAM at that step, split by episode, low-entropy variables dropped; ridge classifier (weighted F1,
   accuracy) or ridge R^2 on held-out episodes, against shuffled labels and the same network with random weights.
   Scores in results.json; no activation of these frames is saved, only, for the report's atlas, the --top-frames
   frames that activate each hidden unit most and the receptive field of its most active position.
8. Verdicts (results.json variables[].verdict): a score is decodable only when it beats its controls by a margin
   (DECODE_RULE: the best of its shuffled-label and random-network draws, by 0.05); steering beyond random directions
   (STEER_RULE). Label-picture agreement: for every labelled unit, whether the object its byte draws (where the screen
   changes when the byte is set, on that frame) lies in the box of its top natural frames (a position byte: the
   object's centre); reported for the position bytes and for all.
"""
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from multiprocessing import get_context
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
    pixel_checkpoint: str = ""
    """pixel agent checkpoint.pt (FORMATS.md §2, agent "pixel"), or an agent trained elsewhere with the Nature CNN
    (FORMATS.md §6): a Stable-Baselines3 PPO / A2C (CnnPolicy) or DQN zip, a CleanRL ppo_atari.py / dqn_atari.py
    state_dict, a cleanba PPO .cleanrl_model (Flax msgpack; Nature or IMPALA CNN: the IMPALA CNN's layers are probed
    as seq<s>.pool, seq<s>.res0-1, relu, relu_fc), an atari-agents DQN / M-DQN .gz, a Sample Factory 2.x APPO
    checkpoint_p0/checkpoint_*.pth (config.json above it names the game)"""
    ram_checkpoint: str = ""
    """memory agent checkpoint.pt (agent "ram"); its ram_indices: the ram vars file's `selected`, or part of it (an
    agent trained with --drop-bitmaps: the bytes it does not observe are probed too, after the ranked ones, unranked;
    with --top-k only through --include-vars), or bytes its checkpoint's own RAM-vars record describes (the file
    re-extracted since). Optional: without it the variables are ranked by how much writing each byte moves the pixel
    agent's policy (--ranking)"""
    ram_vars: str = ""
    """the RAM-variable file (FORMATS.md section 1) both agents were trained with. Default: `ram_vars/<env-id>.json`
    of the game the pixel checkpoint names (or --env-id); when there is no such file, extract_ram_vars.py writes one
    first, at its default budget, into `<out-dir>/ram_vars/` (about 2 min on one CPU core), and a later run with the
    same --out-dir reuses it"""
    env_id: str = ""
    """the game, for a run without --ram-vars whose pixel checkpoint does not name it (SB3 zips, CleanRL state_dicts,
    atari-agents files): a gymnasium id such as PongNoFrameskip-v4. Ignored with --ram-vars"""
    extract_frames: int = 0
    """without --ram-vars, when the game's RAM variables are extracted first: extract_ram_vars.py's --total-frames (0:
    its default budget)"""
    roles_from: str = ""
    """optional: another ram vars file of the same game (version >= 2, e.g. a fresh `extract_ram_vars.py --out-dir X`
    run) whose byte roles name the variables, for a --ram-vars file written before the extractor described bytes
    (version 1); which bytes are probed still comes from --ram-vars"""
    out_dir: str = ""
    """output folder; default probe/<env-id> (with / replaced by _)"""
    ranking: Literal["auto", "memory-agent", "pixel-policy"] = "auto"
    """step 1's ranking of the selected bytes: "memory-agent" = how far the memory agent's policy moves when the byte is
    replaced (needs --ram-checkpoint); "pixel-policy" = how far the pixel agent's policy moves when the byte is written
    into the emulator (no memory agent; --ram-checkpoint must then be left out); "auto" = the first with a memory agent,
    else the second"""
    top_k: int = 0
    """keep the K variables ranked highest by step 1 (0 = all selected bytes)"""
    include_vars: tuple[str, ...] = ()
    """selected RAM indices probed even if not in the top K: 72, 0x48 or ram[0x48] (index into getRAM())"""
    num_envs: int = 4
    """emulators played side by side (one batched forward pass per step) in the rollouts of steps 1 and 2"""
    importance_steps: int = 256
    """agent steps per emulator for step 1: the memory agent's (states on which bytes are ablated), or without one the
    pixel agent's (the rollout --importance-states base states are drawn from)"""
    importance_repeats: int = 4
    """ablation draws per byte (memory agent: each replaces the byte by the values of a random permutation of the
    states; pixel policy: per base state, values of the byte in other visited states, each one emulated sample)"""
    importance_states: int = 24
    """step 1 without a memory agent: base states (from a pixel-agent rollout of --importance-steps steps per emulator)
    on which every selected byte is written; each costs (1 + --importance-repeats) x 16 emulated frames per byte"""
    rollout_steps: int = 300
    """pixel-agent steps per emulator from which the base states are drawn"""
    num_base_states: int = 48
    """base states (cloned emulator states) drawn from the pixel agent's rollouts"""
    samples_per_var: int = 8
    """values drawn per variable per base state (each one emulated sample)"""
    epsilon: float = 0.1
    """probability of a uniformly random action in the rollouts (variety of base states)"""
    noop_max: int = 30
    """random number (1..noop_max) of NOOP frames after each reset"""
    test_fraction: float = 0.25
    """fraction of base states held out for scoring the probes and the causal test"""
    max_classes: int = 8
    """a variable is categorical (probe = classifier) if its kind is bitmap or it has <= this many distinct values"""
    unit_max_other_changed: int = 2
    """unit labels (step 5) use only draws that changed at most this many other RAM bytes: writing some bytes
    (e.g. a game-mode byte) rewrites dozens of others and the whole screen, which is not that byte's own effect"""
    min_unit_effect: float = 0.1
    """step 5: a unit whose largest effect is below this many SDs of its natural spread is labelled none"""
    min_unit_peak_change: float = 0.1
    """step 5: a label also needs an effect large in absolute terms: the variable's draws must move the unit, at its
    most changed position, by at least this fraction of the layer's typical peak (the median over its units of their
    peak activation on the unperturbed screens); else no label ("weak")"""
    silent_fraction: float = 0.05
    """step 5: a unit whose peak activation on the unperturbed screens is below this fraction of the layer's typical
    peak is "silent": nearly off on the frames of play, so it gets no label however large its effect in SDs"""
    control_draws: int = 3
    """shuffled-label probe fits per variable and layer (the control)"""
    causal_pairs: int = 48
    """(control, target) pairs per variable for the causal test, from held-out base states"""
    random_directions: int = 5
    """random directions of the same norm per pair in the causal test"""
    batch_size: int = 256
    """samples per emulation batch and forward pass"""
    num_workers: int = 1
    """emulator processes for the samples (1 = in this process; ale_py holds the GIL, so threads do not help)"""
    conv_dtype: Literal["float16", "float32"] = "float16"
    """dtype of the conv feature maps in activations.npz"""
    save_maps: Literal["reference", "all"] = "reference"
    """conv maps (act_<layer> of every conv-map layer: act_relu1..3 for the Nature CNN) and obs_last written to
    activations.npz: "reference" = only the unperturbed samples (natural references and controls, rows map_rows),
    every sample's per-channel spatial mean in act_<layer>_mean
    (at the default budget: 248.3 MB on the shipped 10M Breakout pair, 245.6 MB on the 500k pair, with step 7's top
    frames; README's probe command); "all" = every sample's maps (897 MB on the 500k pair before the top frames,
    which add 16.6 MB). The analysis uses all of them either way"""
    seed: int = 1
    """seed of numpy, torch and the emulators"""
    cuda: bool = True
    """use CUDA when it is available"""
    torch_threads: int = 0
    """CPU threads for torch (0: torch's default, one per core). The analysis's fits run on them: the README gives the
    default run's time with 1 and with 2 threads. Scores can differ in the second decimal between thread counts (by up
    to 0.04 on the shipped 10M pair, 1 against 2 threads: the fits' sums are ordered differently)"""
    report: bool = True
    """run probe_report.py on the outputs (the atlas, report.html)"""
    natural: bool = True
    """step 7: probe every layer on the unedited frames of step 2's rollouts as well (AtariARI's protocol)"""
    natural_min_entropy: float = 0.6
    """step 7: variables whose value distribution on those frames has less entropy (bits) are dropped, as AtariARI"""
    random_network_seed: int = 0
    """step 7: torch seed of the first random-weights baseline (the agent's network freshly initialised: the Nature CNN
    by its own layer_init, the IMPALA CNN by PyTorch's default init)"""
    random_networks: int = 3
    """step 7: random-weights baselines (seeds random_network_seed, +1, ...): their mean is the random-network score;
    a score counts as decodable only when it beats the best of them (and of the shuffled-label fits) by 0.05"""
    top_frames: int = 4
    """step 7: natural frames kept per hidden unit / conv channel for the report's atlas: the ones that activate it
    most, with the receptive field of the most active position (0 = none)"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {
    "top_k": "[0, inf)", "extract_frames": "[0, inf)", "num_envs": "[1, inf)", "importance_steps": "[1, inf)", "importance_repeats": "[1, inf)",
    "importance_states": "[1, inf)", "rollout_steps": "[8, inf)", "num_base_states": "[2, inf)", "samples_per_var": "[1, inf)",
    "epsilon": "[0, 1]",
    "noop_max": "[0, inf)", "test_fraction": "(0, 1)", "max_classes": "[0, inf)", "unit_max_other_changed": "[0, 127]",
    "min_unit_effect": "[0, inf)", "control_draws": "[1, inf)", "causal_pairs": "[1, inf)",
    "random_directions": "[1, inf)", "batch_size": "[1, inf)", "num_workers": "[1, inf)", "seed": "[0, 2147483647]",
    "torch_threads": "[0, inf)", "natural_min_entropy": "[0, 8]", "random_network_seed": "[0, 2147483647]",
    "top_frames": "[0, inf)", "min_unit_peak_change": "[0, inf)", "silent_fraction": "[0, 1]", "random_networks": "[1, 1000]",
}


# The layers hooked are read from the model (probed_layers): its hidden layers in forward order, then these heads,
# which are probed but neither labelled nor steered.
HEADS = ("actor", "critic")
RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # relative to trace(K)/n, chosen by leave-base-states-out CV


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


# ---------------------------------------------------------------- inputs
def rom_name(env_id: str) -> str:
    """ALE ROM name of a gymnasium ALE id, from ale_py's own registration ('BreakoutNoFrameskip-v4' -> 'breakout')."""
    gym.register_envs(ale_py)
    spec = gym.registry.get(env_id)
    game = spec.kwargs.get("game") if spec is not None and "ale_py" in str(spec.entry_point) else None
    if game is None:
        raise InputError(f"unknown env id '{env_id}' (not an ALE gymnasium id such as BreakoutNoFrameskip-v4 or ALE/Pong-v5)")
    return game


def parse_var(text: str) -> int:
    """'72', '0x48' or 'ram[0x48]' -> RAM index 0..127."""
    m = re.fullmatch(r"\s*(?:ram\[)?\s*(0x[0-9a-fA-F]+|\d+)\s*\]?\s*", text)
    if not m or not 0 <= int(m.group(1), 0) <= 127:
        raise InputError(f"--include-vars: {text!r} is not a RAM index 0..127 (e.g. 72, 0x48, ram[0x48])")
    return int(m.group(1), 0)


def load_ram_vars(path: str) -> dict:
    if not path:
        raise InputError("--ram-vars is required")
    try:
        rv = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"ram vars file {path} does not exist")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read ram vars file {path}: {e}")
    if not isinstance(rv, dict) or rv.get("format") != "memory-pixel-interp/ram-vars":
        raise InputError(f"{path} is not a ram vars file (format != memory-pixel-interp/ram-vars)")
    sel, recs = rv.get("selected"), rv.get("bytes")
    if not isinstance(recs, list) or len(recs) != 128 or not all(isinstance(r, dict) for r in recs):
        raise InputError(f"{path}: 'bytes' must hold 128 records")
    if not isinstance(sel, list) or not sel or not all(isinstance(i, int) and 0 <= i < 128 for i in sel):
        raise InputError(f"{path}: 'selected' must be a non-empty list of RAM indices 0..127")
    for key in ("min", "max", "n_distinct", "kind"):
        if any(key not in recs[i] for i in sel):
            raise InputError(f"{path}: a selected byte's record lacks {key!r}")
    if not isinstance(rv.get("env_id"), str):
        raise InputError(f"{path}: no env_id")
    return rv


class ImpalaResidualBlock(nn.Module):
    """x + conv1(relu(conv0(relu(x)))): the IMPALA CNN's residual block (Espeholt et al. 2018, Fig. 3), 3x3 convs with
    padding 1 (Flax's "SAME"). (B, C, H, W) float32 -> the same shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.relu0, self.conv0 = nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        self.relu1, self.conv1 = nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv1(self.relu1(self.conv0(self.relu0(x))))


class ImpalaConvSequence(nn.Module):
    """3x3 conv (padding 1), 3x3 max pool of stride 2, two residual blocks. The pool pads as XLA's "SAME" (Flax's
    nn.max_pool(padding="SAME")): total = max((ceil(n / 2) - 1) * 2 + 3 - n, 0) padded with -inf, total // 2 before
    and the rest after, which torch's symmetric MaxPool2d padding does not reproduce (84 -> 42 pads 0 before, 1 after).
    (B, in_channels, H, W) -> (B, channels, ceil(H / 2), ceil(W / 2))."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.res0, self.res1 = ImpalaResidualBlock(channels), ImpalaResidualBlock(channels)

    @staticmethod
    def pool_padding(n: int) -> tuple[int, int]:
        """(before, after): the -inf pixels the pool pads a side of n pixels with (XLA's "SAME")."""
        total = max((-(-n // 2) - 1) * 2 + 3 - n, 0)
        return total // 2, total - total // 2

    def forward(self, x):
        x = self.conv(x)
        pads = [*self.pool_padding(x.shape[3]), *self.pool_padding(x.shape[2])]  # F.pad takes the last dimension first
        return self.res1(self.res0(self.pool(nn.functional.pad(x, pads, value=float("-inf")))))


class ImpalaAgent(Agent):
    """The IMPALA CNN (Espeholt et al. 2018) as CleanRL's cleanba lays it out (cleanba_ppo_envpool_impala_atari_wrapper.py):
    network = seq0-2 (ImpalaConvSequence of 16, 32, 32 channels: 84 -> 42 -> 21 -> 11), relu, flatten (32 * 11 * 11),
    fc (256), relu_fc; actor (logits) and critic on the 256 features. Agent's methods (hidden, get_value,
    get_action_and_value) and trunk_dtype; Agent.__init__ is skipped, so nothing of the Nature CNN is built. Only agents
    trained elsewhere use it (read_cleanba_msgpack loads every weight, so the init is PyTorch's default)."""

    def __init__(self, n_actions: int, in_channels: int = 4):
        nn.Module.__init__(self)
        seqs = [(f"seq{i}", ImpalaConvSequence(c_in, c)) for i, (c_in, c) in enumerate(zip((in_channels, 16, 32), (16, 32, 32)))]
        self.network = nn.Sequential(OrderedDict([
            *seqs, ("relu", nn.ReLU()), ("flatten", nn.Flatten()), ("fc", nn.Linear(32 * 11 * 11, 256)), ("relu_fc", nn.ReLU()),
        ]))
        self.actor = nn.Linear(256, n_actions)
        self.critic = nn.Linear(256, 1)
        self.trunk_dtype = None


class SampleFactoryInputNorm(nn.Module):
    """Sample Factory's input normalisation (normalize_input=True: RunningMeanStdInPlace of
    sample_factory/algo/utils/running_mean_std.py), on frames already divided by 255 (its obs_scale): (x - mean) *
    inv_std, clamped to [-5, 5]; mean and inv_std = 1 / sqrt(running_var + 1e-5) are per-pixel (in_channels, 84, 84)
    float32 buffers, computed by read_sample_factory_pth from its float64 running statistics as SF computes them.
    (B, C, 84, 84) float32 -> the same shape."""

    def __init__(self, shape=(4, 84, 84)):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("inv_std", torch.ones(shape))

    def forward(self, x):
        return ((x - self.mean) * self.inv_std).clamp(-5.0, 5.0)


class SampleFactoryAgent(Agent):
    """Sample Factory 2.x's Atari actor-critic (ActorCriticSharedWeights: the convnet_atari encoder, whose convs have
    the Nature CNN's shapes, fc 512, ReLU; identity core and decoder) trained with normalize_input: Agent with
    network = norm (SampleFactoryInputNorm), then Agent's conv1-3, relu1-3, flatten, fc, relu_fc unchanged; actor =
    SF's action_parameterization.distribution_linear (logits), critic = its critic_linear. Agent's methods, hooks and
    trunk_dtype; only agents trained elsewhere use it (read_sample_factory_pth loads every weight and buffer)."""

    def __init__(self, n_actions: int, in_channels: int = 4):
        super().__init__(n_actions, in_channels)
        self.network = nn.Sequential(OrderedDict([("norm", SampleFactoryInputNorm((in_channels, 84, 84))),
                                                  *self.network.named_children()]))

def trained_game_mismatch(source, game):
    """An agent trained elsewhere whose file names its game (cleanba's args: `trained_on`, an EnvPool id such as
    'Breakout-v5'), played or probed on another game (`game`: an ALE ROM name such as 'breakout' or 'ms_pacman'): the
    one-line reason, else None (same game, or a file that does not say). Names are compared in lower case without the
    version, 'NoFrameskip' and underscores."""
    trained = source.get("trained_on") if isinstance(source, dict) else None
    if not isinstance(trained, str) or not trained:
        return None
    return None if game_key(trained) == game.replace("_", "") else f"the agent was trained on {trained}, not on {game}"


def game_key(name: str) -> str:
    """A game's name as an id or ROM name gives it, in lower case without the namespace, the version, 'NoFrameskip'
    and anything but letters and digits: 'ALE/MsPacman-v5', 'MsPacmanNoFrameskip-v4' and 'ms_pacman' all give
    'mspacman'."""
    return re.sub(r"[^a-z0-9]", "", name.split("/")[-1].split("-v")[0].lower().replace("noframeskip", ""))


def read_external_agent(path):
    """An agent trained by another library, as this project's Agent: its weights renamed onto Agent's modules by the
    library's documented layer layout (docs/FORMATS.md section 6). Accepted: a Stable-Baselines3 zip (`model.save`,
    read by read_sb3_zip); CleanRL cleanba's Flax msgpack `.cleanrl_model` (Nature or IMPALA CNN, read by
    read_cleanba_msgpack); an atari-agents DQN / M-DQN `model_<step>.gz` (read_atari_agents_gz); a Sample Factory
    2.x APPO checkpoint `.pth` (read_sample_factory_pth); a CleanRL state_dict
    (`.cleanrl_model`, `torch.save(model.state_dict())`) of `ppo_atari.py`'s
    Agent (network.0/2/4/7 = conv1, conv2, conv3, fc; actor; critic) or of `dqn_atari.py`'s QNetwork (network.0/2/4/7,
    network.9 = the Q-value head). Weights are read with torch.load(weights_only=True): nothing is unpickled.
    Returns None when `path` is none of these kinds of file (this project's checkpoint.pt, i.e. a dict with "format",
    or a file torch cannot read), else {"source": {library, algorithm, file, policy, preprocessing ("sb3" or "cleanrl":
    the observation pipeline it was trained on), pipeline (the same in words), actor ("logits" or "Q-values"), critic
    (bool), layer_map {Agent module: theirs}}, "model_kwargs": {"n_actions", "in_channels": 4}, "state_dict" (Agent's
    names, float32; the critic all zeros when the agent has none), "global_step" (SB3's num_timesteps; Sample
    Factory's env_steps / its env_frameskip, agent steps; None for CleanRL), "architecture": "nature-cnn" (Agent), "impala-cnn" (ImpalaAgent, cleanba only) or
    "sample-factory-cnn" (SampleFactoryAgent)}. A torch file holding pickled objects other than numpy scalars is refused.
    Raises ValueError, one line naming what was found, for a file of these kinds that does not fit."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return None
    if head and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):  # a msgpack map (a pickle starts 0x80, a zip "PK")
        return read_cleanba_msgpack(path)
    if head == b"\x1f\x8b":  # gzip
        return read_atari_agents_gz(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if {"data", "policy.pth"} <= set(names):
                return read_sb3_zip(path, z)
        if not any(n.endswith("data.pkl") for n in names):  # data.pkl: a torch.save archive, read below
            raise ValueError(f"'{path}' is a zip archive of {', '.join(names[:5])}: not a Stable-Baselines3 model "
                             "(data + policy.pth)")
    scalar = (getattr(np, "_core", None) or np.core).multiarray.scalar  # numpy scalars (numbers) load, nothing else
    numbers = [np.dtype, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               *{type(np.dtype(c)) for c in "?bhilqBHILQefd"}]
    try:
        with torch.serialization.safe_globals(numbers):
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if refused and zipfile.is_zipfile(path):
            raise ValueError(f"'{path}' is a torch file holding a pickled object ({refused.group(1)}): it is not read "
                             "(files from elsewhere are read with torch.load(weights_only=True), never unpickled)")
        return None
    if isinstance(sd, dict) and "format" in sd:
        return None
    if (isinstance(sd, dict) and isinstance(sd.get("model"), dict)
            and any(isinstance(k, str) and k.startswith(("action_parameterization.", "critic_linear.")) for k in sd["model"])):
        return read_sample_factory_pth(path, sd)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        found = f"a dict of {', '.join(map(str, list(sd)[:6]))}" if isinstance(sd, dict) else f"a {type(sd).__name__}"
        raise ValueError(f"'{path}' holds {found}: not a memory-pixel-interp checkpoint, a Stable-Baselines3 zip or a "
                         "CleanRL state_dict")
    dqn = "network.9.weight" in sd
    layout = {"network.conv1": "network.0", "network.conv2": "network.2", "network.conv3": "network.4",
              "network.fc": "network.7", **({"actor": "network.9"} if dqn else {"actor": "actor", "critic": "critic"})}
    policy = "dqn_atari.py QNetwork" if dqn else "ppo_atari.py Agent"
    state_dict, n_actions = rename_external_weights(sd, layout, (), f"'{path}' (a state_dict, read as CleanRL's {policy})")
    source = {"library": "CleanRL", "algorithm": "DQN" if dqn else "PPO", "file": "state_dict", "policy": policy,
              "preprocessing": "cleanrl", "pipeline": "CleanRL make_env: SB3's NoopResetEnv(30), MaxAndSkipEnv(4), "
              "EpisodicLifeEnv, FireResetEnv, ClipRewardEnv + gymnasium 0.29's ResizeObservation(84), GrayScaleObservation, "
              "FrameStack(4)", "actor": "Q-values" if dqn else "logits", "critic": not dqn, "layer_map": layout}
    return {"source": source, "architecture": "nature-cnn", "model_kwargs": {"n_actions": n_actions, "in_channels": 4},
            "state_dict": state_dict, "global_step": None}


def read_cleanba_msgpack(path):
    """CleanRL's cleanba PPO file: the `.cleanrl_model` that cleanba_ppo_envpool_impala_atari_wrapper[_naturecnn].py
    writes with flax.serialization.to_bytes([vars(args), [network_params, actor_params, critic_params]]) (the Atari-57
    models on the Hugging Face Hub, cleanrl/<Game>-v5-cleanba_ppo_envpool_impala_atari_wrapper[_naturecnn]-seed<N>).
    Flax's format is msgpack: a list is a map {"0": .., "1": ..}, an array the msgpack extension type 1 holding msgpack
    (shape, dtype name, C-order bytes). It is read with the msgpack package alone (no Flax; nothing is unpickled), an
    optional dependency: without it one ValueError names it. Network: the Nature CNN (Conv_0-2, Dense_0 of 512) or the
    IMPALA CNN (ConvSequence_0-2, each Conv_0 and ResidualBlock_0-1 of Conv_0-1; Dense_0 of 256), on NCHW uint8 stacks
    it transposes to NHWC and divides by 255; Actor Dense_0 = logits, Critic Dense_0 = value. Flax's conv kernel
    (kh, kw, in, out) becomes torch's (out, in, kh, kw), a Dense kernel (in, out) torch's (out, in), and the Dense after
    the flatten has its inputs reordered from Flax's (H, W, C) flattening to torch's (C, H, W).
    Returns and raises as read_external_agent; "architecture" is "nature-cnn" (Agent) or "impala-cnn" (ImpalaAgent)."""
    try:
        import msgpack
    except ImportError:
        raise ValueError(f"'{path}' is a Flax msgpack file (CleanRL cleanba's .cleanrl_model): reading it needs the "
                         "msgpack package (pip install msgpack)")

    def array(code, data):  # Flax's _MsgpackExtType: 1 an ndarray, 3 a numpy scalar, both (shape, dtype name, bytes)
        if code not in (1, 3):
            raise ValueError(f"msgpack extension type {code}")
        shape, dtype, buffer = msgpack.unpackb(data, raw=False)
        return np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape).copy()

    try:
        with open(path, "rb") as f:
            tree = msgpack.unpackb(f.read(), ext_hook=array, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack and numpy raise many types on a damaged file
        raise ValueError(f"'{path}' starts as msgpack (Flax's format) but cannot be read: {type(e).__name__}: {str(e)[:120]}")
    parts = tree.get("1") if isinstance(tree, dict) else None
    if not (isinstance(parts, dict) and set(parts) == {"0", "1", "2"} and all(isinstance(p, dict) for p in parts.values())):
        found = ", ".join(map(str, list(tree)[:6])) if isinstance(tree, dict) else type(tree).__name__
        raise ValueError(f"'{path}' is msgpack (Flax's format) holding {found}: not cleanba's [args, [network_params, "
                         "actor_params, critic_params]]")
    args = tree.get("0") if isinstance(tree.get("0"), dict) else {}
    sd = {}

    def flatten(prefix, node):  # {"Conv_0": {"kernel": a, "bias": b}} -> {"<prefix>.Conv_0.weight": tensor, ...}
        if not isinstance(node, dict):
            raise ValueError(f"'{path}': {prefix}'s parameters are a {type(node).__name__}, not a dict of layers")
        for k, v in node.items():
            if isinstance(v, dict):
                flatten(f"{prefix}.{k}", v)
            elif isinstance(v, np.ndarray) and v.dtype.kind == "f":
                sd[f"{prefix}.{k}".replace(".kernel", ".weight")] = v
            else:
                raise ValueError(f"'{path}': {prefix}.{k} is a {type(v).__name__} {getattr(v, 'dtype', '')}, not a float array")

    for key, name in (("0", "network"), ("1", "actor"), ("2", "critic")):
        flatten(name, parts[key].get("params", parts[key]))
    impala = any(k.startswith("network.ConvSequence_") for k in sd)
    spatial = (11, 11, 32) if impala else (7, 7, 64)  # the last conv's (H, W, C) before Flax's flatten
    for k, v in sd.items():
        if v.ndim == 4:
            sd[k] = v.transpose(3, 2, 0, 1)
        elif v.ndim == 2 and k == "network.Dense_0.weight" and v.shape[0] == int(np.prod(spatial)):
            sd[k] = v.reshape(*spatial, -1).transpose(2, 0, 1, 3).reshape(v.shape[0], -1).T
        elif v.ndim == 2:
            sd[k] = v.T
        sd[k] = torch.from_numpy(np.ascontiguousarray(sd[k]))
    if impala:
        layout = {f"network.seq{s}.conv": f"network.ConvSequence_{s}.Conv_0" for s in range(3)}
        layout.update({f"network.seq{s}.res{r}.conv{c}": f"network.ConvSequence_{s}.ResidualBlock_{r}.Conv_{c}"
                       for s in range(3) for r in range(2) for c in range(2)})
        layout = dict(sorted(layout.items()))
    else:
        layout = {"network.conv1": "network.Conv_0", "network.conv2": "network.Conv_1", "network.conv3": "network.Conv_2"}
    layout.update({"network.fc": "network.Dense_0", "actor": "actor.Dense_0", "critic": "critic.Dense_0"})
    exp_name = str(args.get("exp_name", "cleanba"))
    policy = f"{exp_name} ({'IMPALA' if impala else 'Nature'} CNN)"
    what = f"'{path}' (CleanRL cleanba's Flax parameters, {policy})"
    state_dict, n_actions = rename_external_weights(sd, layout, (), what, ImpalaAgent if impala else Agent)
    if exp_name.startswith("cleanba_ppo_envpool_impala_atari_wrapper"):  # its make_env's envpool.make settings
        pipeline = ("EnvPool Atari (cleanba's make_env): 84x84 gray, 4-frame stack, frame skip 4 with the max of the last "
                    "2 frames, up to 30 no-op starts, fire reset, episodic life, reward clipping, no sticky actions, "
                    "minimal action set, 27000 steps per episode")
    else:
        pipeline = f"EnvPool Atari with the settings of cleanba's {exp_name}.py (not checked here)"
    source = {"library": "CleanRL (cleanba)", "algorithm": "PPO", "file": "Flax msgpack (flax.serialization.to_bytes)",
              "policy": policy, "preprocessing": "envpool", "pipeline": pipeline, "actor": "logits", "critic": True,
              "layer_map": layout, "trained_on": args.get("env_id")}
    return {"source": source, "architecture": "impala-cnn" if impala else "nature-cnn",
            "model_kwargs": {"n_actions": n_actions, "in_channels": 4}, "state_dict": state_dict, "global_step": None}


def read_atari_agents_gz(path):
    """A floringogianu/atari-agents checkpoint (`<ALGO>/<Game>/<seed>/model_<step>.gz`): gzip of a torch.save'd dict
    whose "estimator_state" is the state_dict of their play.py AtariNet (the Nature CNN: _AtariNet__features.0/2/4 =
    conv1-3, _AtariNet__head.0 = fc, _AtariNet__head.2 = the Q-value head). DQN and M-DQN (`DQN_modern`,
    `MDQN_modern`, `DQN_classic_adam`) fit; C51 (a distributional head and _AtariNet__support) is refused. Decompressed
    in memory (at most 512 MiB) and read with torch.load(weights_only=True): nothing is unpickled beyond tensors and
    plain containers. Returns and raises as read_external_agent."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(512 * 2**20 + 1)
        if len(data) > 512 * 2**20:
            raise ValueError("more than 512 MiB once decompressed")
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # gzip, zlib and torch raise many types
        raise ValueError(f"'{path}' is gzip-compressed but not a torch file readable without unpickling objects "
                         f"(weights_only): {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
    sd = ckpt.get("estimator_state") if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        found = f"a dict of {', '.join(map(str, list(ckpt)[:6]))}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise ValueError(f"'{path}' is a gzip-compressed torch file holding {found}: not an atari-agents checkpoint "
                         "(estimator_state)")
    what = f"'{path}' (an atari-agents checkpoint, read as play.py's AtariNet)"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ValueError(f"{what}: its estimator_state holds more than tensors under names (not a state_dict)")
    if "_AtariNet__support" in sd:
        raise ValueError(f"{what} is C51 (distributional: Q-values are an expectation over 51 atoms), not a linear "
                         "Q-value head: only DQN and M-DQN import")
    layout = {"network.conv1": "_AtariNet__features.0", "network.conv2": "_AtariNet__features.2",
              "network.conv3": "_AtariNet__features.4", "network.fc": "_AtariNet__head.0", "actor": "_AtariNet__head.2"}
    state_dict, n_actions = rename_external_weights(sd, layout, (), what)
    modern = "_modern" in str(path)  # their play.py picks the protocol from the folder name the same way
    pipeline = ("atari-agents' ALEModern (Dopamine / Machado et al. 2017): sticky actions 0.25, no no-op starts, no "
                "fire reset, game over only at the last life, frame skip 4 with the max of the last 2 frames' 84x84 "
                "INTER_AREA gray images, 4-frame stack zero-filled at reset, minimal action set" if modern else
                "atari-agents' ALEClassic (Mnih et al. 2015): no sticky actions, up to 29 no-op starts, a lost life ends "
                "the episode in training, otherwise as ALEModern (the protocol is read from the folder name: "
                "'_modern' is absent from this path)")
    mdqn = any(re.fullmatch(r"M-?DQN(_\w*)?", part, re.I) for part in os.path.normpath(str(path)).split(os.sep))
    source = {"library": "atari-agents", "algorithm": "M-DQN" if mdqn else "DQN", "file": "gzip of torch.save "
              "(estimator_state)", "policy": "AtariNet", "preprocessing":
              "atari-agents-modern" if modern else "atari-agents-classic", "pipeline": pipeline, "actor": "Q-values",
              "critic": False, "layer_map": layout}
    return {"source": source, "architecture": "nature-cnn", "model_kwargs": {"n_actions": n_actions, "in_channels": 4},
            "state_dict": state_dict, "global_step": None}


def read_sample_factory_pth(path, ckpt):
    """A Sample Factory 2.x checkpoint (`<experiment>/checkpoint_p0/checkpoint_<step>_<env_steps>.pth` or `best_*.pth`,
    as on the Hugging Face Hub, e.g. edbeeching/atari_2B_atari_pong_1111): torch.save of its Learner's dict {train_step,
    env_steps, best_performance, model, optimizer, curr_lr} (sample_factory/algo/learning/learner.py,
    _get_checkpoint_dict), here `ckpt` as read_external_agent read it (weights_only). "model" is the state_dict of
    ActorCriticSharedWeights: encoder.encoders.obs.enc.conv_head.0/2/4 = conv1-3 (convnet_atari), .mlp_layers.0 = fc,
    action_parameterization.distribution_linear = actor (logits), critic_linear = critic; obs_normalizer.* (per-pixel
    running mean and variance, normalize_input) becomes SampleFactoryAgent's network.norm, returns_normalizer.*
    (normalize_returns) is reported, not applied: the critic gives SF's normalised value, as SF's forward pass does.
    The experiment's config.json (cfg.json in older uploads), in the checkpoint's folder or the one above, names the
    game (env "atari_pong" = PongNoFrameskip-v4, sf_examples/atari/atari_utils.py ATARI_ENVS) and the training
    pipeline (env_agents: sf_examples/envpool, EnvPool's <Game>-v5; else sf_examples/atari's gym wrappers, CleanRL's
    make_env); it is optional. Refused with one ValueError line: a recurrent core (use_rnn), separate actor and critic
    encoders, another nonlinearity than ReLU, another obs_scale / obs_subtract_mean than 255 / 0 (or no number), an
    env_frameskip that is no positive integer, normaliser statistics that are not one number (returns) or (4, 84, 84)
    (pixels), other layer shapes. Returns as read_external_agent; "architecture" is "sample-factory-cnn"
    (SampleFactoryAgent) with normalize_input, else "nature-cnn" (Agent); "global_step" counts agent steps: SF's
    env_steps counts emulator frames when summaries_use_frameskip (its default, and sf_examples/atari's) and is then
    divided by env_frameskip (default 4; learner.py multiplies each batch's size by the env's frameskip)."""
    sd = ckpt["model"]
    what = f"'{path}' (a Sample Factory checkpoint)"
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ValueError(f"{what}: its model holds more than tensors under names (not a state_dict)")
    cfg, cfg_path = {}, None
    for folder in (os.path.dirname(os.path.abspath(path)), os.path.dirname(os.path.dirname(os.path.abspath(path)))):
        for name in ("config.json", "cfg.json"):
            if cfg_path is None and os.path.isfile(os.path.join(folder, name)):
                cfg_path = os.path.join(folder, name)
    if cfg_path is not None:
        try:
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{what}: its config '{cfg_path}' cannot be read: {type(e).__name__}")
        if not isinstance(cfg, dict):
            raise ValueError(f"{what}: its config '{cfg_path}' is no JSON object")
    if cfg.get("use_rnn") or any(k.startswith("core.core.") for k in sd):
        raise ValueError(f"{what} has a recurrent core (use_rnn=True): this Agent is feed-forward")
    if any(k.startswith(("actor_encoder.", "critic_encoder.")) for k in sd):
        raise ValueError(f"{what} has separate actor and critic encoders (actor_critic_share_weights=False): this Agent "
                         "has one trunk")
    if cfg.get("nonlinearity", "relu") != "relu":
        raise ValueError(f"{what} uses the nonlinearity {cfg['nonlinearity']}: this Agent's is ReLU")
    pixels = [cfg.get("obs_scale", 255.0), cfg.get("obs_subtract_mean", 0.0)]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in pixels) or pixels != [255.0, 0.0]:
        raise ValueError(f"{what} scales pixels by obs_scale {cfg.get('obs_scale')} after subtracting obs_subtract_mean "
                         f"{cfg.get('obs_subtract_mean')}: this Agent divides them by 255")
    enc = "encoder.encoders.obs.enc."
    layout = {"network.conv1": enc + "conv_head.0", "network.conv2": enc + "conv_head.2", "network.conv3": enc + "conv_head.4",
              "network.fc": enc + "mlp_layers.0", "actor": "action_parameterization.distribution_linear",
              "critic": "critic_linear"}
    state_dict, n_actions = rename_external_weights(sd, layout, ("obs_normalizer.", "returns_normalizer."), what)
    norm = "obs_normalizer.running_mean_std.running_mean_std.obs."
    normalized = norm + "running_mean" in sd
    if normalized:
        mean, var = sd[norm + "running_mean"], sd.get(norm + "running_var")
        if tuple(mean.shape) != (4, 84, 84) or var is None or tuple(var.shape) != (4, 84, 84):
            raise ValueError(f"{what}: its input normaliser holds {tuple(mean.shape)} statistics, not per-pixel (4, 84, 84)")
        state_dict["network.norm.mean"] = mean.float()  # as RunningMeanStdInPlace.forward: float32 mu, 1 / sqrt(var + eps)
        state_dict["network.norm.inv_std"] = 1 / torch.sqrt(var.float() + 1e-5)
    value_scale = None
    if "returns_normalizer.running_mean" in sd:
        mu, var = sd["returns_normalizer.running_mean"], sd.get("returns_normalizer.running_var")
        if var is None or mu.numel() != 1 or var.numel() != 1:
            raise ValueError(f"{what}: its returns normaliser holds a running_mean of {mu.numel()} values and "
                             f"{'no running_var' if var is None else f'a running_var of {var.numel()}'}, not one number each")
        mu, var = float(mu.flatten()[0]), float(var.flatten()[0])
        value_scale = {"mean": mu, "std": (var + 1e-5) ** 0.5, "to_returns": "clamp(critic, -5, 5) * std + mean "
                       "(normalize_returns: SF's learner denormalises its values so)"}
    env = str(cfg.get("env", ""))
    game = env[len("atari_"):] if env.startswith("atari_") else None
    game = {"asteroid": "asteroids", "kongfumaster": "kungfumaster", "montezuma": "montezumarevenge",
            "privateye": "privateeye"}.get(game, game)  # SF's names that are not the ROM's (ATARI_ENVS)
    trained_on = next((i for i in gym.registry if i.endswith("NoFrameskip-v4") and i[:-len("NoFrameskip-v4")].lower() == game),
                      env or None)
    envpool = "env_agents" in cfg  # only sf_examples/envpool/atari adds --env_agents
    if envpool and trained_on and trained_on.endswith("NoFrameskip-v4"):
        trained_on = trained_on.replace("NoFrameskip-v4", "-v5")
    skip = cfg.get("env_frameskip", 4)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 1:
        raise ValueError(f"{what}: its config's env_frameskip is {skip!r}, not a positive integer")
    if envpool:
        pipeline = (f"EnvPool Atari (Sample Factory's sf_examples/envpool/atari): 84x84 gray, 4-frame stack, frame skip {skip} "
                    "with the max of the last 2 frames, up to 30 no-op starts, fire reset, episodic life, reward clipping, "
                    "no sticky actions, minimal action set")
    else:
        pipeline = (f"Sample Factory's sf_examples/atari make_atari_env{'' if cfg else ' (assumed: no config.json beside it)'}"
                    f": NoopResetEnv(30), MaxAndSkipEnv({skip}), EpisodicLifeEnv, FireResetEnv, ClipRewardEnv (SB3's "
                    "wrappers, copied), gymnasium's ResizeObservation(84), GrayScaleObservation, FrameStack(4): CleanRL's make_env")
    policy = "ActorCriticSharedWeights (convnet_atari" + (", normalize_input)" if normalized else ")")
    source = {"library": "Sample Factory", "algorithm": str(cfg.get("algo", "APPO")), "file": "torch.save of its Learner's "
              "checkpoint dict (model)", "policy": policy, "preprocessing": "envpool" if envpool else "cleanrl",
              "pipeline": pipeline, "actor": "logits", "critic": True, "layer_map": layout, "trained_on": trained_on,
              "config": cfg_path, "value_normalization": value_scale}
    if normalized:
        source["layer_map"] = {"network.norm": norm[:-1], **layout}
    steps = ckpt.get("env_steps")  # emulator frames when summaries_use_frameskip (SF's default), else agent steps
    if isinstance(steps, (int, np.integer)):
        steps = int(steps) // (skip if cfg.get("summaries_use_frameskip", True) else 1)
    else:
        steps = None
    return {"source": source, "architecture": "sample-factory-cnn" if normalized else "nature-cnn",
            "model_kwargs": {"n_actions": n_actions, "in_channels": 4}, "state_dict": state_dict, "global_step": steps}

def read_sb3_zip(path, z):
    """A Stable-Baselines3 model zip (open zipfile.ZipFile z, members data = JSON, policy.pth = the policy's state_dict):
    PPO / A2C with the CnnPolicy (NatureCNN: features_extractor.cnn.0/2/4 = conv1-3, features_extractor.linear.0 = fc,
    shared by actor and critic, no MLP layers after it; action_net = actor logits, value_net = critic) or DQN
    (q_net.features_extractor.*, q_net.q_net.0 = the Q-value head). Its observation space must be (4, 84, 84) uint8 (SB3's
    VecFrameStack(4) of AtariWrapper frames, after VecTransposeImage), discrete actions, pixels divided by 255
    (normalize_images). Returns and raises as read_external_agent."""
    try:
        data = json.loads(z.read("data"))
        sd = torch.load(io.BytesIO(z.read("policy.pth")), map_location="cpu", weights_only=True)
        version = z.read("_stable_baselines3_version").decode().strip() if "_stable_baselines3_version" in z.namelist() else "?"
    except Exception as e:  # a damaged member: zipfile, json and torch raise many types
        raise ValueError(f"'{path}' has the members of a Stable-Baselines3 zip, but they cannot be read: {type(e).__name__}")
    if not isinstance(data, dict) or not isinstance(sd, dict):
        raise ValueError(f"'{path}' has the members of a Stable-Baselines3 zip, but not a JSON dict and a state_dict")
    policy = re.search(r"<function (\w+)\.__init__", str((data.get("policy_class") or {}).get("__init__")))
    policy = policy.group(1) if policy else "policy"
    dqn = any(k.startswith("q_net.") for k in sd)
    algo = "DQN" if dqn else "PPO" if "clip_range" in data else "A2C" if "n_epochs" not in data else "actor-critic"
    what = f"'{path}' (Stable-Baselines3 {version} {algo}, {policy})"
    space, obs = data.get("action_space") or {}, data.get("observation_space") or {}
    if "Discrete" not in str(space.get(":type:")):
        raise ValueError(f"{what} has the action space {space.get(':type:')}: only discrete (Atari) action spaces import")
    shape = obs.get("_shape") or obs.get("shape")  # gym(nasium) spaces keep it as _shape
    if list(shape or []) != [4, 84, 84] or obs.get("dtype") != "uint8":
        raise ValueError(f"{what} takes observations {shape} {obs.get('dtype')}: the Nature CNN here takes (4, 84, 84) "
                         "uint8 frame stacks")
    if (data.get("policy_kwargs") or {}).get("normalize_images") is False:
        raise ValueError(f"{what} was trained with normalize_images=False: this Agent divides pixels by 255")
    for k in [k for k in sd if k.startswith(("pi_features_extractor.", "vf_features_extractor."))]:
        shared = "features_extractor." + k.split(".", 1)[1]
        if shared not in sd or not torch.equal(sd[k], sd[shared]):
            raise ValueError(f"{what} has separate actor and critic CNNs (share_features_extractor=False): this Agent "
                             "has one trunk")
    prefix = "q_net.features_extractor." if dqn else "features_extractor."
    layout = {"network.conv1": prefix + "cnn.0", "network.conv2": prefix + "cnn.2", "network.conv3": prefix + "cnn.4",
              "network.fc": prefix + "linear.0",
              **({"actor": "q_net.q_net.0"} if dqn else {"actor": "action_net", "critic": "value_net"})}
    extra = ("q_net_target.",) if dqn else ("pi_features_extractor.", "vf_features_extractor.")
    state_dict, n_actions = rename_external_weights(sd, layout, extra, what)
    if str(n_actions) != str(space.get("n")):
        raise ValueError(f"{what}: its action space has {space.get('n')} actions, its network {n_actions}")
    source = {"library": f"stable-baselines3 {version}", "algorithm": algo, "file": "SB3 zip (policy.pth)",
              "policy": policy, "preprocessing": "sb3", "pipeline": "SB3's AtariWrapper + VecFrameStack(4) + "
              "VecTransposeImage (RL Zoo's Atari setting)", "actor": "Q-values" if dqn else "logits", "critic": not dqn,
              "layer_map": layout}
    return {"source": source, "architecture": "nature-cnn", "model_kwargs": {"n_actions": n_actions, "in_channels": 4},
            "state_dict": state_dict, "global_step": data.get("num_timesteps")}


def rename_external_weights(sd, layout, extra, what, model_class=Agent):
    """sd: another library's state_dict; layout: {model module: their module}, e.g. {"network.conv1": "network.0"};
    extra: prefixes of their keys that are not used (SB3's aliases of the shared CNN, DQN's target network); what: the
    file, for messages; model_class: Agent (the Nature CNN) or ImpalaAgent, whose shapes the weights must have. Returns (state_dict with Agent's names, float32, the critic all zeros when the layout has none;
    n_actions). Raises ValueError naming the modules found when the keys differ, or the first tensor whose shape differs."""
    wanted = {f"{theirs}.{p}": f"{ours}.{p}" for ours, theirs in layout.items() for p in ("weight", "bias")}
    keys = [k for k in sd if not k.startswith(extra)]
    if set(keys) != set(wanted):
        found = ", ".join(sorted({k.rsplit(".", 1)[0] for k in keys}))
        raise ValueError(f"{what} holds the modules {found[:300]}: not the layout {', '.join(layout.values())}")
    head = sd[layout["actor"] + ".weight"]
    n_actions = int(head.shape[0]) if head.dim() == 2 else 1
    with torch.random.fork_rng(devices=[]):  # the reference's init draws leave the caller's RNG as it was
        reference = model_class(n_actions=n_actions, in_channels=4).state_dict()
    out = {}
    for theirs, ours in wanted.items():
        if tuple(sd[theirs].shape) != tuple(reference[ours].shape):
            net = "IMPALA CNN" if model_class is ImpalaAgent else "Nature CNN"
            raise ValueError(f"{what}: {theirs} has shape {tuple(sd[theirs].shape)}, the {net}'s {ours} needs "
                             f"{tuple(reference[ours].shape)}")
        out[ours] = sd[theirs].detach().to(torch.float32).clone()
    for k in ("critic.weight", "critic.bias"):
        out.setdefault(k, torch.zeros_like(reference[k]))
    return out, n_actions


def load_checkpoint(path: str, kind: str, flag: str) -> dict:
    if not path:
        raise InputError(f"{flag} is required")
    if not Path(path).is_file():
        raise InputError(f"{kind} checkpoint {path} does not exist")
    if kind == "pixel":  # or an agent trained by Stable-Baselines3 / CleanRL: no env id, the game is the ram vars file's
        try:
            external = read_external_agent(path)
        except ValueError as e:
            raise InputError(f"{flag}: {e}")
        if external is not None:
            ckpt = {**external, "agent": "pixel", "env_id": None}
            model_class = {"impala-cnn": ImpalaAgent, "sample-factory-cnn": SampleFactoryAgent}.get(ckpt["architecture"], Agent)
            model = model_class(**ckpt["model_kwargs"])
            model.load_state_dict(ckpt["state_dict"])
            ckpt["model"] = model.eval()
            return ckpt
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


def describes_bytes(record, indices, env_id):
    """Whether `record` (a RAM-vars dict, FORMATS.md section 1) is for env_id and holds a whole per-byte record (min,
    max, n_distinct, kind) of each RAM index in `indices` (a non-empty list of ints 0..127)."""
    recs = record.get("bytes") if isinstance(record, dict) else None
    return (isinstance(record, dict) and record.get("format") == "memory-pixel-interp/ram-vars"
            and record.get("env_id") == env_id and isinstance(recs, list) and len(recs) == 128 and bool(indices)
            and all(isinstance(i, int) and 0 <= i < 128 and isinstance(recs[i], dict)
                    and {"min", "max", "n_distinct", "kind"} <= set(recs[i]) for i in indices))


def agent_env_id(pix: dict, ram, env_id: str):
    """The gymnasium id of the game to probe when no --ram-vars is given: `env_id` (--env-id) if set, else the id the
    pixel checkpoint names (this project's checkpoints: env_id; a file from elsewhere: source.trained_on, e.g. cleanba's
    'Pong-v5', as '<Game>NoFrameskip-v4'), else the memory agent's. Returns None when none of them names a game.
    Raises InputError for an --env-id that is no registered gymnasium id."""
    if env_id:
        if env_id not in gym.registry:
            raise InputError(f"--env-id {env_id} is not a registered gymnasium id (e.g. PongNoFrameskip-v4)")
        return env_id
    if pix.get("env_id"):
        return pix["env_id"]
    trained = (pix.get("source") or {}).get("trained_on")
    if isinstance(trained, str) and trained:
        found = next((i for i in gym.registry if i.endswith("NoFrameskip-v4") and game_key(i) == game_key(trained)), None)
        if found:
            return found
    return ram["env_id"] if ram is not None else None


def extracted_ram_vars(env_id: str, out_dir: Path, seed: int, total_frames: int) -> tuple[Path, str]:
    """The RAM-variable file of `env_id` for a run without --ram-vars: `ram_vars/<env-id>.json` (relative to the working
    folder, as ppo_ram_breakout.py's default) when it exists, else `out_dir/ram_vars/<env-id>.json`, written first by
    `extract_ram_vars.py --env-id env_id --seed seed --out-dir out_dir/ram_vars` (plus `--total-frames total_frames`
    when > 0; a subprocess, its progress on this one's stdout) unless an earlier run left it there. Returns (path, how it
    was found: "ram_vars/ (default file)", "an earlier run's extraction" or "extracted by this run"). Raises
    InputError, with the extractor's own one-line message, when the extraction fails."""
    name = env_id.replace("/", "_") + ".json"
    for path, how in ((Path("ram_vars") / name, "ram_vars/ (default file)"),
                      (out_dir / "ram_vars" / name, "an earlier run's extraction")):
        if path.is_file():
            print(f"[ram vars] {path}: the RAM variables of {env_id} ({how})", flush=True)
            return path, how
    extractor = Path(__file__).resolve().with_name("extract_ram_vars.py")
    cmd = [sys.executable, str(extractor), "--env-id", env_id, "--seed", str(seed), "--out-dir", str(out_dir / "ram_vars")]
    cmd += ["--total-frames", str(total_frames)] if total_frames > 0 else []
    print(f"[ram vars] no ram_vars/{name}: extracting the RAM variables of {env_id} first"
          + ("" if total_frames > 0 else " (at the extractor's default budget: about 2 min on one core)")
          + f": {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not (out_dir / "ram_vars" / name).is_file():
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise InputError(f"extract_ram_vars.py --env-id {env_id} failed: {last.removeprefix('error: ')}")
    sys.stderr.write(proc.stderr)
    print(f"[ram vars] {out_dir / 'ram_vars' / name} written in {time.time() - t0:.0f}s", flush=True)
    return out_dir / "ram_vars" / name, "extracted by this run"


def output_folder(args: Args, env_id: str) -> Path:
    """--out-dir, default probe/<env-id> (with / replaced by _). Raises InputError when it is a file or not writable."""
    out_dir = Path(args.out_dir or Path("probe") / env_id.replace("/", "_"))
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir} exists and is not a folder")
    if not os.access(out_dir if out_dir.exists() else next(p for p in out_dir.parents if p.exists()), os.W_OK):
        raise InputError(f"--out-dir {out_dir} is not writable")
    return out_dir


def validate_inputs(args: Args):
    """Everything that can be wrong with the inputs is found here, before anything is written (without --ram-vars, the
    extraction of the game's RAM variables is the one thing written first: extracted_ram_vars). Returns (ram vars dict,
    pixel checkpoint dict, memory-agent checkpoint dict or None without --ram-checkpoint, game, included indices,
    output folder, where the RAM-variable file came from: "--ram-vars" or extracted_ram_vars's answer)."""
    pix = load_checkpoint(args.pixel_checkpoint, "pixel", "--pixel-checkpoint")
    if args.ranking == "memory-agent" and not args.ram_checkpoint:
        raise InputError("--ranking memory-agent needs the memory agent: pass --ram-checkpoint (or --ranking pixel-policy)")
    if args.ranking == "pixel-policy" and args.ram_checkpoint:
        raise InputError("--ranking pixel-policy ranks without a memory agent, which would go unused: leave out "
                         "--ram-checkpoint (or use --ranking memory-agent)")
    ram = load_checkpoint(args.ram_checkpoint, "ram", "--ram-checkpoint") if args.ram_checkpoint else None
    if not args.ram_vars:
        env_id = agent_env_id(pix, ram, args.env_id)
        if env_id is None:
            raise InputError("--ram-vars is required: the pixel checkpoint does not name its game (pass --ram-vars, or "
                             "--env-id to use ram_vars/<env-id>.json or extract it)")
        path, ram_vars_from = extracted_ram_vars(env_id, output_folder(args, env_id), args.seed, args.extract_frames)
        args.ram_vars = str(path)
    else:
        ram_vars_from = "--ram-vars"
    rv = load_ram_vars(args.ram_vars)
    game = rom_name(rv["env_id"])
    if why := trained_game_mismatch(pix.get("source"), game):
        raise InputError(f"--pixel-checkpoint: {why}, the game of the ram vars file {args.ram_vars} (pass that game's "
                         "ram vars file)")
    for ck, label in [(pix, "pixel")] * (pix["env_id"] is not None) + [(ram, "ram")] * (ram is not None):
        ck_game = rom_name(ck["env_id"])
        if ck_game != game:
            raise InputError(f"{label} checkpoint is for {ck['env_id']} (game {ck_game!r}) but the ram vars file "
                             f"is for {rv['env_id']} (game {game!r})")
        if ck["env_id"] != rv["env_id"]:
            print(f"warning: {label} checkpoint env {ck['env_id']} differs from ram vars env {rv['env_id']} (same game)")
    indices = list(ram.get("ram_indices") or []) if ram is not None else list(rv["selected"])
    unseen = [i for i in rv["selected"] if i not in set(indices)]
    own = ram["ram_vars"] if ram is not None and isinstance(ram.get("ram_vars"), dict) else None
    if (ram is not None and set(indices) < set(rv["selected"]) and describes_bytes(rv, indices, rv["env_id"])
            and (own.get("selected") == rv["selected"] if own is not None
                 else all(rv["bytes"][i].get("kind") == "bitmap" for i in unseen))):
        # the memory agent was trained on this file's selection less some bytes (--drop-bitmaps): every selected byte
        # is probed in the pixel agent; the memory agent ranks the bytes it observes, the others follow, unranked
        print(f"note: the memory agent observes {len(indices)} of the {len(rv['selected'])} bytes {args.ram_vars} "
              f"selects; the other {len(unseen)} ({', '.join(sorted({str(rv['bytes'][i].get('kind')) for i in unseen}))}) "
              "are probed too, after the ranked ones, without a memory-agent importance", flush=True)
    elif indices != list(rv["selected"]):
        # the memory agent observes other bytes than the file selects: ram_vars/ re-extracted since, or the agent's own
        # choice (--ram-bytes all, --drop-bitmaps). Use the first whole record of exactly its bytes: the RAM-vars
        # record its checkpoint carries (FORMATS.md section 2, "ram_vars"), else this file's per-byte records
        own = ram["ram_vars"] if isinstance(ram.get("ram_vars"), dict) else {}
        for record, env_id, what in ((own, ram["env_id"], "the RAM-vars record its checkpoint carries"),
                                     (rv, rv["env_id"], f"{args.ram_vars}'s records of those bytes")):
            if describes_bytes(record, indices, env_id):
                break
        else:
            raise InputError(f"ram checkpoint's ram_indices ({len(indices)} bytes) differ from {args.ram_vars}'s selected "
                             f"({len(rv['selected'])} bytes) and the checkpoint carries no RAM-vars record of those bytes: "
                             f"pass --ram-vars the file it was trained with (its run folder's run.json names it)")
        print(f"note: {args.ram_vars} selects {len(rv['selected'])} bytes, not the {len(indices)} the memory agent was "
              f"trained on; using {what} (version {record.get('version')})", flush=True)
        rv = {**record, "selected": indices}
    if ram is not None and ram.get("ram_stack", 1) != 1:
        raise InputError(f"ram checkpoint observes the last {ram['ram_stack']} RAM reads stacked (--ram-stack); the "
                         f"probe feeds the memory agent one RAM read")
    probe = ALEInterface()
    probe.loadROM(roms.get_rom_path(game))
    n_actions = len(probe.getMinimalActionSet())
    for ck, label in [(pix, "pixel")] + [(ram, "ram")] * (ram is not None):
        if ck["model_kwargs"].get("n_actions") != n_actions:
            raise InputError(f"{label} checkpoint has {ck['model_kwargs'].get('n_actions')} actions; {game} has {n_actions}")
    if args.roles_from:
        try:
            described = load_ram_vars(args.roles_from)
            described_game = rom_name(described["env_id"])
        except InputError as e:
            raise InputError(f"--roles-from: {e}") from None
        if described_game != game:
            raise InputError(f"--roles-from: {args.roles_from} is for {described['env_id']}, the ram vars file for "
                             f"{rv['env_id']}")
        roles = {i: r for i in rv["selected"]
                 if isinstance(r := described["bytes"][i].get("role"), dict) and r.get("role")}
        if not roles:
            raise InputError(f"--roles-from: {args.roles_from} describes none of the selected bytes (no 'role' "
                             "records: written before the extractor described bytes?)")
        for i, r in roles.items():  # the roles only: selection, kind and ranges stay those of --ram-vars
            if not rv["bytes"][i].get("role"):
                rv["bytes"][i]["role"] = r
    include = [parse_var(t) for t in args.include_vars]
    for i in include:
        if i not in rv["selected"]:
            raise InputError(f"--include-vars: ram[0x{i:02x}] is not among the ram vars file's selected bytes")
    return rv, pix, ram, game, include, output_folder(args, rv["env_id"]), ram_vars_from


# ---------------------------------------------------------------- emulation
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


def play(emus, policy, n_steps: int, rng, epsilon: float, noop_max: int, keep_obs: bool = False):
    """Play `policy(stacks, rams) -> action ids` on all emulators in lockstep (noop starts, FIRE after a
    reset or a lost life, epsilon-random actions). Returns per emulator the list of step records
    (state before the step, RAM before it, episode, action, 84x84 frame after it, game over; with `keep_obs`
    also "obs": the (4, 84, 84) uint8 stack the policy saw, taken at the same moment as the RAM)."""
    n_actions = len(emus[0].action_set)
    for e in emus:
        e.reset(rng, noop_max)
    records = [[] for _ in emus]
    for _ in range(n_steps):
        stacks = np.stack([e.stack for e in emus])
        rams = np.stack([e.ale.getRAM() for e in emus])
        actions = policy(stacks, rams)
        for i, e in enumerate(emus):
            a = int(actions[i])
            if e.needs_fire:
                a = e.fire
            elif rng.random() < epsilon:
                a = int(rng.integers(n_actions))
            state = e.ale.cloneState()
            e.step(a)
            over = e.ale.game_over()
            records[i].append({"state": state, "ram": rams[i], "episode": e.episode, "action": a,
                               "frame": e.stack[-1].copy(), "over": over})
            if keep_obs:
                records[i][-1]["obs"] = stacks[i]
            if over:
                e.reset(rng, noop_max)
    return records


def check_preprocessing(game: str, seed: int, steps: int = 120) -> dict:
    """Compare this script's observation with ale_py's AtariVectorEnv on the same actions (noop_max 0)."""
    try:
        from ale_py.vector_env import AtariVectorEnv
        venv = AtariVectorEnv(game=game, num_envs=1, noop_max=0, episodic_life=False, reward_clipping=False,
                              repeat_action_probability=0.0)
    except Exception as e:
        return {"compared": False, "reason": f"AtariVectorEnv unavailable: {type(e).__name__}: {e}"}
    obs_v, _ = venv.reset(seed=seed)
    emu = Emulator(game, seed)
    emu.ale.reset_game()
    emu.stack[:] = 0
    if emu.fire is not None:  # AtariVectorEnv's fire reset: one FIRE frame after reset_game
        emu.ale.act(emu.action_set[emu.fire])
    emu.stack[-1] = cv2.resize(emu.ale.getScreenGrayscale(), (84, 84), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    diffs = [int(np.abs(obs_v[0].astype(int) - emu.stack.astype(int)).max())]
    for _ in range(steps):
        a = int(rng.integers(len(emu.action_set)))
        obs_v, _, term, trunc, _ = venv.step(np.array([a]))
        emu.step(a)
        diffs.append(int(np.abs(obs_v[0].astype(int) - emu.stack.astype(int)).max()))
        if term[0] or trunc[0]:
            break
    venv.close()
    return {"compared": True, "pipeline": "AtariVectorEnv (the pixel agent's training env)", "steps": len(diffs) - 1,
            "max_abs_diff": max(diffs), "steps_identical": int(sum(d == 0 for d in diffs)),
            "how": "AtariVectorEnv(noop_max=0, 1 env) vs this script's emulator, same random actions from reset"}


class ScreenRecorder(gym.Wrapper):
    """Directly above the emulator, below an agent's own wrappers: keeps ALE's grayscale screen of every emulated frame
    since the last real reset (what this script's observation is made from), and counts real resets."""

    def __init__(self, env):
        super().__init__(env)
        self.frames, self.resets = [], 0

    def reset(self, **kwargs):
        out = self.env.reset(**kwargs)
        self.frames, self.resets = [self.env.unwrapped.ale.getScreenGrayscale()], self.resets + 1
        return out

    def step(self, action):
        out = self.env.step(action)
        self.frames.append(self.env.unwrapped.ale.getScreenGrayscale())
        return out


def envpool_pipeline(rec: "ScreenRecorder", seed: int, noop_max: int = 30):
    """EnvPool's Atari pipeline (envpool/atari/atari_env.h) as cleanba's make_env set it (episodic_life, noop_max 30,
    fire reset, no sticky actions, 84x84 gray, 4-stack), replayed on `rec` (a ScreenRecorder over a frameskip-1 env
    without sticky actions). Its Reset: a game's reset (at the start and after a game over; none after a lost life),
    then U{0..noop_max-1} + 1 NOOP frames, one less and then one FIRE frame on games with FIRE (a game over among them
    resets the game); the last frame's gray screen, resized (INTER_AREA) to 84x84, is pushed onto the stack, or fills
    it after a game's reset. Its Step: up to 4 frames of the action (it stops at a game over), the max of the gray
    screens of frames 3 and 4 (after an early game over, frame 3's pool slot alone, as EnvPool does), resized and
    pushed; a lost life or a game over ends the episode, and the agent's next observation is that of the Reset (the
    terminal one, whose action EnvPool ignores, is skipped here).
    Returns (first observation (4, 84, 84) uint8, act(action index) -> (next observation, episode ended))."""
    ale = rec.unwrapped.ale
    meanings = rec.unwrapped.get_action_meanings()
    fire = meanings.index("FIRE") if "FIRE" in meanings else None
    rng = np.random.default_rng(seed)
    gray = lambda screen: cv2.resize(screen, (84, 84), interpolation=cv2.INTER_AREA)
    state = {"pool": [None, None], "stack": [], "lives": 0}

    def frame(a):  # one emulated frame; True at a game over
        _, _, term, trunc, _ = rec.step(a)
        return bool(term or trunc)

    def reset(game, reset_seed=None):
        if game:
            rec.reset(seed=reset_seed)
        for _ in range(int(rng.integers(noop_max)) + 1 - (fire is not None)):
            if frame(0):
                rec.reset()
                game = True
        if fire is not None:
            frame(fire)
        state["pool"][0] = ale.getScreenGrayscale()
        img = gray(state["pool"][0])
        state["stack"] = [img] * 4 if game else state["stack"][1:] + [img]
        state["lives"] = ale.lives()
        return np.stack(state["stack"])

    def act(a):
        over, k = False, 4
        while k > 0 and not over:
            over = frame(a)
            if k <= 2:
                state["pool"][2 - k] = ale.getScreenGrayscale()
            k -= 1
        pool = state["pool"]
        state["stack"] = state["stack"][1:] + [gray(np.maximum(pool[0], pool[1]) if k == 0 else pool[0])]
        lost = 0 < ale.lives() < state["lives"]
        state["lives"] = ale.lives()
        if over or lost:
            return reset(over), True
        return np.stack(state["stack"]), False

    return reset(True, seed), act

def check_agent_pipeline(env_id: str, seed: int, source: dict, steps: int = 400) -> dict:
    """Compare this script's observation with the one an agent trained elsewhere saw in training, on the same emulated
    frames: the agent's own pipeline (source["preprocessing"]: "sb3" = Stable-Baselines3's AtariWrapper +
    VecFrameStack(4) + VecTransposeImage, as the RL Zoo trains Atari agents; "cleanrl" = CleanRL's make_env: SB3's
    NoopResetEnv(30), MaxAndSkipEnv(4), EpisodicLifeEnv, FireResetEnv, ClipRewardEnv, then gymnasium 0.29's
    ResizeObservation(84, 84) (cv2 INTER_AREA on the RGB frame), GrayScaleObservation (cv2 RGB2GRAY) and FrameStack(4),
    which fills the stack with the first frame after every reset) plays `steps` uniformly random actions on env_id
    (frame skip 1, no sticky actions); ScreenRecorder, under its wrappers, keeps every emulated frame, and this script's
    pipeline (ALE grayscale, max of the last 2 frames, cv2.resize INTER_AREA to 84x84, 4-stack zero-filled at a game's
    start and not at a lost life) is applied to those frames at every observation the agent sees.
    Returns {compared, pipeline, steps, frame: {max_abs_diff, mean_abs_diff, pixels_differing, steps_identical} of the
    newest frame (one frame's preprocessing), observation: the same for the whole (4, 84, 84) stack (plus the stacking
    rules), life_losses, game_resets, differences: the semantic differences in words}; compared False with the reason
    when stable-baselines3 (whose wrappers both pipelines use) is not installed. Units: gray levels 0-255.
    "envpool" (CleanRL cleanba's agents) is replayed by envpool_pipeline (no stable-baselines3 needed);
    "atari-agents-modern" / "-classic" are not replayed here: compared False, with the differences in words."""
    if source["preprocessing"].startswith("atari-agents"):  # their ale_env.py: ALE itself, a frame skip of their own
        return {"compared": False, "pipeline": source["pipeline"], "reason": "atari-agents' ALE wrapper is not replayed "
                "here; it differs from this script's in that it resizes each of the last 2 frames to 84x84 before taking "
                "their max (this script: max, then resize), plays no FIRE at reset, and "
                + ("plays sticky actions (0.25) and no no-op starts, like v5 ids" if source["preprocessing"].endswith("modern")
                   else "ends a training episode at a lost life")}
    try:
        if source["preprocessing"] != "envpool":
            from stable_baselines3.common import atari_wrappers as aw
            from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage
    except ImportError as e:
        return {"compared": False, "pipeline": source["pipeline"], "reason": f"stable-baselines3 is not installed ({e}); "
                "pip install stable-baselines3 --no-deps cloudpickle  (its wrappers make the agent's own observations)"}
    rec = ScreenRecorder(gym.make(env_id, frameskip=1, repeat_action_probability=0.0))
    if source["preprocessing"] == "envpool":
        first, act = envpool_pipeline(rec, seed)
    elif source["preprocessing"] == "sb3":
        venv = VecTransposeImage(VecFrameStack(DummyVecEnv([lambda: aw.AtariWrapper(rec)]), n_stack=4))
        venv.seed(seed)
        first = venv.reset()[0]

        def act(a):
            obs, _, done, _ = venv.step(np.array([a]))
            return obs[0], bool(done[0])
    else:
        env = aw.EpisodicLifeEnv(aw.MaxAndSkipEnv(aw.NoopResetEnv(rec, noop_max=30), skip=4))
        env = aw.ClipRewardEnv(aw.FireResetEnv(env) if "FIRE" in env.unwrapped.get_action_meanings() else env)
        gray = lambda rgb: cv2.cvtColor(cv2.resize(rgb, (84, 84), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        stack = [gray(env.reset(seed=seed)[0])] * 4
        first = np.stack(stack)

        def act(a):  # gymnasium 0.29's SyncVectorEnv: a terminal step returns the next episode's first observation
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                stack[:] = [gray(env.reset()[0])] * 4
            else:
                stack[:] = stack[1:] + [gray(obs)]
            return np.stack(stack), term or trunc
    rng = np.random.default_rng(seed)
    n_actions = int(rec.action_space.n)
    ours, resets_seen = np.zeros((4, 84, 84), np.uint8), rec.resets
    obs, frame_diffs, stack_diffs, ends = first, [], [], 0
    for t in range(steps + 1):
        if t:
            obs, done = act(int(rng.integers(n_actions)))
            ends += done
            ours = np.roll(ours, -1, axis=0)
        if rec.resets != resets_seen:  # a real reset (a game's start): this script's stack starts from zeros
            ours[:], resets_seen = 0, rec.resets
        f = rec.frames
        ours[-1] = cv2.resize(np.maximum(f[-2], f[-1]) if len(f) > 1 else f[-1], (84, 84), interpolation=cv2.INTER_AREA)
        frame_diffs.append(np.abs(obs[-1].astype(np.int16) - ours[-1]))
        stack_diffs.append(np.abs(obs.astype(np.int16) - ours))
    if source["preprocessing"] == "sb3":
        venv.close()
    else:
        rec.close()

    def summary(d):
        d = np.stack(d)
        return {"max_abs_diff": int(d.max()), "mean_abs_diff": float(d.mean()), "pixels_differing": float((d > 0).mean()),
                "steps_identical": int((d.reshape(len(d), -1).max(1) == 0).sum())}
    padding = "zeros at every terminal, lost lives included" if source["preprocessing"] == "sb3" else \
        "the first frame after every terminal, lost lives included, repeated 4 times"
    differences = [
        f"stack padding: its pipeline {padding}; this script zeros at a game's start only",
        "a lost life: its pipeline ends the episode there (EpisodicLifeEnv) and plays NOOP, FIRE and RIGHT "
        "steps before the next observation; this script plays one FIRE step, seen by the agent",
        "reset: its pipeline plays 1-30 NOOP frames, then (games with FIRE) FIRE and RIGHT steps; this script "
        "0-29 NOOP frames and one FIRE frame"]
    if source["preprocessing"] == "envpool":
        differences = [
            "stack padding: its pipeline repeats a game's first frame 4 times (not after a lost life); this script zeros "
            "at a game's start only",
            "a lost life: its pipeline ends the episode there, plays 0-29 NOOP frames and one FIRE frame (games with "
            "FIRE; else 1-30 NOOP frames) and pushes that frame, not maxed; this script plays one FIRE step, seen by the agent",
            "reset: its pipeline the same NOOP and FIRE frames as after a lost life; this script 0-29 NOOP frames and "
            "one FIRE frame"]
    return {"compared": True, "pipeline": source["pipeline"], "env_id": env_id, "steps": steps, "seed": seed,
            "frame": summary(frame_diffs), "observation": summary(stack_diffs), "terminals": int(ends),
            "game_resets": int(rec.resets), "units": "gray levels 0-255, over every observation the agent saw",
            "differences": differences,
            "how": "the same emulator frames (ScreenRecorder under its wrappers, uniformly random actions), each "
                   "observation the agent saw vs this script's pipeline applied to those frames"}


# Worker state for the sample emulation (in this process or in each pool process).
_WORKER = {}


def _init_worker(game, seed, states, actions):
    _WORKER.update(emu=Emulator(game, seed), states=states, actions=actions)


def _emulate(tasks):
    """tasks: list of (base id, ram index, value or -1 for no pin) -> list of (stack, raw, ram)."""
    emu, states, actions = _WORKER["emu"], _WORKER["states"], _WORKER["actions"]
    return [emu.replay(states[b], actions[b], None if v < 0 else (idx, v)) for b, idx, v in tasks]


# ---------------------------------------------------------------- step 3: forward passes with hooks
def probed_layers(agent: nn.Module) -> list[tuple[str, str]]:
    """The layers the probe records, read from the model: [(name, module path)], the hidden layers of agent.network in
    forward order (the name is the path inside `network`), then HEADS. A hidden layer is a ReLU directly in `network`,
    a max pool or a residual block (its output, the skip added). The Nature CNN (Agent): relu1, relu2, relu3 (conv maps),
    relu_fc. The IMPALA CNN (ImpalaAgent): per sequence s = 0-2, seq<s>.pool (the max pool's output), seq<s>.res0 and
    seq<s>.res1 (the residual blocks'), then relu (the last map, what the fc reads) and relu_fc."""
    hidden = [(path, f"network.{path}") for path, m in agent.network.named_modules()
              if isinstance(m, (nn.MaxPool2d, ImpalaResidualBlock)) or (isinstance(m, nn.ReLU) and "." not in path)]
    return hidden + [(k, k) for k in HEADS]


class Hooks:
    """Forward hooks on every probed layer (probed_layers: `layers` [(name, module path)], `hidden` the names of those
    before the heads): record outputs; optionally add a steering vector to one layer."""

    def __init__(self, agent: nn.Module):
        self.agent, self.out, self.steer_layer, self.steer = agent, {}, None, None
        self.layers = probed_layers(agent)
        self.hidden = [k for k, _ in self.layers if k not in HEADS]
        for name, module_name in self.layers:
            agent.get_submodule(module_name).register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, inputs, output):
            if name == self.steer_layer:
                output = output + self.steer.view(output.shape)
            self.out[name] = output.detach()
            return output
        return hook

    @torch.no_grad()
    def run(self, x, steer_layer=None, steer=None):
        """Forward a uint8 batch (B, 4, 84, 84); -> {layer: output}, critic as (B,)."""
        self.steer_layer, self.steer, self.out = steer_layer, steer, {}
        self.agent.get_action_and_value(x)
        self.steer_layer = self.steer = None
        return {k: (v.squeeze(-1) if k == "critic" else v) for k, v in self.out.items()}


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


# ---------------------------------------------------------------- step 1: what the memory agent relies on
def policy_change(logp, logq):
    """Per row, how far the action distribution moved: (total variation, KL(p || q)), from log-probabilities logp, logq
    (N, n_actions) float tensors -> two (N,) tensors."""
    p = logp.exp()
    return 0.5 * (p - logq.exp()).abs().sum(-1), (p * (logp - logq)).sum(-1)


def rank_by_tv(scores):
    """Step 1's ranking: the per-byte score dicts, best first by "tv" (then "kl"), each given its "rank" (1 = first)."""
    ranking = sorted(scores, key=lambda s: (-s["tv"], -s["kl"]))
    for rank, s in enumerate(ranking):
        s["rank"] = rank + 1
    return ranking


def ram_importance(ram_agent, selected, game, args, rng, device):
    """Ablate each selected byte (replace it by its value in other visited states) -> change of the policy.
    Returns the ranking (best first) and the RAMs visited."""
    emus = [Emulator(game, args.seed + 100 + i) for i in range(args.num_envs)]
    sel = np.array(selected)

    def policy(stacks, rams):
        with torch.no_grad():
            a, _, _, _ = ram_agent.get_action_and_value(torch.as_tensor(rams[:, sel], device=device))
        return a.cpu().numpy()
    records = play(emus, policy, args.importance_steps, rng, args.epsilon, args.noop_max)
    rams = np.stack([r["ram"] for recs in records for r in recs])
    x = torch.as_tensor(rams[:, sel], device=device)
    scores = []
    with torch.no_grad():
        h = ram_agent.network(encode_ram(x))
        logp, value = torch.log_softmax(ram_agent.actor(h), -1), ram_agent.critic(h).squeeze(-1)
        for j, idx in enumerate(selected):
            tv = kl = dv = frac = 0.0
            for _ in range(args.importance_repeats):
                xa = x.clone()
                xa[:, j] = x[torch.as_tensor(rng.permutation(len(x)), device=device), j]
                h = ram_agent.network(encode_ram(xa))
                tv_, kl_ = policy_change(logp, torch.log_softmax(ram_agent.actor(h), -1))
                tv, kl = tv + tv_.mean().item(), kl + kl_.mean().item()
                dv += (ram_agent.critic(h).squeeze(-1) - value).abs().mean().item()
                frac += (xa[:, j] != x[:, j]).float().mean().item()
            r = args.importance_repeats
            scores.append({"index": idx, "name": f"ram[0x{idx:02x}]", "tv": tv / r, "kl": kl / r,
                           "value_change": dv / r, "fraction_replaced": frac / r})
    return rank_by_tv(scores), rams


def pixel_sensitivity(agent, rv, game, args, rng, device, greedy=False):
    """Step 1 without a memory agent: how far the pixel agent's policy moves when each selected byte of `rv` is written
    into the emulator. Base states: --importance-states, drawn by collect_base_states from a pixel-agent rollout of
    --importance-steps steps on --num-envs emulators seeded seed + 100 + i (as the memory agent's rollout). On each,
    per byte, plan_samples' control (the byte pinned at its own value) and --importance-repeats draws (values seen in
    the rollout or in the ram vars record; for an ordinal byte half uniform in its [min, max]), each emulated as step
    2's samples are: the 4 agent steps (16 frames) its observation needs, the agent's own actions, the byte written
    before every frame. Only draws whose byte ends at another value than the control's count, as in step 2 (a byte the
    game re-derives every frame keeps none: it ranks last, tv 0, and the probe could not score it). A draw's policy
    change against its control: total variation between the action distributions (softmax of the logits; greedy, for a
    Q-network: its argmax, so TV 1 when the greedy action changes), KL(control || draw) of the softmax of the actor
    output, |value change| (the critic; greedy: max Q).
    Returns (ranking, best first by tv then kl: [{index, name, tv, kl, value_change (means over the byte's kept draws;
    0 without any), fraction_replaced (kept / drawn), screen_changed (fraction of the kept draws whose observation
    differs from the control's), draws, kept, rank}], the RAMs of every rollout step (n, 128) uint8, {states, samples,
    frames_emulated, emulation_s}). Raises InputError when the rollout has too few usable states."""
    sub = replace(args, seed=args.seed + 100, rollout_steps=args.importance_steps, num_base_states=args.importance_states,
                  samples_per_var=args.importance_repeats, natural=False)
    bases = collect_base_states(agent, game, sub, rng, device, greedy=greedy,
                                hint="raise --importance-steps or lower --importance-states (step 1, no memory agent)")
    selected = list(rv["selected"])
    tasks, meta = plan_samples(bases, describe_variables(selected, rv, [], args.max_classes), bases["seen_rams"], sub, rng)
    N = len(tasks)
    actor, value = np.zeros((N, agent.actor.out_features), np.float32), np.zeros(N, np.float32)
    stack_changed, ram = np.zeros(N, bool), np.zeros((N, 128), np.uint8)
    prog, emu_time, control_stack = Progress("importance", N), {"s": 0.0}, None
    for s0, results in emulated_batches(tasks, game, bases, sub, emu_time):
        with torch.no_grad():
            h = agent.hidden(torch.as_tensor(np.stack([r[0] for r in results]), device=device))
            out = agent.actor(h)
            actor[s0:s0 + len(results)] = out.cpu().numpy()
            value[s0:s0 + len(results)] = (out.max(-1).values if greedy else agent.critic(h).squeeze(-1)).cpu().numpy()
        for i, (stack, _, r) in enumerate(results, start=s0):
            ram[i] = r
            if meta[i, 3] == 1:  # plan_samples puts a control right before its draws
                control_stack = stack
            elif meta[i, 3] == 2:
                stack_changed[i] = not np.array_equal(stack, control_stack)
        prog.update(s0 + len(results))
    role = meta[:, 3]
    control = np.maximum.accumulate(np.where(role == 1, np.arange(N), -1))  # each draw's control row
    draws = np.nonzero(role == 2)[0]
    c = control[draws]
    logp, logq = torch.log_softmax(torch.as_tensor(actor[c]), -1), torch.log_softmax(torch.as_tensor(actor[draws]), -1)
    tv, kl = (t.double().numpy() for t in policy_change(logp, logq))
    if greedy:
        tv = (actor[c].argmax(1) != actor[draws].argmax(1)).astype(np.float64)
    dv = np.abs(value[draws] - value[c]).astype(np.float64)
    same = ~stack_changed[draws]  # the same observation: no change (not the last bits of two batches' forward passes)
    tv[same], kl[same], dv[same] = 0.0, 0.0, 0.0
    idx = np.array([t[1] for t in tasks])[draws]
    replaced = ram[draws, idx] != ram[c, idx]
    scores = []
    for j, i in enumerate(selected):
        drawn = meta[draws, 1] == j
        m = drawn & replaced
        tv_, kl_, dv_, changed = (float(a[m].mean()) if m.any() else 0.0 for a in (tv, kl, dv, stack_changed[draws]))
        scores.append({"index": i, "name": f"ram[0x{i:02x}]", "tv": tv_, "kl": kl_, "value_change": dv_,
                       "fraction_replaced": float(m.sum() / max(drawn.sum(), 1)), "screen_changed": changed,
                       "draws": int(drawn.sum()), "kept": int(m.sum())})
    return rank_by_tv(scores), bases["seen_rams"], {"states": len(bases["states"]), "samples": N,
                                                    "frames_emulated": N * 16, "emulation_s": emu_time["s"]}


def describe_variables(keep, rv, ranking, max_classes):
    """The probed variables: name ram[0xNN] (NN = index into getRAM()), the ram vars record's address, kind, role
    (what the extractor found the byte is, with its evidence), range and values; categorical if the kind is
    bitmap or it has <= max_classes distinct values; "importance": the byte's entry in step 1's `ranking` (None when
    it has none)."""
    variables = []
    for i in keep:
        rec = rv["bytes"][i]
        kind, n_distinct = str(rec.get("kind", "state")), int(rec.get("n_distinct", 256))
        categorical = kind == "bitmap" or n_distinct <= max_classes
        values = rec.get("values") if isinstance(rec.get("values"), list) else []
        variables.append({"index": i, "min": int(rec["min"]), "max": int(rec["max"]), "categorical": categorical,
                          "record_values": [int(x) for x in values],
                          "public": {"name": f"ram[0x{i:02x}]", "index": i, "address": rec.get("address", f"0x{0x80 + i:02X}"),
                                     "kind": kind, "categorical": categorical, "n_distinct_in_ram_vars": n_distinct,
                                     # the extractor's description (ram vars version 2; None for a version-1 file)
                                     "role": (rec.get("role") or {}).get("role"),
                                     "role_evidence": (rec.get("role") or {}).get("evidence"),
                                     # a position's object: "player", "player's shot" or "other" (the actions that
                                     # move it; ram vars files written since 2026-12-03), else None
                                     "object": (rec.get("role") or {}).get("object"),
                                     "min": int(rec["min"]), "max": int(rec["max"]),
                                     "importance": next((s for s in ranking if s["index"] == i), None)}})
    return variables


# ---------------------------------------------------------------- step 2: base states and samples
def collect_base_states(agent, game, args, rng, device, greedy=False, hint="raise --rollout-steps"):
    """Play the pixel agent (sampled from its logits; greedy: argmax of its actor output, for a Q-network) and draw
    base states uniformly from the steps that have 4 more steps in the same episode (too few: InputError ending in
    `hint`). Each base keeps its cloned
    state, the 4 actions the agent took next, its RAM, and the observation the rollout saw after those 4 steps (to
    check that restore + replay reproduces it); also the game's screen size (H, W) from the emulator, and (with --natural) every step's unedited observation with its
    RAM for step 7: "natural" {obs (n, 4, 84, 84) uint8, ram (n, 128) uint8, emu, episode, step (n,) int, state (n
    cloned emulator states, taken with the RAM), action (n,) int (the action played next)}."""
    emus = [Emulator(game, args.seed + i) for i in range(args.num_envs)]

    def policy(stacks, rams):
        with torch.no_grad():
            x = torch.as_tensor(stacks, device=device)
            a = agent.actor(agent.hidden(x)).argmax(1) if greedy else agent.get_action_and_value(x)[0]
        return a.cpu().numpy()
    records = play(emus, policy, args.rollout_steps, rng, args.epsilon, args.noop_max, keep_obs=args.natural)
    eligible = [(e, t) for e, recs in enumerate(records) for t in range(len(recs) - 3)
                if len({r["episode"] for r in recs[t:t + 4]}) == 1 and not any(r["over"] for r in recs[t:t + 4])]
    if len(eligible) < args.num_base_states:
        raise InputError(f"only {len(eligible)} usable base states in the rollouts; {hint}")
    chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), args.num_base_states, replace=False))]
    return {"states": [records[e][t]["state"] for e, t in chosen],
            "actions": [np.array([r["action"] for r in records[e][t:t + 4]]) for e, t in chosen],
            "ram": np.stack([records[e][t]["ram"] for e, t in chosen]),
            "rollout_obs": [np.stack([r["frame"] for r in records[e][t:t + 4]]) for e, t in chosen],
            "step": np.array([t for e, t in chosen]), "episode": np.array([records[e][t]["episode"] for e, t in chosen]),
            "seen_rams": np.stack([r["ram"] for recs in records for r in recs]),
            "screen_dims": tuple(int(x) for x in emus[0].ale.getScreenDims()),  # (H, W): not 210x160 on every game
            "steps_played": sum(map(len, records)), "eligible": len(eligible),
            "natural": {"obs": np.stack([r["obs"] for recs in records for r in recs]),
                        "ram": np.stack([r["ram"] for recs in records for r in recs]),
                        "emu": np.array([e for e, recs in enumerate(records) for _ in recs]),
                        "episode": np.array([r["episode"] for recs in records for r in recs]),
                        "step": np.array([t for recs in records for t in range(len(recs))]),
                        "state": [r["state"] for recs in records for r in recs],  # the emulator as the stack shows it
                        "action": np.array([r["action"] for recs in records for r in recs])} if args.natural else None}


def plan_samples(bases, variables, seen_rams, args, rng):
    """Per base state one natural reference (no pin); per (base, variable) one control (the variable pinned
    at its own value) and up to --samples-per-var draws. Categorical variables draw from the values seen
    (ram vars record + rollouts); ordinal ones half from those, half uniformly in the record's [min, max].
    Returns tasks [(base, ram index, value or -1)] and meta rows (base, var slot, value, role 0/1/2)."""
    tasks, meta = [], []
    for b in range(len(bases["states"])):
        tasks.append((b, 0, -1))
        meta.append((b, -1, -1, 0))
        for v, var in enumerate(variables):
            idx, own = var["index"], int(bases["ram"][b, var["index"]])
            seen = np.union1d(np.unique(seen_rams[:, idx]), var["record_values"] + [var["min"], var["max"]])
            tasks.append((b, idx, own))
            meta.append((b, v, own, 1))
            draws = set()
            for _ in range(args.samples_per_var * 8):
                if len(draws) >= args.samples_per_var:
                    break
                uniform = not var["categorical"] and rng.random() < 0.5
                val = int(rng.integers(var["min"], var["max"] + 1)) if uniform else int(rng.choice(seen))
                if val != own:
                    draws.add(val)
            for val in sorted(draws):
                tasks.append((b, idx, val))
                meta.append((b, v, val, 2))
    return tasks, np.array(meta, dtype=np.int64).reshape(-1, 4)


def emulated_batches(tasks, game, bases, args, emu_time):
    """Emulate `tasks` [(base id, ram index, value or -1 for no pin)] on `bases` (collect_base_states' states and
    actions) in batches of --batch-size, in this process or on --num-workers processes (fork; ALE + cv2 only).
    Yields (index of the batch's first task, [(stack (4, 84, 84) uint8, last raw frame (H, W) uint8, RAM (128,) uint8)]
    per task); adds the seconds spent emulating to emu_time["s"]."""
    pool = None
    if args.num_workers > 1:
        ctx = get_context("fork" if sys.platform.startswith("linux") else "spawn")  # workers use only ALE + cv2
        pool = ctx.Pool(args.num_workers, _init_worker, (game, args.seed, bases["states"], bases["actions"]))
    else:
        _init_worker(game, args.seed, bases["states"], bases["actions"])
    try:
        for s0 in range(0, len(tasks), args.batch_size):
            chunk = tasks[s0:s0 + args.batch_size]
            te = time.time()
            if pool is not None:
                per = -(-len(chunk) // args.num_workers)
                results = [r for part in pool.map(_emulate, [chunk[i:i + per] for i in range(0, len(chunk), per)]) for r in part]
            else:
                results = _emulate(chunk)
            emu_time["s"] += time.time() - te
            yield s0, results
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def run_samples(hooks, tasks, meta, game, bases, n_vars, args, device):
    """Emulate every task (set RAM -> render the 4-frame stack) and forward it in batches, recording every
    layer. Also accumulates, per variable, |screen - control screen| for the draws whose variable changed."""
    N = len(tasks)
    shapes = {k: tuple(v.shape[1:]) for k, v in hooks.run(torch.zeros(1, 4, 84, 84, device=device)).items()}
    conv_dt = np.float16 if args.conv_dtype == "float16" else np.float32
    S = {"shapes": shapes, "obs_last": np.zeros((N, 84, 84), np.uint8), "ram": np.zeros((N, 128), np.uint8),
         "acts": {k: np.zeros((N,) + shapes[k], conv_dt if len(shapes[k]) == 3 else np.float32) for k, _ in hooks.layers},
         "screen_changed": np.zeros(N, bool), "control_of": np.full(N, -1),
         "diff_raw": np.zeros((n_vars,) + bases["screen_dims"]), "diff_obs": np.zeros((n_vars, 84, 84)), "n_diff": np.zeros(n_vars, int),
         "control_stack": {}, "natural_obs": {}}
    controls = {}
    prog, t0, emu_time = Progress("samples", N), time.time(), {"s": 0.0}
    for s0, results in emulated_batches(tasks, game, bases, args, emu_time):
        out = hooks.run(torch.as_tensor(np.stack([r[0] for r in results]), device=device))
        for k, _ in hooks.layers:
            S["acts"][k][s0:s0 + len(results)] = out[k].cpu().numpy()
        for i, (stack, raw, ram) in enumerate(results, start=s0):
            b, v, _, role = meta[i]
            S["obs_last"][i], S["ram"][i] = stack[-1], ram
            if role == 0:
                S["natural_obs"][b] = stack
            elif role == 1:
                controls[(b, v)] = (i, raw.astype(np.int16), stack[-1].astype(np.int16))
                S["control_stack"][i] = stack
            else:
                ci, craw, cobs = controls[(b, v)]
                S["control_of"][i] = ci
                idx = tasks[i][1]
                if ram[idx] != S["ram"][ci, idx]:
                    d = np.abs(raw.astype(np.int16) - craw)
                    S["screen_changed"][i] = bool(d.any())
                    S["diff_raw"][v] += d
                    S["diff_obs"][v] += np.abs(stack[-1].astype(np.int16) - cobs)
                    S["n_diff"][v] += 1
        prog.update(s0 + len(results))
    S["seconds"], S["emulation_seconds"] = time.time() - t0, emu_time["s"]
    nz = np.maximum(S["n_diff"], 1)
    S["diff_raw"] = (S["diff_raw"] / nz[:, None, None]).astype(np.float32)
    S["diff_obs"] = (S["diff_obs"] / nz[:, None, None]).astype(np.float32)
    emu = _WORKER.get("emu") or Emulator(game, args.seed)
    S["base_rgb"] = np.zeros((len(bases["states"]),) + bases["screen_dims"] + (3,), np.uint8)
    for b, (state, actions) in enumerate(zip(bases["states"], bases["actions"])):  # colour picture of each base
        emu.replay(state, actions)
        S["base_rgb"][b] = emu.ale.getScreenRGB()
    return S


def sample_table(tasks, meta, S, test_bases):
    """Per sample: base, variable slot, role (0 natural, 1 control, 2 draw), intended / actual / control value,
    whether the variable really changed (draws), kept, number of other bytes that changed, held-out flag."""
    N = len(tasks)
    T = {"base_id": meta[:, 0], "var": meta[:, 1], "intended": meta[:, 2], "role": meta[:, 3], "control_of": S["control_of"]}
    idx = np.array([t[1] for t in tasks])
    ctrl = np.maximum(T["control_of"], 0)
    T["actual"] = np.where(T["var"] >= 0, S["ram"][np.arange(N), idx].astype(np.int64), -1)
    T["control_value"] = np.where(T["role"] == 2, T["actual"][ctrl], np.where(T["role"] == 1, T["actual"], -1))
    T["changed"] = (T["role"] == 2) & (T["actual"] != T["control_value"])
    T["kept"] = (T["role"] == 1) | T["changed"]
    other = (S["ram"] != S["ram"][ctrl]) & (T["role"] == 2)[:, None]
    other[np.arange(N), idx] = False
    T["n_other"] = other.sum(1)
    T["is_test"] = np.isin(T["base_id"], test_bases)
    return T


# ---------------------------------------------------------------- step 4: probes, directions, causal test
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


def weighted_f1(pred, y) -> float:
    """F1 of each class present in y, weighted by its frequency in y (AtariARI's metric; sklearn's "weighted")."""
    f1 = 0.0
    for c in np.unique(y):
        tp = ((pred == c) & (y == c)).sum()
        prec, rec = tp / max((pred == c).sum(), 1), tp / max((y == c).sum(), 1)
        f1 += (y == c).mean() * (2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)
    return float(f1)


def score_probe(Xtr, ytr, gtr, Xte, yte, gte, categorical: bool):
    """Fit on train, score on test: R^2 (ordinal; also R^2 of the within-base-state changes, i.e. after
    removing each test base's mean of value and prediction) or weighted F1 + accuracy (categorical: ridge
    classifier on one-hot values). Returns (scores dict, ridge weights of the value read-out or None)."""
    if categorical:
        classes = np.unique(ytr)
        Y = torch.as_tensor((ytr[:, None] == classes[None]).astype(np.float32), device=Xtr.device)
        W, b = fit_ridge(Xtr, Y, gtr)
        pred = classes[(Xte @ W + b).argmax(1).cpu().numpy()]
        return {"metric": "weighted_f1", "score": weighted_f1(pred, yte), "accuracy": float((pred == yte).mean())}, None
    W, b = fit_ridge(Xtr, torch.as_tensor(ytr[:, None].astype(np.float32), device=Xtr.device), gtr)
    pred = (Xte @ W + b)[:, 0].cpu().numpy()
    r2 = lambda y, p: float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum()) if np.ptp(y) > 0 else None
    yc, pc = yte.astype(np.float64).copy(), pred.astype(np.float64).copy()
    for gg in np.unique(gte):
        yc[gte == gg] -= yc[gte == gg].mean()
        pc[gte == gg] -= pc[gte == gg].mean()
    return {"metric": "r2", "score": r2(yte, pred), "r2_within_base": r2(yc, pc)}, (W[:, 0], float(b[0]))


def flat(acts, layer, idx, device):
    return torch.as_tensor(acts[layer][idx], device=device).float().reshape(len(idx), -1)


def toward(steered, base, target):
    """(gap closed, mean cosine): 1 - sum|s - t| / sum|b - t| (1 = lands on the target, 0 = no closer,
    < 0 = farther, e.g. overshoot) and the mean cosine between the moves s - b and t - b."""
    s, b, t = steered.flatten(1), base.flatten(1), target.flatten(1)
    d0 = (b - t).norm(dim=1)
    if d0.sum() <= 0:
        return None, None
    gap = 1.0 - (s - t).norm(dim=1).sum().item() / d0.sum().item()
    ok = ((s - b).norm(dim=1) > 0) & (d0 > 0)
    cos = torch.nn.functional.cosine_similarity((s - b)[ok], (t - b)[ok], dim=1).mean().item() if ok.any() else 0.0
    return gap, cos


def causal_test(hooks, x, c_idx, t_idx, steer, layer, acts, args, rng, device):
    """Add `steer` (one vector per pair) to `layer` on the control samples x; measure how far every
    downstream layer, the policy and the value move toward the paired targets; the same for random
    directions of the same norm (--random-directions draws) and for the oracle steer (the pair's true
    activation difference at `layer`, which must close the whole gap: a check of the hook machinery)."""
    down = hooks.hidden[hooks.hidden.index(layer) + 1:] + ["actor"]
    target = {k: flat(acts, k, t_idx, device) for k in down + ["critic"]}
    base = {k: flat(acts, k, c_idx, device) for k in down + ["critic"]}

    def measure(out):
        m = {}
        for k in down:
            m[f"gap_closed_{k}"], m[f"cos_{k}"] = toward(out[k], base[k], target[k])
        p_s, p_b, p_t = (torch.softmax(o.reshape(len(c_idx), -1), -1) for o in (out["actor"], base["actor"], target["actor"]))
        tv_s, tv_b = 0.5 * (p_s - p_t).abs().sum(-1).sum().item(), 0.5 * (p_b - p_t).abs().sum(-1).sum().item()
        m["gap_closed_policy_tv"] = 1 - tv_s / tv_b if tv_b > 0 else None
        m["gap_closed_value"], _ = toward(out["critic"].reshape(-1, 1), base["critic"], target["critic"])
        m["policy_shift_tv"] = (0.5 * (p_s - p_b).abs().sum(-1)).mean().item()
        return m
    fv = measure(hooks.run(x, layer, steer))
    oracle = measure(hooks.run(x, layer, flat(acts, layer, t_idx, device) - flat(acts, layer, c_idx, device)))
    rand = []
    for _ in range(args.random_directions):
        r = torch.as_tensor(rng.standard_normal(tuple(steer.shape)).astype(np.float32), device=device)
        rand.append(measure(hooks.run(x, layer, r / r.norm(dim=1, keepdim=True) * steer.norm(dim=1, keepdim=True))))
    res = {"pairs": int(len(c_idx)), "steer_norm_mean": steer.norm(dim=1).mean().item(), "function_vector": fv,
           "oracle": oracle, "random": {}}
    for k in fv:
        vals = [r[k] for r in rand if r[k] is not None]
        res["random"][k] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))} if vals else None
    return res


def within_base_assoc(P, y, groups, bins: int = 8):
    """Association of each column of P with the value y after removing each base state's mean (the
    variable's own effect, other bytes held fixed): Pearson r and the correlation ratio eta (values in up to
    `bins` quantile bins; eta also sees non-monotonic tuning, e.g. a unit for one paddle position).
    P (n, u) tensor; y (n,) numpy; groups (n,). Returns (r, eta) tensors (u,)."""
    Pc, yc = P.clone(), torch.as_tensor(y.astype(np.float32), device=P.device).clone()
    for g in np.unique(groups):
        m = torch.as_tensor(groups == g, device=P.device)
        Pc[m] -= Pc[m].mean(0)
        yc[m] -= yc[m].mean()
    ss = (Pc ** 2).sum(0)
    den = ss.sqrt() * yc.norm()
    r = torch.where(den > 1e-9, (Pc * yc[:, None]).sum(0) / den.clamp_min(1e-9), torch.zeros_like(den))
    uniq = np.unique(y)
    codes = np.searchsorted(uniq, y) if len(uniq) <= bins else np.minimum((np.argsort(np.argsort(y, kind="stable")) * bins) // len(y), bins - 1)
    between = sum(int((codes == c).sum()) * Pc[torch.as_tensor(codes == c, device=P.device)].mean(0) ** 2 for c in np.unique(codes))
    eta = torch.where(ss > 1e-9, (between / ss.clamp_min(1e-9)).clamp(0, 1).sqrt(), torch.zeros_like(ss))
    return r, eta


def unit_effects(S, T, n_vars: int, max_other: int, hidden, chunk: int = 512):
    """Step 5's effect size of every variable on every hidden unit / conv channel (README §5, "effect").
    spread_u: the SD of a_u over the unperturbed samples (natural references and controls, all base states),
    per position, averaged over a conv channel's positions; floored at 10% of the layer's median positive
    spread (units silent on every unperturbed screen are measured against that floor).
    effect[u, v]: mean over v's kept draws that changed at most `max_other` other bytes of
    |a_u(draw) - a_u(its control)| (averaged over positions: an object that moves within a channel's map
    counts, unlike a change of the spatial mean), divided by spread_u; 0 for a variable without such draws.
    peak_u: the unit's peak on the unperturbed samples (99th percentile over them of its largest position); the
    layer's typical peak is the median of peak_u over its alive units.
    peak_change[u, v]: the same draws' mean of the largest |a_u(draw) - a_u(its control)| over positions (an object
    that changes a few positions of a conv map is not diluted by the map's size), in activation units.
    hidden: the layers measured (Hooks.hidden). Returns {layer: {"effect" (units, V), "spread" (units,), "alive"
    (units,), "peak" (units,), "peak_change" (units, V)}} and the draws used per variable."""
    draws = np.nonzero(T["changed"] & (T["n_other"] <= max_other))[0]
    ctrl, dv = T["control_of"][draws], T["var"][draws]
    n_used = np.bincount(dv, minlength=n_vars)
    ref = np.nonzero(T["role"] <= 1)[0]
    res = {}
    for k in hidden:
        A = S["acts"][k]
        A = A.reshape(len(A), A.shape[1], -1)   # (N, units, positions); fc: one position
        lo, hi = np.full(A.shape[1:], np.inf, np.float32), np.full(A.shape[1:], -np.inf, np.float32)
        for i in range(0, len(A), 4 * chunk):  # alive = not constant over all samples
            x = A[i:i + 4 * chunk]
            lo, hi = np.minimum(lo, x.min(0)), np.maximum(hi, x.max(0))
        mean = sum(A[ref[i:i + chunk]].astype(np.float64).sum(0) for i in range(0, len(ref), chunk)) / len(ref)
        var = sum(((A[ref[i:i + chunk]] - mean) ** 2).sum(0) for i in range(0, len(ref), chunk)) / len(ref)
        spread = np.sqrt(var).mean(-1)
        pos = spread[spread > 0]
        denom = np.maximum(spread, 0.1 * float(np.median(pos)) if pos.size else 1.0)
        peak = np.percentile(np.concatenate([A[ref[i:i + chunk]].max(-1) for i in range(0, len(ref), chunk)]), 99, axis=0)
        tot, tot_peak = np.zeros((n_vars, A.shape[1])), np.zeros((n_vars, A.shape[1]))
        for i in range(0, len(draws), chunk):
            d = np.abs(A[draws[i:i + chunk]].astype(np.float32) - A[ctrl[i:i + chunk]].astype(np.float32))
            np.add.at(tot, dv[i:i + chunk], d.mean(-1))
            np.add.at(tot_peak, dv[i:i + chunk], d.max(-1))
        effect = (tot / np.maximum(n_used, 1)[:, None]).T / denom[:, None]
        res[k] = {"effect": effect.astype(np.float32), "spread": spread.astype(np.float32),
                  "alive": ((hi - lo) > 1e-6).any(-1), "peak": peak.astype(np.float32),
                  "peak_change": (tot_peak / np.maximum(n_used, 1)[:, None]).T.astype(np.float32)}
    return res, n_used


def region_of(diff_map, rel: float = 0.25, floor: float = 0.5):
    """Bounding box [row0, row1, col0, col1] (inclusive) of pixels with mean |diff| >= max(rel * peak, floor)."""
    peak = float(diff_map.max())
    if peak < floor:
        return None
    rows, cols = np.nonzero(diff_map >= max(rel * peak, floor))
    return {"bbox": [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())],
            "centroid": [float(rows.mean()), float(cols.mean())], "peak": peak, "pixels": int(len(rows))}


# How every sample sets its variable (results.json "status.intervention"): the value is held, not set once.
HOLD = "held: written with setRAM before every one of the sample's 16 emulated frames"


def unscored_reason(drawn: int, kept: int, kept_train: int, kept_test: int, values_train: int, values_test: int):
    """Why a variable gets no probe score (None if it gets one). Counts are draws (samples with a value other
    than the base state's own); values_* = distinct values present on the train / held-out base states
    (controls included). Returns one sentence for results.json and the report."""
    if drawn == 0:
        return "not scored: no value to draw (the byte took one value in the ram vars record and the rollouts)"
    if kept == 0:
        return (f"not scored: 0 of {drawn} draws kept. The value was held (written before each of the 16 frames), "
                "yet the byte ended at the control's value every time: the game recomputes it within each frame "
                "(e.g. from another byte or the controller), so writing it cannot move it. Probing its source byte "
                "instead is not done (the ram vars file names no source)")
    if kept_train < 2 or kept_test == 0:
        return (f"not scored: only {kept} of {drawn} draws kept ({kept_train} on train, {kept_test} on held-out base "
                "states; need >= 2 and >= 1): the game overwrote most held values")
    if values_train < 2 or values_test < 2:
        return (f"not scored: the values present take {values_train} distinct value(s) on the train and {values_test} "
                "on the held-out base states (need 2 each)")
    return None


def region_reason(kept: int, screen_changed: float | None, peak: float, floor: float = 0.5):
    """Why a variable has no screen region (region_of returned None)."""
    if kept == 0:
        return "no kept draw: nothing to compare with its control"
    if not screen_changed:
        return f"the screen did not change in any of the {kept} kept draws"
    return f"the mean |screen difference| peaks at {peak:.2f} gray levels, below the {floor} floor"


def analyse_variable(v, var, T, S, hooks, out, args, rng, device):
    """Probe scores, function vectors, causal test and unit correlations of one variable. T: per-sample
    table; S: samples; out: arrays (fv, probe_w, probe_b, fv_delta, unit_corr, unit_eta) filled in place;
    reads unit_effect (unit_effects) to rank the top units."""
    acts = S["acts"]
    sel = np.nonzero((T["var"] == v) & T["kept"])[0]
    y, g = T["actual"][sel].astype(np.float64), T["base_id"][sel]
    tr, te = ~T["is_test"][sel], T["is_test"][sel]
    draws = (T["var"] == v) & (T["role"] == 2)
    good = draws & T["changed"]
    info = dict(var["public"], probe={}, causal={}, top_units={})
    info["samples"] = {
        "drawn": int(draws.sum()), "kept": int(good.sum()), "reached_intended": int((good & (T["actual"] == T["intended"])).sum()),
        "other_bytes_changed_fraction": float((T["n_other"][good] > 0).mean()) if good.any() else None,
        "other_bytes_changed_mean": float(T["n_other"][good].mean()) if good.any() else None,
        "screen_changed_fraction": float(S["screen_changed"][good].mean()) if good.any() else None,
        "values": sorted(set(int(a) for a in y))}
    info["screen_region"] = {"raw": region_of(S["diff_raw"][v]), "obs_84x84": region_of(S["diff_obs"][v]),
                             "mean_abs_diff": float(S["diff_raw"][v].mean())}
    if info["screen_region"]["raw"] is None:
        info["screen_region"]["reason"] = region_reason(int(good.sum()), info["samples"]["screen_changed_fraction"],
                                                        float(S["diff_raw"][v].max()))
    # probes need real interventions on train and test base states
    reason = unscored_reason(int(draws.sum()), int(good.sum()), int((good & ~T["is_test"]).sum()), int((good & T["is_test"]).sum()),
                             len(np.unique(y[tr])), len(np.unique(y[te])))
    ok = reason is None
    info["status"] = {"scored": ok, "reason": reason, "intervention": HOLD}
    info["causal_reasons"] = {}
    if ok:  # function vector = mean activation of the high values - of the low values (train samples)
        hi = tr & (y > np.median(y[tr]))
        hi = hi if hi.any() else tr & (y >= np.median(y[tr]))
        lo = tr & ~hi
        out["fv_delta"][v] = y[hi].mean() - y[lo].mean()
    metric = "weighted_f1" if var["categorical"] else "r2"
    for k, _ in hooks.layers:
        if not ok:
            info["probe"][k] = {"metric": metric, "score": None, "control": None, "reason": reason}
            continue
        X = flat(acts, k, sel, device)
        out["fv"][k][v] = (X[torch.as_tensor(hi, device=device)].mean(0) - X[torch.as_tensor(lo, device=device)].mean(0)).cpu().numpy()
        Xtr, Xte = X[torch.as_tensor(tr, device=device)], X[torch.as_tensor(te, device=device)]
        res, wb = score_probe(Xtr, y[tr], g[tr], Xte, y[te], g[te], var["categorical"])
        if wb is None:  # categorical: the ridge read-out of the value is still stored as the probe direction
            W, b0 = fit_ridge(Xtr, torch.as_tensor(y[tr][:, None].astype(np.float32), device=device), g[tr])
            wb = (W[:, 0], float(b0[0]))
        out["probe_w"][k][v], out["probe_b"][k][v] = wb[0].cpu().numpy(), wb[1]
        ctrl = [score_probe(Xtr, rng.permutation(y[tr]), g[tr], Xte, y[te], g[te], var["categorical"])[0]["score"]
                for _ in range(args.control_draws)]
        ctrl = [c for c in ctrl if c is not None]
        res.update(control=float(np.mean(ctrl)) if ctrl else None, control_std=float(np.std(ctrl)) if ctrl else None,
                   control_scores=[float(c) for c in ctrl], n_train=int(tr.sum()), n_test=int(te.sum()), fv_norm=float(np.linalg.norm(out["fv"][k][v])))
        info["probe"][k] = res
    # causal test: (control, target) pairs of held-out base states
    pairs = np.nonzero(good & T["is_test"])[0]
    if not ok:
        info["causal_reasons"] = {k: "no causal test: the variable is not scored (status.reason)" for k in hooks.hidden}
    if ok and len(pairs):
        pairs = np.sort(rng.choice(pairs, min(len(pairs), args.causal_pairs), replace=False))
        ctrl_of = T["control_of"][pairs]
        a, x_new = T["actual"][ctrl_of].astype(np.float64), T["actual"][pairs].astype(np.float64)
        for k in hooks.hidden:
            if var["categorical"]:  # steer = mean(class new) - mean(class old), train samples
                Xtr_k = acts[k][sel[tr]].reshape(int(tr.sum()), -1).astype(np.float32)
                means = {c: Xtr_k[y[tr] == c].mean(0) for c in np.unique(y[tr])}
                use = np.array([ai in means and xi in means for ai, xi in zip(a, x_new)])
                steer = np.stack([means[xi] - means[ai] for ai, xi in zip(a[use], x_new[use])]) if use.any() else None
            else:  # steer = (new - old) / (mean high - mean low) * function vector
                use = np.ones(len(pairs), bool)
                steer = ((x_new - a) / out["fv_delta"][v])[:, None] * out["fv"][k][v][None]
            if steer is None:
                info["causal"][k] = None
                info["causal_reasons"][k] = ("no held-out (control, draw) pair whose two values both occur among the "
                                             "train samples (a class steer needs both class means)")
                continue
            x = torch.as_tensor(np.stack([S["control_stack"][c] for c in ctrl_of[use]]), device=device)
            info["causal"][k] = causal_test(hooks, x, ctrl_of[use], pairs[use], torch.as_tensor(steer.astype(np.float32), device=device),
                                            k, acts, args, rng, device)
            if info["causal"][k]["function_vector"]["cos_actor"] is None:
                info["causal_reasons"][k] = (f"no cosine: really changing the value did not move the logits on any of its "
                                             f"{int(use.sum())} held-out pairs (the agent's input did not change). There is "
                                             "no true move to compare the steer with")
    # units: the effect size (computed for all variables before, unit_effects) ranks them; the within-base-state
    # association of each unit / spatially pooled channel with the value (eta, r) is a secondary figure
    info["samples"]["unit_effect_draws"] = int(out["unit_effect_draws"][v])
    for k in hooks.hidden:
        if ok:
            P = torch.as_tensor(acts[k][sel], device=device).float()
            P = P.mean((2, 3)) if P.dim() == 4 else P
            r, eta = within_base_assoc(P, y, g)
            out["unit_corr"][k][:, v], out["unit_eta"][k][:, v] = r.cpu().numpy(), eta.cpu().numpy()
        eff = out["unit_effect"][k]
        if eff[:, v].max() > 0:
            spec = eff[:, v] / np.maximum(eff.sum(1), 1e-12)
            info["top_units"][k] = [{"unit": int(u), "effect": float(eff[u, v]), "specificity": float(spec[u]),
                                     "eta": float(out["unit_eta"][k][u, v]) if ok else None,
                                     "r": float(out["unit_corr"][k][u, v]) if ok else None}
                                    for u in np.argsort(-eff[:, v], kind="stable")[:5]]
    return info


def label_units(S, out, names, keep, args, probed):
    """Per hidden layer and unit (conv: channel): its label, the variable with the largest effect (unit_effects)
    among those large in absolute terms too (peak change >= --min-unit-peak-change x the layer's typical peak), with
    that effect in SDs of the unit's natural spread, its peak change relative to the typical peak (`peak_change`) and
    its specificity (that effect / the sum of the unit's effects over all variables); eta and r as secondary figures.
    `status`: "labelled"; "dead" (constant over every sample); "silent" (peak on the unperturbed screens below
    --silent-fraction x the typical peak: nearly off in play, an effect in SDs of its spread means nothing); "weak"
    (no variable reaches --min-unit-effect SD and the absolute threshold). Unlabelled units get var -1 (none).
    probed: Hooks.layers [(name, module path)]; the heads get only their module and shape. Returns {layer: entry}."""
    layers = {}
    for k, module_name in probed:
        shape = S["shapes"][k]
        entry = {"module": module_name, "shape": list(shape)}
        if k not in HEADS:
            alive, peak = out["unit_alive"][k], out["unit_peak"][k]
            eff, eta, corr = out["unit_effect"][k], out["unit_eta"][k], out["unit_corr"][k]
            typical = float(np.median(peak[alive])) if alive.any() else 0.0
            change = out["unit_peak_change"][k] / max(typical, 1e-12)       # (units, V), relative to the typical peak
            silent = alive & (peak < args.silent_fraction * typical)
            large = (eff >= args.min_unit_effect) & (eff > 0) & (change >= args.min_unit_peak_change)
            best = np.where(large, eff, -1.0).argmax(1)
            total = eff.sum(1)
            units = []
            for u, b in enumerate(best.tolist()):
                status = "dead" if not alive[u] else "silent" if silent[u] else "labelled" if large[u, b] else "weak"
                if status == "labelled":
                    units.append({"unit": u, "var": b, "name": names[b], "index": keep[b], "status": status,
                                  "effect": float(eff[u, b]), "peak_change": float(change[u, b]),
                                  "specificity": float(eff[u, b] / total[u]), "eta": float(eta[u, b]), "r": float(corr[u, b])})
                else:  # effect / peak_change: of the variable with the largest effect (0 for a dead unit)
                    b = int(eff[u].argmax())
                    units.append({"unit": u, "var": -1, "name": None, "index": None, "status": status,
                                  "effect": float(eff[u, b]) if alive[u] else 0.0,
                                  "peak_change": float(change[u, b]) if alive[u] else 0.0,
                                  "specificity": None, "eta": None, "r": None})
                units[-1]["peak"] = float(peak[u] / max(typical, 1e-12))
            entry["units"] = units
            entry["dead_units"] = int((~alive).sum())
            entry["silent_units"] = int(silent.sum())
            entry["weak_units"] = sum(u["status"] == "weak" for u in units)
            entry["typical_peak"] = typical
            entry["label_rule"] = {
                "measure": "effect", "unit": "SD of the unit's natural spread", "min_effect": args.min_unit_effect,
                "min_peak_change": args.min_unit_peak_change, "silent_fraction": args.silent_fraction,
                "how": (f"label = the variable with the largest effect (SDs of the unit's natural spread) among those with "
                        f"effect >= {args.min_unit_effect} SD and peak change >= {args.min_unit_peak_change} x the layer's "
                        f"typical peak ({typical:.3g}: the median over its units of their peak activation on the "
                        f"unperturbed screens); a unit whose peak is below {args.silent_fraction} x the typical peak is "
                        "silent, not labelled")}
        layers[k] = entry
    return layers


# ---------------------------------------------------------------- step 7: natural-frame probes (AtariARI's protocol)
NATURAL_CLASSIFIER = ("ridge classifier: ridge regression on the one-hot value (classes seen on the training episodes), "
                      "prediction = argmax; the same read-out as the intervention probes, not AtariARI's classifier "
                      "trained by cross-entropy with Adam")
NATURAL_REGRESSOR = "ridge regression of the value (the intervention probes' fit_ridge, solved for all variables at once)"


def entropy_bits(y) -> float:
    """Entropy (bits) of the empirical distribution of the values y."""
    _, counts = np.unique(y, return_counts=True)
    p = counts / counts.sum()
    return max(0.0, float(-(p * np.log2(p)).sum()))


def natural_split(emu, episode, test_fraction: float, rng):
    """Split natural samples by episode: group = (emulator, episode); groups are drawn at random into the
    held-out set until it holds >= test_fraction of the samples, at least one group stays for training.
    With a single group (one emulator playing one episode) a split by emulator cannot help (each emulator's
    steps are already split into its episodes), so the fallback is 4 blocks of consecutive steps (frames next
    to a block's edge are near-duplicates of the other side's). emu, episode: (n,) int in step order.
    Returns (groups (n,) int, is_test (n,) bool, description for results.json)."""
    n = len(emu)
    _, groups = np.unique(np.stack([emu, episode], 1), axis=0, return_inverse=True)
    groups = groups.reshape(-1)
    desc = {"by": "episode", "group": "(emulator, episode)", "fallback": None}
    if groups.max() + 1 < 2:
        groups = (np.arange(n) * 4) // n
        desc.update(by="time_block", group="one of 4 blocks of consecutive steps of the only episode",
                    fallback="only 1 (emulator, episode) group in the rollouts, and splitting by emulator gives no more "
                             "groups than that: split into 4 blocks of consecutive steps instead (raise --rollout-steps "
                             "or --num-envs for a split by episode)")
    n_groups = int(groups.max() + 1)
    sizes = np.bincount(groups, minlength=n_groups)
    test = []
    for g in rng.permutation(n_groups)[:-1]:  # add a group while it brings the held-out share closer to test_fraction
        held = sizes[test].sum()
        if test and abs(held + sizes[g] - test_fraction * n) >= abs(held - test_fraction * n):
            break
        test.append(int(g))
    is_test = np.isin(groups, test)
    desc.update(groups=n_groups, test_groups=len(test), train_groups=n_groups - len(test),
                n_train=int((~is_test).sum()), n_test=int(is_test.sum()), test_fraction=test_fraction)
    return groups, is_test, desc


def _ridge_path(X, K, a, b, Y):
    """Ridge from rows a to rows b for every alpha at once, on features centred on rows a (fit_ridge's model).
    X (n, d) float64 tensor, or K (n, n) float64 Gram matrix of the rows (dual form, for d > len(a)); a, b: row
    index tensors; Y (n, c) float64. Returns (P, Q, s, scale, ym): the prediction for rows b at relative
    alpha is P @ (Q / (s + alpha * scale)[:, None]) + ym."""
    ym = Y[a].mean(0)
    if K is not None:  # dual: eigenvectors of the centred Gram matrix of rows a
        Kaa, Kba = K[a][:, a], K[b][:, a]
        Kba = Kba - Kba.mean(1, keepdim=True) - Kaa.mean(0) + Kaa.mean()
        Kaa = Kaa - Kaa.mean(0) - Kaa.mean(1, keepdim=True) + Kaa.mean()
        s, U = torch.linalg.eigh(Kaa)
        return Kba @ U, U.T @ (Y[a] - ym), s, torch.trace(Kaa) / len(a) + 1e-12, ym
    mu = X[a].mean(0)  # primal: eigenvectors of the centred covariance of rows a (the same fit)
    Za = X[a] - mu
    s, V = torch.linalg.eigh(Za.T @ Za)
    return (X[b] - mu) @ V, V.T @ (Za.T @ (Y[a] - ym)), s, (Za ** 2).sum() / len(a) + 1e-12, ym


def ridge_many(X, Y, blocks, tr, te, groups, alphas=RIDGE_ALPHAS):
    """fit_ridge for many targets at once (one eigendecomposition per fold instead of a solve per target and
    alpha): ridge on features centred on the training rows, alpha relative to trace(K)/n, chosen per block of
    columns (a classifier's one-hot columns form one block) by leave-groups-out CV on the training rows
    (min(3, groups) folds, fit_ridge's fold rule). X (n, d) float tensor; Y (n, c) numpy (only rows tr are fitted);
    blocks (c,) int; tr, te: row indices; groups (n,). Returns the predictions for rows te, (len(te), c) numpy."""
    dev = X.device
    Y = torch.as_tensor(np.asarray(Y, np.float64), device=dev)
    Xc = X - X.mean(0)
    dual = X.shape[1] > len(tr)
    K = (Xc @ Xc.T).double() if dual else None
    Xd = None if dual else Xc.double()
    n_blocks = int(blocks.max()) + 1
    best = np.full(n_blocks, len(alphas) // 2)
    g = groups[tr]
    uniq = np.unique(g)
    n_folds = min(3, len(uniq))
    if n_folds >= 2:
        fold_of = {x: i % n_folds for i, x in enumerate(uniq)}
        folds = np.array([fold_of[x] for x in g])
        err = torch.zeros(len(alphas), Y.shape[1], dtype=torch.float64, device=dev)
        for f in range(n_folds):
            a, b = (torch.as_tensor(tr[folds != f], device=dev), torch.as_tensor(tr[folds == f], device=dev))
            P, Q, s, scale, ym = _ridge_path(Xd, K, a, b, Y)
            for ai, alpha in enumerate(alphas):
                err[ai] += ((P @ (Q / (s + alpha * scale)[:, None]) + ym - Y[b]) ** 2).sum(0)
        onehot = np.zeros((Y.shape[1], n_blocks))
        onehot[np.arange(Y.shape[1]), blocks] = 1
        best = (err.cpu().numpy() @ onehot).argmin(0)
    P, Q, s, scale, ym = _ridge_path(Xd, K, torch.as_tensor(tr, device=dev), torch.as_tensor(te, device=dev), Y)
    pred = torch.zeros(len(te), Y.shape[1], dtype=torch.float64, device=dev)
    col_alpha = best[blocks]
    for ai in np.unique(col_alpha):
        cols = torch.as_tensor(np.nonzero(col_alpha == ai)[0], device=dev)
        pred[:, cols] = P @ (Q[:, cols] / (s + alphas[ai] * scale)[:, None]) + ym[cols]
    return pred.cpu().numpy()


def natural_features(hooks, obs, batch_size: int, device):
    """Every hooked layer's output on the uint8 stacks obs (n, 4, 84, 84), flattened: {layer: (n, d) float32}."""
    feats = {k: [] for k, _ in hooks.layers}
    for i in range(0, len(obs), batch_size):
        out = hooks.run(torch.as_tensor(obs[i:i + batch_size], device=device))
        for k, _ in hooks.layers:
            feats[k].append(out[k].reshape(len(out[k]), -1).float())
    return {k: torch.cat(v) for k, v in feats.items()}


def receptive_fields(agent: nn.Module, side: int = 84) -> dict:
    """{conv-map layer of probed_layers: (size, stride, start)} in input pixels: position (i, j) of that map sees the
    rows start + i * stride ... start + i * stride + size - 1 of the side x side input (the same for columns; clip to
    the frame: what lies outside is padding), from the kernels, strides and padding of the convs and max pools before
    it, in forward order. start < 0 where padding comes before the first pixel: the IMPALA CNN's 3x3 convs pad 1, its
    pools as ImpalaConvSequence.pool_padding, which depends on the map's side (hence `side`). A residual block's
    output sees what its conv path sees (the skip sees less): its two 3x3 convs add 2 x 2 x stride to the size. Source:
    the recurrence size += (kernel - 1) * stride, start -= padding before * stride, stride *= the layer's stride
    (Araujo et al. 2019, "Computing receptive fields of CNNs"). On 84x84 frames, the Nature CNN: relu1 (8, 4, 0), relu2
    (20, 8, 0), relu3 (36, 8, 0); the IMPALA CNN: seq0.pool (5, 2, -1), seq0.res0 (13, 2, -5), seq0.res1 (21, 2, -9),
    seq1.pool (29, 4, -11), seq1.res0 (45, 4, -19), seq1.res1 (61, 4, -27), seq2.pool (77, 8, -35), seq2.res0 (109, 8,
    -51), seq2.res1 and relu (141, 8, -67)."""
    state, after, n = (1, 1, 0), {}, side  # (size, stride, start) after each module and its ancestors; the map's side
    for path, m in agent.network.named_modules():
        if isinstance(m, nn.Flatten):
            break
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            kernel, stride, pad = (x if isinstance(x, int) else x[0] for x in (m.kernel_size, m.stride, m.padding))
            in_sequence = isinstance(agent.network.get_submodule(path.rpartition(".")[0]), ImpalaConvSequence)
            pads = ImpalaConvSequence.pool_padding(n) if isinstance(m, nn.MaxPool2d) and in_sequence else (pad, pad)
            size, jump, start = state
            state = (size + (kernel - 1) * jump, jump * stride, start - pads[0] * jump)
            n = (n + sum(pads) - kernel) // stride + 1
        parts = path.split(".")
        for d in range(1, len(parts) + 1):  # a container's field is that of its last part
            after[".".join(parts[:d])] = state
    return {k: after[k] for k, _ in probed_layers(agent) if k in after}


def top_natural_frames(feats, shapes, obs, where, ram, k: int, hidden, fields, fc_weight, candidates: int = 8):
    """Step 7, for the atlas: per hidden unit / conv channel, the k unedited frames that activate it most.
    feats {layer: (n, d) float tensor} (natural_features of the trained agent); shapes {layer: (C, H, W) or
    (units,)}; obs (n, 4, 84, 84) uint8; where (n, 3) int (emulator, episode, step); ram (n, 128) uint8; hidden: the
    hidden layers (Hooks.hidden); fields: receptive_fields; fc_weight (units, C * H * W) the fc layer's weight on the
    flattened last conv map (the fc's input: relu3 in the Nature CNN, relu in the IMPALA CNN). A conv channel's
    activation on a frame is its maximum over positions, and its box is the receptive field of that position (clipped
    to the frame); an fc unit (linear in the last map before its ReLU) gets the receptive field of the last map's
    position that adds most to it on that frame (sum over channels of weight x activation). Frames are taken best
    first among the unit's `candidates` x k most active ones, skipping a frame whose 4-frame stack inside the box equals that of
    one already taken (a static part of the screen, e.g. the score, would otherwise fill all k with one picture).
    Stacks that still hold a blank frame of a reset (the first 3 steps of an episode) are left out: on them most
    units peak, which says nothing about play. A unit never above 0 on the other frames gets frame -1.
    Returns {"stacks" (F, 4, 84, 84) uint8: the frames used, once each, "rows" (F,) their rows of obs, "where" (F, 3)
    int32, "ram" (F, 128) uint8, and per hidden layer "frame" (units, k) int32 (row of stacks or -1), "value" (units, k) float32 (-inf
    where frame is -1), "box" (units, k, 4) int16 [row0, row1, col0, col1] in the 84x84 frame, inclusive}."""
    k, m = min(k, len(obs)), min(k * candidates, len(obs))
    top, used = {}, set()
    after_reset = (obs.reshape(len(obs), obs.shape[1], -1).max(-1) == 0).any(1)  # a blank frame in the stack
    last_map = [layer for layer in hidden if len(shapes[layer]) == 3][-1]  # what the fc layer reads, flattened

    def boxes(layer, pos):  # flat positions of the layer's (H, W) map -> [row0, row1, col0, col1] in the frame
        size, stride, start = fields[layer]
        r0, c0 = start + (pos // shapes[layer][2]) * stride, start + (pos % shapes[layer][2]) * stride
        return np.stack([np.maximum(r0, 0), np.minimum(r0 + size - 1, 83), np.maximum(c0, 0), np.minimum(c0 + size - 1, 83)], -1)
    for layer in hidden:
        A = feats[layer]
        if len(shapes[layer]) == 3:  # conv: the channel's best position on each frame
            C, H, W = shapes[layer]
            best, pos = A.reshape(len(A), C, H * W).max(-1)
        else:
            best, pos = A, torch.zeros_like(A, dtype=torch.long)
        best = best.masked_fill(torch.as_tensor(after_reset, device=best.device)[:, None], float("-inf"))
        value, frame = best.topk(m, dim=0)                                 # (m, units), best first
        pos = pos.gather(0, frame).cpu().numpy().T
        value, frame = value.cpu().numpy().T.astype(np.float32), frame.cpu().numpy().T.astype(np.int64)
        if len(shapes[layer]) == 3:
            box = boxes(layer, pos)
        else:  # the last map's position that adds most to the unit: C x (H * W) contributions per (unit, candidate frame)
            C, H, W = shapes[last_map]
            w = fc_weight.detach().reshape(len(frame), C, H * W)
            a = feats[last_map].reshape(len(feats[last_map]), C, H * W)
            box = boxes(last_map, np.stack([(w[u][None] * a[torch.as_tensor(frame[u], device=a.device)]).sum(1).argmax(1).cpu().numpy()
                                            for u in range(len(frame))]))
        out = {"frame": np.full((len(frame), k), -1, np.int64), "value": np.full((len(frame), k), -np.inf, np.float32),
               "box": np.zeros((len(frame), k, 4), np.int16)}
        for u in range(len(frame)):
            seen, j = set(), 0
            for f, a, (r0_, r1_, c0_, c1_) in zip(frame[u], value[u], box[u]):
                if not a > 0 or j == k:
                    break
                crop = obs[f, :, r0_:r1_ + 1, c0_:c1_ + 1].tobytes()
                if crop in seen:
                    continue
                seen.add(crop)
                out["frame"][u, j], out["value"][u, j], out["box"][u, j] = f, a, (r0_, r1_, c0_, c1_)
                j += 1
        used.update(out["frame"][out["frame"] >= 0].tolist())
        top[layer] = out
    rows = np.array(sorted(used), dtype=np.int64)
    new_id = np.full(len(obs) + 1, -1, np.int64)  # old row -> row of stacks; index -1 stays -1
    new_id[rows] = np.arange(len(rows))
    for layer in hidden:
        top[layer]["frame"] = new_id[top[layer]["frame"]].astype(np.int32)
    top.update(stacks=obs[rows], rows=rows, where=where[rows].astype(np.int32), ram=ram[rows])
    return top


def natural_probes(hooks, model_kwargs, nat, variables, args, rng, device):
    """Step 7, AtariARI's probing protocol (Anand et al. 2019) beside the interventions: read each variable off
    every layer's activations on unedited frames of the pixel agent's own rollouts (step 2: epsilon-random
    actions, noop starts), labelled with the RAM value at that step; exact duplicate stacks dropped; split by
    episode (natural_split); variables whose values have < --natural-min-entropy bits dropped. Categorical
    variables: NATURAL_CLASSIFIER, weighted F1 (+ accuracy); ordinal: NATURAL_REGRESSOR, R^2. Baselines per
    variable and layer: the same fit on shuffled training labels (--control-draws permutations, mean), and the
    same architecture with random weights (the agent's class, Agent or ImpalaAgent, built from model_kwargs under
    torch.manual_seed(--random-network-seed): Agent's layer_init, the IMPALA CNN PyTorch's default init; hooked the
    same way).
    Also, with --top-frames > 0, the frames that activate each hidden unit most (top_natural_frames).
    nat: collect_base_states' "natural". Returns ({variable name: {layer: scores or reason}}, summary, top frames
    or None)."""
    t0 = time.time()
    first = {}
    for i in range(len(nat["obs"]) - 1, -1, -1):  # first occurrence of every distinct stack
        first[hashlib.blake2b(nat["obs"][i].tobytes(), digest_size=16).digest()] = i
    rows = np.array(sorted(first.values()))
    obs, ram = nat["obs"][rows], nat["ram"][rows]
    groups, is_test, split = natural_split(nat["emu"][rows], nat["episode"][rows], args.test_fraction, rng)
    tr, te = np.nonzero(~is_test)[0], np.nonzero(is_test)[0]
    # targets: one column per ordinal variable, one-hot columns per categorical one, then its shuffled copies;
    # every (variable, fit) is one block of columns with its own alpha
    cols, blocks, plan, reasons, ent = [], [], {}, {}, {}
    n_cols, n_rand = 0, 0
    perms = [rng.permutation(len(tr)) for _ in range(args.control_draws)]
    for var in variables:
        name, y = var["public"]["name"], ram[:, var["index"]].astype(np.int64)
        ent[name] = entropy_bits(y)
        if ent[name] < args.natural_min_entropy:
            reasons[name] = (f"dropped: the entropy of its values on the natural frames is {ent[name]:.2f} bits "
                             f"< {args.natural_min_entropy} (AtariARI's threshold)")
        elif len(np.unique(y[tr])) < 2:
            reasons[name] = "not scored: it takes one value on the training episodes"
        elif not var["categorical"] and np.ptp(y[te]) == 0:
            reasons[name] = "not scored: its value is constant on the held-out episodes (R^2 undefined)"
        if name in reasons:
            continue
        classes = np.unique(y[tr]) if var["categorical"] else None
        target = (y[:, None] == classes[None]).astype(np.float64) if var["categorical"] else y[:, None].astype(np.float64)
        width = target.shape[1]
        plan[name] = {"y": y, "classes": classes, "cols": [], "random_cols": np.arange(n_rand, n_rand + width)}
        n_rand += width
        for p in [None] + perms:
            t = target.copy()
            if p is not None:
                t[tr] = target[tr][p]
            plan[name]["cols"].append(np.arange(n_cols, n_cols + width))
            blocks += [len(cols)] * width
            cols.append(t)
            n_cols += width
    Y, blocks = (np.concatenate(cols, 1), np.array(blocks)) if cols else (None, None)
    true_cols = np.concatenate([plan[name]["cols"][0] for name in plan]) if plan else None

    def score(pred_cols, name):
        v = plan[name]
        y = v["y"][te]
        if v["classes"] is not None:
            pred = v["classes"][pred_cols.argmax(1)]
            return weighted_f1(pred, y), float((pred == y).mean())
        return float(1 - ((y - pred_cols[:, 0]) ** 2).sum() / ((y - y.mean()) ** 2).sum()), None

    feats = natural_features(hooks, obs, args.batch_size, device)
    top, fields = None, receptive_fields(hooks.agent)
    if args.top_frames > 0:
        shapes = {k: tuple(v.shape[1:]) for k, v in hooks.run(torch.as_tensor(obs[:1], device=device)).items()}
        where = np.stack([nat["emu"][rows], nat["episode"][rows], nat["step"][rows]], 1)
        top = top_natural_frames(feats, shapes, obs, where, ram, args.top_frames, hooks.hidden, fields,
                                 hooks.agent.network.fc.weight)
        top["natural_rows"] = rows[top.pop("rows")]  # rows of `nat`, for the label-picture check
    pred_t = {k: ridge_many(feats[k], Y, blocks, tr, te, groups) for k, _ in hooks.layers} if plan else {}
    del feats
    pred_r = []  # per random-weights network: {layer: predictions of the true labels' columns}
    for seed in range(args.random_network_seed, args.random_network_seed + args.random_networks):
        with torch.random.fork_rng(devices=[]):  # the rest of the run's torch draws stay as they were without step 7
            torch.manual_seed(seed)
            random_agent = type(hooks.agent)(**model_kwargs).to(device).eval()
        feats = natural_features(Hooks(random_agent), obs, args.batch_size, device)
        pred_r.append({k: ridge_many(feats[k], Y[:, true_cols], np.unique(blocks[true_cols], return_inverse=True)[1].reshape(-1),
                                     tr, te, groups) for k, _ in hooks.layers} if plan else {})
        del feats
    out = {var["public"]["name"]: {} for var in variables}
    for k, _ in hooks.layers:
        for var in variables:
            name = var["public"]["name"]
            entry = {"metric": "weighted_f1" if var["categorical"] else "r2", "n_train": int(len(tr)), "n_test": int(len(te))}
            if name in reasons:
                entry.update(score=None, control=None, random_network=None, reason=reasons[name])
            else:
                c = plan[name]["cols"]
                s, acc = score(pred_t[k][:, c[0]], name)
                ctrl = [score(pred_t[k][:, cc], name)[0] for cc in c[1:]]
                rand = [score(p[k][:, plan[name]["random_cols"]], name) for p in pred_r]
                entry.update(score=s, control=float(np.mean(ctrl)) if ctrl else None,
                             control_std=float(np.std(ctrl)) if ctrl else None, control_scores=ctrl,
                             random_network=float(np.mean([r[0] for r in rand])),
                             random_network_std=float(np.std([r[0] for r in rand])),
                             random_network_seeds=[r[0] for r in rand])
                if acc is not None:
                    values, counts = np.unique(plan[name]["y"][te], return_counts=True)
                    entry.update(accuracy=acc, random_network_accuracy=float(np.mean([r[1] for r in rand])),
                                 held_out_values=int(len(values)), majority_share=float(counts.max() / counts.sum()))
            out[name][k] = entry
    summary = {
        "run": True, "protocol": "AtariARI (Anand et al. 2019): a linear read-out of each RAM variable from every layer, on "
                    "unedited frames of the agent's own play, split by episode, low-entropy variables dropped",
        "frames": "every 4-frame stack the pixel agent saw in step 2's rollouts (--num-envs x --rollout-steps agent "
                  "steps, noop starts, FIRE after a reset or a lost life, --epsilon random actions), labelled with the "
                  "RAM at that step; exact duplicate stacks dropped",
        "samples": int(len(rows)), "duplicates_dropped": int(len(nat["obs"]) - len(rows)), "split": split,
        "classifier": NATURAL_CLASSIFIER, "regressor": NATURAL_REGRESSOR,
        "control": f"the same fit on shuffled training labels, mean of {args.control_draws} permutations",
        "random_network": {"seed": args.random_network_seed,
                           "seeds": list(range(args.random_network_seed, args.random_network_seed + args.random_networks)),
                           "how": ("the same IMPALA CNN, freshly initialised by PyTorch's default init"
                                   if isinstance(hooks.agent, ImpalaAgent) else "the same Agent, freshly initialised by "
                                   "its layer_init (orthogonal weights, zero biases)") + " under torch.manual_seed(seed), hooked the "
                                  "same way; probed identically; random_network = the mean score over the seeds, "
                                  "random_network_std their SD"},
        "min_entropy_bits": args.natural_min_entropy, "entropy_bits": ent,
        "dropped": [{"name": var["public"]["name"], "index": var["index"], "entropy_bits": ent[var["public"]["name"]],
                     "reason": reasons[var["public"]["name"]]} for var in variables if var["public"]["name"] in reasons],
        "top_frames": {"per_unit": min(args.top_frames, len(rows)), "frames": int(len(top["stacks"])),
                       "receptive_field": {k: {"size": size, "stride": stride, "start": start}
                                           for k, (size, stride, start) in fields.items()},
                       "how": "per hidden unit / conv channel, the natural frames (above) on which the trained agent's "
                              "activation is largest (a conv channel: its largest position, boxed by that position's "
                              "receptive field), each showing other pixels in the box than the ones before it; stacks "
                              "holding a reset's blank frame left out; activations.npz top_*"} if top is not None else None,
        "seconds": time.time() - t0}
    return out, summary, top


# Verdicts (results.json variables[].verdict). A score counts as decodable only when it beats the best of its
# control draws (every shuffled-label permutation, every random-weights seed: the controls' spread is inside the bar,
# not averaged away) by DECODE_MARGIN: 0.05, above the 0.04 that scores move between torch thread counts on the
# shipped 10M pair (a smaller lead is numerical noise).
DECODE_MARGIN = 0.05
DECODE_RULE = (f"decodable when the score beats the best of its control draws by at least {DECODE_MARGIN}: the draws are "
               "every shuffled-label fit (--control-draws permutations) and, on natural frames, every random-weights "
               f"network (--random-networks seeds), so the controls' spread across permutations and seeds is in the bar; "
               f"{DECODE_MARGIN} is above the 0.04 the scores move between torch thread counts")


STEER_RULE = ("steers the policy when the function vector's cosine with the true logit move is positive and above the "
              "random directions' mean + 2 SD (SD floored at 0.05); 'against' when negative and below their mean - 2 SD")


def decode_verdict(entry, controls):
    """Is a probe score (a natural or intervention entry: score, control_scores, ...) beyond its controls (DECODE_RULE)?
    controls: [(name, key of entry's list of that control's draw scores)]. -> {decodable (None: no score), margin, bar
    (the best control draw), lead (score - bar), binding (the control the bar comes from), reason (a sentence when not
    decodable, or why there is no score)}."""
    score = entry.get("score")
    if score is None:
        return {"decodable": None, "margin": DECODE_MARGIN, "bar": None, "lead": None, "binding": None,
                "reason": entry.get("reason") or "not scored"}
    got = [(max(entry[key]), name) for name, key in controls if entry.get(key)]
    if not got:
        return {"decodable": None, "margin": DECODE_MARGIN, "bar": None, "lead": None, "binding": None,
                "reason": "no control score"}
    bar, name = max(got)
    lead = score - bar
    out = {"decodable": bool(lead >= DECODE_MARGIN), "margin": DECODE_MARGIN, "bar": float(bar), "lead": float(lead),
           "binding": name, "reason": None}
    if not out["decodable"]:
        out["reason"] = (f"the {name}'s best draw scores {bar:.2f}: the score {score:.2f} leads it by {lead:.2f} < "
                         f"{DECODE_MARGIN}")
        if entry.get("majority_share") is not None and entry["majority_share"] >= 0.9:
            out["reason"] += (f"; {entry['majority_share']:.0%} of the held-out frames hold one value "
                              f"({entry.get('held_out_values')} distinct), so any read-out scores high")
    return out


def steer_verdict(c):
    """Does adding the function vector at a layer move the policy the way really changing the value does, beyond
    random directions of the same norm (STEER_RULE)? c: causal_test's result or None. -> {steers: "with" | "against" |
    "unclear" | None (no test), cos, random_mean, random_sd (floored), reason}."""
    f = None if not c else c["function_vector"].get("cos_actor")
    if f is None:
        return {"steers": None, "cos": None, "random_mean": None, "random_sd": None, "reason": "no cosine (no causal test)"}
    r = c["random"].get("cos_actor") or {}
    m, sd = r.get("mean", 0.0), max(r.get("std", 0.0), 0.05)
    steers = "with" if f > m + 2 * sd and f > 0 else "against" if f < m - 2 * sd and f < 0 else "unclear"
    return {"steers": steers, "cos": float(f), "random_mean": float(m), "random_sd": float(sd),
            "reason": None if steers == "with" else f"cos {f:.2f} against random directions {m:.2f} ± {sd:.2f}"}


POSITION_ROLES = ("x-position", "y-position")


def masks_from_background(ref, held):
    """What a held byte draws, frame by frame: ref (H, W) the frame with the byte at its own value, held a list of
    (H, W) frames with it held at other values. The background is each pixel's most common value over [ref] + held
    (an object is in one place per frame; ties go to ref). -> (ref's mask, [each held frame's mask]) of the pixels
    that differ from it, (H, W) bool."""
    frames = np.stack([ref] + list(held))
    same = (frames[:, None] == frames[None]).sum(1)             # per frame and pixel: frames that agree with it
    background = np.take_along_axis(frames, same.argmax(0)[None], 0)[0]
    masks = frames != background
    return masks[0], list(masks[1:])


def bbox_of(mask) -> list:
    """[row0, row1, col0, col1] (inclusive) of a non-empty (H, W) bool mask."""
    rows, cols = np.nonzero(mask)
    return [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())]


def object_mask(ale, state, actions, index, own, values, buf):
    """Where the object a byte draws is on the frame of `state`, found much as extract_ram_vars.py's position test
    finds it (which holds 4 frames, for objects drawn on alternate frames): hold the byte (setRAM before each frame)
    for 2 frames at its own value and at each of `values`; of the frames where something changed, the own-value
    frame's pixels that differ from the background (masks_from_background) are where the object was. -> (H, W) bool
    mask on the raw screen, or None when no pixel qualifies (the byte moved nothing there, e.g. no ball in play)."""
    def screen(value):
        ale.restoreState(state)
        for a in actions:
            ale.setRAM(index, int(value))
            ale.act(a)
        ale.getScreen(buf)
        return buf.copy()
    ref = screen(own)
    held = [h for h in (screen(v) for v in values if v != own) if (h != ref).any()]
    if not held:
        return None
    mask = masks_from_background(ref, held)[0]
    return mask if mask.any() else None


def object_centre(ale, state, actions, index, own, values, buf):
    """(row, col) on the raw screen of the centre of object_mask, or None."""
    mask = object_mask(ale, state, actions, index, own, values, buf)
    if mask is None:
        return None
    rows, cols = np.nonzero(mask)
    return float(rows.mean()), float(cols.mean())


TRACK_VALUES = 8   # values a position byte is held at to draw its track


def screen_track(emu, bases, index: int, values, n_values: int = TRACK_VALUES, max_bases: int = 8) -> dict:
    """The track of a position byte: where its object is drawn as the byte is held at several values, one box per
    value (a line of boxes), on the first base state (of `max_bases`) where at least 3 values draw something.
    Each value of an even spread of `values` (ints, the values its samples reached) is held (setRAM before every
    frame) through the last agent step (4 frames) of the base's replay, so that the object is drawn at the held value
    but has had no time to change the rest of the game (a ball bouncing elsewhere); the raw frame is that step's
    (maxed, gray). A value's box bounds what differs from the background (masks_from_background over those frames and
    the unpinned one), and "own" the unpinned frame's. The picture
    of base b is results' base_rgb[b], the same replay unpinned. -> {"base": b, "own": {"value", "bbox"}, "boxes":
    [{"value", "bbox": [row0, row1, col0, col1] inclusive, raw screen}], "axis": "x" | "y" (along which the boxes'
    centres spread more), "how"}, or {"base": None, "boxes": [], "reason"}."""
    vals = sorted(set(int(v) for v in values))
    if len(vals) < 3:
        return {"base": None, "boxes": [], "reason": f"its samples reached {len(vals)} value(s): a track needs 3"}
    picks = [vals[k] for k in sorted(set(np.linspace(0, len(vals) - 1, n_values).astype(int).tolist()))]

    def last_step_held(state, actions, pin):
        emu.ale.restoreState(state)
        for a in actions[:-1]:
            emu.step(int(a))
        return emu.step(int(actions[-1]), pin)[0], int(emu.ale.getRAM()[index])

    for b in range(min(max_bases, len(bases["states"]))):
        state, actions = bases["states"][b], bases["actions"][b]
        ref, own = last_step_held(state, actions, None)
        held = {v: last_step_held(state, actions, (index, v))[0] for v in picks if v != own}
        own_mask, masks = masks_from_background(ref, list(held.values()))
        boxes = [{"value": v, "bbox": bbox_of(m)} for v, m in zip(held, masks) if m.any()]
        if len(boxes) < 3:
            continue
        centres = np.array([[(bx["bbox"][0] + bx["bbox"][1]) / 2, (bx["bbox"][2] + bx["bbox"][3]) / 2] for bx in boxes])
        return {"base": b, "own": {"value": own, "bbox": bbox_of(own_mask) if own_mask.any() else None},
                "boxes": boxes, "axis": "x" if np.ptp(centres[:, 1]) >= np.ptp(centres[:, 0]) else "y",
                "how": "held through the base's last agent step (setRAM before each of its 4 frames); box: what differs "
                       "from the background (each pixel's most common value over the held and unpinned frames)"}
    return {"base": None, "boxes": [], "reason": f"holding it at {len(picks)} values drew nothing at 3 values or more on "
                                                 f"the first {min(max_bases, len(bases['states']))} base states"}


def label_picture_agreement(layers, top, variables, nat, game, seed: int, n_values: int = 6):
    """Does a labelled unit's picture show its label? For every labelled hidden unit and each of its top natural
    frames (top_natural_frames): find the object its byte draws on that frame (object_mask, on the emulator state the
    frame was taken from, holding the byte at up to `n_values` other values seen in play) and check it against the
    frame's box (the receptive field of the unit's most active position; an fc unit: of the last conv map's position
    that adds most to it), both in the 84x84 frame. A position byte (role x- or y-position) agrees when its object's
    centre lies in the box; any other byte (bricks, digits, ...) when some of its object lies in the box. A frame where the byte
    moves nothing counts as not agreeing (its object is not on screen where the unit fires most). Unit: agreement =
    the share of its top frames that agree; it agrees when >= 0.5. Chance: the same test of the box against the
    object found on the other checked frames of the same byte, averaged over the checked frames.
    Adds units[u]["agreement"] {kind ("centre" | "overlap"), frames, agree, share, found, agrees} and per layer
    "agreement" {units, agreeing, share, frames, frames_agreeing, chance, by_variable {name: [units, agreeing]}: the
    position-labelled units; "all": the same over every labelled unit; how} to `layers` (in place), every layer with
    units (label_units: the hidden layers)."""
    emu = Emulator(game, seed)
    buf = np.zeros(emu.ale.getScreenDims(), np.uint8)
    H, W = buf.shape
    rows84, cols84 = (np.arange(H) * 84 // H), (np.arange(W) * 84 // W)
    objects = {}  # (natural row, var slot) -> (centre (row, col), rows, cols of the object's pixels) in 84x84, or None

    def find(n, j):
        if (n, j) not in objects:
            idx = variables[j]["index"]
            seen = np.unique(nat["ram"][:, idx])
            values = seen[np.linspace(0, len(seen) - 1, min(n_values + 1, len(seen))).astype(int)].tolist()
            mask = object_mask(emu.ale, nat["state"][n], [emu.action_set[int(nat["action"][n])]] * 2, idx,
                               int(nat["ram"][n, idx]), values, buf)
            if mask is None:
                objects[(n, j)] = None
            else:
                r, c = np.nonzero(mask)
                objects[(n, j)] = ((r.mean() * 84 / H, c.mean() * 84 / W), rows84[r], cols84[c])
        return objects[(n, j)]

    def inside(obj, b, centre):
        if obj is None:
            return False
        if centre:
            (r, c), _, _ = obj
            return b[0] - 0.5 <= r <= b[1] + 0.5 and b[2] - 0.5 <= c <= b[3] + 0.5
        _, r, c = obj
        return bool(((r >= b[0]) & (r <= b[1]) & (c >= b[2]) & (c <= b[3])).any())
    how = ("per labelled unit: the share of its top natural frames on which the object its byte draws (found by setting "
           "the byte to other values on that frame's emulator state: where the screen changes) lies in the frame's box "
           "(a position byte: the object's centre; any other byte: some of its pixels); a unit agrees when >= half of "
           "its frames do; chance: the same box against the byte's object on the other checked frames")
    for k in [k for k, entry in layers.items() if "units" in entry]:
        checked = []
        for u in layers[k]["units"]:
            if u["var"] < 0:
                continue
            frames = [(int(f), top[k]["box"][u["unit"], i].tolist()) for i, f in enumerate(top[k]["frame"][u["unit"]]) if f >= 0]
            if not frames:
                continue
            centre = variables[u["var"]]["public"]["role"] in POSITION_ROLES
            found = [find(int(top["natural_rows"][f]), u["var"]) for f, _ in frames]
            agree = [inside(o, b, centre) for o, (_, b) in zip(found, frames)]
            u["agreement"] = {"kind": "centre" if centre else "overlap", "frames": len(frames), "agree": int(sum(agree)),
                              "share": float(np.mean(agree)), "found": int(sum(o is not None for o in found)),
                              "agrees": bool(np.mean(agree) >= 0.5)}
            checked.append((u, [b for _, b in frames], centre))

        def summary(group):
            entry = {"units": len(group)}
            if not group:
                return entry
            chance = []
            for u, boxes, centre in group:
                pool = [o for (n, j), o in objects.items() if j == u["var"] and o is not None]
                chance += [float(np.mean([inside(o, b, centre) for o in pool])) if pool else 0.0 for b in boxes]
            by_var = {}
            for u, _, _ in group:
                by_var.setdefault(u["name"], [0, 0])
                by_var[u["name"]][0] += 1
                by_var[u["name"]][1] += int(u["agreement"]["agrees"])
            entry.update(agreeing=sum(u["agreement"]["agrees"] for u, _, _ in group),
                         frames=sum(u["agreement"]["frames"] for u, _, _ in group),
                         frames_agreeing=sum(u["agreement"]["agree"] for u, _, _ in group),
                         chance=float(np.mean(chance)), by_variable=by_var)
            entry["share"] = entry["agreeing"] / entry["units"]
            return entry
        layers[k]["agreement"] = {**summary([c for c in checked if c[2]]), "all": summary(checked), "how": how}


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


# ---------------------------------------------------------------- main
def main(args: Args):
    t_start = time.time()
    rv, pix, ramck, game, include, out_dir, ram_vars_from = validate_inputs(args)
    env_id = rv["env_id"]
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    agent = pix["model"].to(device)
    timing = {}
    print(f"probe {env_id} ({game}) on {device}", flush=True)

    source = pix.get("source")  # an agent trained elsewhere: compared with its own training pipeline
    if source is not None:
        print(f"[pixel agent] {source['library']} {source['algorithm']} ({source['policy']}), layers "
              + ", ".join(f"{o}={t}" for o, t in source["layer_map"].items())
              + ("" if source["critic"] else "; no critic: the critic layer is all zeros and is not scored"), flush=True)
    t0 = time.time()
    prep = check_preprocessing(game, args.seed) if source is None else check_agent_pipeline(env_id, args.seed, source)
    timing["preprocessing_check_s"] = time.time() - t0
    print(f"[check] this script's observation vs {prep['pipeline']}: {prep}", flush=True)

    # 1. key variables: what the memory agent relies on; without one, what moves the pixel agent's policy when written
    greedy = source is not None and source["actor"] == "Q-values"
    t0 = time.time()
    if ramck is not None:
        observed = list(ramck.get("ram_indices") or rv["selected"])
        ranking, ram_rollout = ram_importance(ramck["model"].to(device), observed, game, args, rng, device)
        unranked = [i for i in rv["selected"] if i not in set(observed)]  # not observed by it (--drop-bitmaps)
        ranked = {"by": "memory-agent importance", "agent": "memory", "metric": "tv", "states": int(len(ram_rollout)),
                  "how": "the memory agent's policy on its own rollout's RAMs, each byte replaced by its value in other "
                         "visited states (a random permutation of the states): mean total variation of the action "
                         "distribution", "unranked": [f"ram[0x{i:02x}]" for i in unranked]}
        did = f"{len(ram_rollout)} memory-agent states, {len(ranking)} bytes ablated"
        if unranked:
            did += f", {len(unranked)} selected bytes it does not observe probed unranked"
    else:
        ranking, ram_rollout, done = pixel_sensitivity(agent, rv, game, args, rng, device, greedy=greedy)
        ranked = {"by": "pixel-policy sensitivity", "agent": "pixel", "metric": "greedy tv" if greedy else "tv",
                  **done, "how": "each byte written into the emulator (before every frame of the 4 agent steps the "
                  "observation needs, the agent's own actions) on base states of a pixel-agent rollout, at other values: "
                  "mean total variation of the pixel agent's " + ("greedy action (a Q-network: 1 when its argmax "
                  "changes)" if greedy else "action distribution") + " against the byte held at its own value, over the draws whose "
                  "byte kept another value (as step 2)"}
        did = (f"{done['states']} pixel-agent base states, {len(ranking)} bytes written ({done['samples']} samples, "
               f"emulation {done['emulation_s']:.1f}s)")
        unranked = []
    ranked["repeats"] = args.importance_repeats
    keep = [s["index"] for s in ranking[: args.top_k or len(ranking)]] + ([] if args.top_k else unranked)
    keep += [i for i in include if i not in keep]
    timing["importance_s"] = time.time() - t0
    print(f"[importance] ranked by {ranked['by']}: {did} in {timing['importance_s']:.1f}s; "
          "top: " + ", ".join(f"{s['name']} tv={s['tv']:.4f}" for s in ranking[:5]), flush=True)
    variables = describe_variables(keep, rv, ranking, args.max_classes)
    names = [v["public"]["name"] for v in variables]
    V = len(variables)

    # 2. base states from the pixel agent, then screens with set RAM values
    t0 = time.time()
    bases = collect_base_states(agent, game, args, rng, device, greedy=greedy)
    B = len(bases["states"])
    test_bases = np.sort(rng.choice(B, max(1, int(round(args.test_fraction * B))), replace=False))
    timing["rollout_s"] = time.time() - t0
    print(f"[rollout] {bases['steps_played']} pixel-agent steps, {bases['eligible']} usable states, {B} base states "
          f"({len(test_bases)} held out) in {timing['rollout_s']:.1f}s", flush=True)
    tasks, meta = plan_samples(bases, variables, np.concatenate([ram_rollout, bases["seen_rams"]]), args, rng)
    hooks = Hooks(agent)
    S = run_samples(hooks, tasks, meta, game, bases, V, args, device)
    N = len(tasks)
    timing.update(samples_s=S["seconds"], emulation_s=S["emulation_seconds"], probe_samples_per_s=N / S["seconds"],
                  frames_emulated=N * 16)
    restore_ok = int(sum(np.array_equal(S["natural_obs"][b], bases["rollout_obs"][b]) for b in range(B)))
    print(f"[samples] {N} samples ({N * 16} frames) in {S['seconds']:.1f}s: {N / S['seconds']:.1f} probe samples/s "
          f"(set RAM -> render -> forward; emulation {S['emulation_seconds']:.1f}s); "
          f"restore+replay reproduced the rollout's observation for {restore_ok}/{B} base states", flush=True)

    T = sample_table(tasks, meta, S, test_bases)

    # 4 + 5. probes, function vectors, causal test, unit labels
    t0 = time.time()
    dims = {k: int(np.prod(S["shapes"][k])) for k, _ in hooks.layers}
    units = {k: S["shapes"][k][0] if len(S["shapes"][k]) == 3 else dims[k] for k in hooks.hidden}
    out = {"fv": {k: np.zeros((V, dims[k]), np.float32) for k, _ in hooks.layers},
           "probe_w": {k: np.zeros((V, dims[k]), np.float32) for k, _ in hooks.layers},
           "probe_b": {k: np.zeros(V, np.float32) for k, _ in hooks.layers}, "fv_delta": np.zeros(V, np.float32),
           "unit_corr": {k: np.zeros((units[k], V), np.float32) for k in hooks.hidden},
           "unit_eta": {k: np.zeros((units[k], V), np.float32) for k in hooks.hidden}}
    eff, out["unit_effect_draws"] = unit_effects(S, T, V, args.unit_max_other_changed, hooks.hidden)
    for key in ("effect", "spread", "alive", "peak", "peak_change"):
        out[f"unit_{key}"] = {k: eff[k][key] for k in hooks.hidden}
    prog = Progress("analysis", V, "variables")
    results_vars = []
    for v, var in enumerate(variables):
        results_vars.append(analyse_variable(v, var, T, S, hooks, out, args, rng, device))
        prog.update(v + 1)
    layers = label_units(S, out, names, keep, args, hooks.layers)
    for k, _ in hooks.layers:
        layers[k]["probe_scores"] = {rv_["name"]: rv_["probe"][k].get("score") for rv_ in results_vars}
    timing["analysis_s"] = time.time() - t0

    # 7. natural-frame probes (AtariARI's protocol): unedited frames of step 2's rollouts, split by episode
    if bases["natural"] is not None:
        natural, natural_summary, top = natural_probes(hooks, pix["model_kwargs"], bases["natural"], variables, args, rng, device)
        timing["natural_s"] = natural_summary["seconds"]
        sp = natural_summary["split"]
        print(f"[natural] {natural_summary['samples']} frames ({natural_summary['duplicates_dropped']} duplicates dropped), "
              f"split by {sp['by']}: {sp['train_groups']} train / {sp['test_groups']} held-out groups ({sp['n_train']}/{sp['n_test']} "
              f"frames); {len(natural_summary['dropped'])} of {V} variables not scored; {timing['natural_s']:.1f}s", flush=True)
    else:
        why = "natural-frame probes not run (--no-natural)"
        natural = {n: {k: {"score": None, "control": None, "random_network": None, "reason": why} for k, _ in hooks.layers} for n in names}
        natural_summary, top = {"run": False, "reason": why}, None
    for rv_ in results_vars:
        rv_["natural"] = natural[rv_["name"]]
    emu = Emulator(game, args.seed)  # the track of each position byte: its object's box at several held values
    for var, rv_ in zip(variables, results_vars):
        if var["public"]["role"] in POSITION_ROLES:
            rv_["screen_track"] = screen_track(emu, bases, var["index"], rv_["samples"]["values"])
    if source is not None and not source["critic"]:  # a Q-network: its all-zero critic layer is not scored
        why = "not scored: the agent has no critic (a Q-network, whose Q-values are the actor layer)"
        for rv_ in results_vars:
            for part in ("probe", "natural"):
                rv_[part]["critic"] = {"metric": rv_[part]["critic"].get("metric"), "score": None, "control": None, "reason": why}
        layers["critic"]["probe_scores"] = dict.fromkeys(names)
    for rv_ in results_vars:  # is each score beyond its controls, does each steer beyond random directions
        rv_["verdict"] = {
            "natural": {k: decode_verdict(rv_["natural"][k], [("shuffled-label control", "control_scores"),
                                                              ("random-weights network", "random_network_seeds")])
                        for k, _ in hooks.layers},
            "interventions": {k: decode_verdict(rv_["probe"][k], [("shuffled-label control", "control_scores")])
                              for k, _ in hooks.layers},
            "steering": {k: steer_verdict(rv_["causal"].get(k)) for k in hooks.hidden}}
    if top is not None:  # do the labels of position units agree with their pictures
        t0 = time.time()
        label_picture_agreement(layers, top, variables, bases["natural"], game, args.seed)
        timing["agreement_s"] = time.time() - t0
        print("[labels] labelled units whose top frames show their byte's object in the box, position bytes / all: " + ", ".join(
            f"{k} {layers[k]['agreement'].get('agreeing', 0)}/{layers[k]['agreement']['units']} / "
            f"{layers[k]['agreement']['all'].get('agreeing', 0)}/{layers[k]['agreement']['all']['units']}" for k in hooks.hidden)
            + f" ({timing['agreement_s']:.1f}s)", flush=True)

    # outputs
    results = {
        "format": "memory-pixel-interp/probe", "version": 5, "env_id": env_id, "game": game,
        "inputs": {"pixel_checkpoint": args.pixel_checkpoint, "ram_checkpoint": args.ram_checkpoint or None,
                   "ram_vars": args.ram_vars, "ram_vars_from": ram_vars_from, "roles_from": args.roles_from or None,
                   "pixel_global_step": pix.get("global_step"), "ram_global_step": (ramck or {}).get("global_step"),
                   "pixel_source": source,  # None: this project's checkpoint; else read_external_agent's "source"
                   "pixel_architecture": pix.get("architecture", "nature-cnn")},  # its layers: results' `layers`
        "args": asdict(args), "device": str(device),
        "screen": {"height": bases["screen_dims"][0], "width": bases["screen_dims"][1], "source": "ale.getScreenDims()"},
        "preprocessing_check": prep, "restore_check": {"base_states": B, "identical_to_rollout": restore_ok},
        "ranking": ranked,  # what step 1 ranked the selected bytes by (memory agent, or the pixel agent's policy)
        "importance": {"metric": ranked["metric"], "states": ranked["states"], "repeats": args.importance_repeats,
                       "ranking": ranking},
        "variables": results_vars, "layers": layers, "natural": natural_summary,
        "verdict_rules": {"decodable": DECODE_RULE, "margin": DECODE_MARGIN, "steering": STEER_RULE},
        "counts": {"samples": N, "base_states": B, "test_base_states": test_bases.tolist(), "variables": V,
                   "drawn": int((T["role"] == 2).sum()), "kept_draws": int(T["changed"].sum())},
        "timing": timing, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # what is written (the analysis above used every sample's maps): conv maps and agent frames of every sample
    # with --save-maps all, else of the unperturbed ones (the screens the units' natural spread comes from)
    map_rows = np.arange(N) if args.save_maps == "all" else np.nonzero(T["role"] <= 1)[0]
    map_rows = map_rows.astype(np.int32)
    results["saved"] = {"maps": args.save_maps, "map_rows": int(len(map_rows)), "samples": N}
    arrays = {
        "layer_names": np.array([k for k, _ in hooks.layers]), "layer_modules": np.array([m for _, m in hooks.layers]),
        "var_index": np.array(keep, np.int16), "var_names": np.array(names),
        "var_kinds": np.array([v["public"]["kind"] for v in variables]),
        "var_addresses": np.array([v["public"]["address"] for v in variables]),
        "var_categorical": np.array([v["categorical"] for v in variables]),
        "sample_var": T["var"].astype(np.int16), "sample_role": T["role"].astype(np.int8),
        "base_id": T["base_id"].astype(np.int32), "is_test": T["is_test"], "kept": T["kept"],
        "value_intended": T["intended"].astype(np.int16), "value_actual": T["actual"].astype(np.int16),
        "value_control": T["control_value"].astype(np.int16), "control_of": T["control_of"].astype(np.int32),
        "n_other_changed": T["n_other"].astype(np.int16), "screen_changed": S["screen_changed"],
        "ram": S["ram"], "obs_last": S["obs_last"][map_rows], "map_rows": map_rows,
        "base_ram": bases["ram"], "base_step": bases["step"].astype(np.int32), "base_actions": np.stack(bases["actions"]).astype(np.int8),
        "base_rgb": S["base_rgb"], "diff_raw": S["diff_raw"], "diff_obs": S["diff_obs"], "fv_delta": out["fv_delta"],
    }
    for k, _ in hooks.layers:
        arrays.update({f"fv_{k}": out["fv"][k], f"probe_w_{k}": out["probe_w"][k], f"probe_b_{k}": out["probe_b"][k]})
        if S["acts"][k].ndim == 4:  # conv: the maps of map_rows, the spatial mean of every sample
            arrays[f"act_{k}"] = S["acts"][k][map_rows]
            arrays[f"act_{k}_mean"] = S["acts"][k].mean((2, 3), dtype=np.float32)
        else:
            arrays[f"act_{k}"] = S["acts"][k]
    for k in hooks.hidden:
        arrays[f"unit_corr_{k}"], arrays[f"unit_eta_{k}"] = out["unit_corr"][k], out["unit_eta"][k]
        arrays[f"unit_effect_{k}"], arrays[f"unit_spread_{k}"] = out["unit_effect"][k], out["unit_spread"][k]
        arrays[f"unit_peak_{k}"], arrays[f"unit_peak_change_{k}"] = out["unit_peak"][k], out["unit_peak_change"][k]
    if top is not None:  # step 7's most activating natural frames, for the atlas
        arrays.update(top_stacks=top["stacks"], top_where=top["where"], top_ram=top["ram"])
        for k in hooks.hidden:
            arrays.update({f"top_frame_{k}": top[k]["frame"], f"top_value_{k}": top[k]["value"], f"top_box_{k}": top[k]["box"]})
    t0 = time.time()
    # a full disk (or a folder gone read-only): the pair written before stays whole, and stays a pair: the new
    # activations.npz takes its name only once results.json is written
    pending = out_dir / f"activations.npz.new-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(pending, lambda f: np.savez(f, **arrays))
        timing.update(save_s=time.time() - t0, total_s=time.time() - t_start)
        write_atomic(out_dir / "results.json", lambda f: f.write(json.dumps(results, indent=1).encode()))
        os.replace(pending, out_dir / "activations.npz")
    except OSError as e:
        pending.unlink(missing_ok=True)
        raise InputError(f"cannot write in --out-dir {out_dir}: {e.strerror or e}")
    print(f"[done] {out_dir / 'activations.npz'} ({(out_dir / 'activations.npz').stat().st_size / 1e6:.1f} MB) and "
          f"{out_dir / 'results.json'} in {timing['total_s']:.1f}s", flush=True)
    report = Path(__file__).with_name("probe_report.py")
    if args.report and not report.exists():
        print(f"warning: {report} not found: no atlas (report.html)", flush=True)
    elif args.report:
        code = subprocess.run([sys.executable, str(report), "--out-dir", str(out_dir)]).returncode
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
