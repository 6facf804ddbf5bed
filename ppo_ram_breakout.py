"""PPO on Atari RAM variables: the "memory agent" of memory-pixel-interp.

A copy-and-adapt of ppo_pixel_breakout.py (itself CleanRL's `cleanrl/ppo_atari.py`): the same PPO, the same
hyperparameter defaults (learning rate included, so the two agents stay comparable), the same frame skip,
episode handling, reward clipping, logging, checkpoints and evaluation mode; only the observation and the
network differ. The file contract (run folder, run.json, checkpoint.pt, eval.json, models) is docs/FORMATS.md.

    python ppo_ram_breakout.py --env-id BreakoutNoFrameskip-v4         # reads ram_vars/BreakoutNoFrameskip-v4.json
    python ppo_ram_breakout.py --ram-vars ram_vars/BreakoutNoFrameskip-v4.json --total-timesteps 50000
    python ppo_ram_breakout.py --resume runs/<run_name>/checkpoint.pt
    python ppo_ram_breakout.py --eval-checkpoint runs/<run_name>/checkpoint.pt --eval-episodes 10

Observation: the 128-byte console RAM after the last of the 4 skipped frames (gymnasium `obs_type="ram"`),
reduced to the bytes listed in `selected` of the RAM-variable file (FORMATS.md section 1, written by
extract_ram_vars.py; default `ram_vars/<env-id>.json`, `/` in the id becoming `_`), in that order, kept
uint8 until the network. The file must be for the same game as --env-id, and is stored whole in every
checkpoint (a resumed or evaluated run never re-reads it).

Input variants (the fair-baseline ablation, docs/results/breakout_memory_ablation/): `--ram-bytes all` observes all
128 bytes (no RAM-variable file needed), `--drop-bitmaps` leaves out the bytes the file calls bitmaps, `--ram-stack N`
observes the last N RAM reads side by side (oldest first; a reset fills all N), `--hidden W` sets the MLP's width.
The checkpoint records them (`ram_indices`, `ram_stack`, `model_kwargs`); a resume or an evaluation uses its own.

Encoding (inside the network, `encode_ram`): each selected byte v becomes 9 features
`[v / 255, bit0, ..., bit7]` (bits least significant first), so both ordinal bytes (positions, score
digits) and bitmap bytes (bricks) are easy to read. `RamAgent`: Linear(9 * n_ram, 256) - tanh -
Linear(256, 256) - tanh, then an actor head (std 0.01) and a critic head (std 1), orthogonal init.

Environment semantics (FORMATS.md section 4), reproduced by the small `AtariRamEnv` below so that they are
those of the pixel agent's `AtariVectorEnv(life_loss_info=True, reward_clipping=False)`, step for step:
  * reset: 0-29 random no-op frames and one FIRE frame (1-30 no-ops when the game has no FIRE);
  * step: the action repeated for 4 frames (stopping at a game over or the frame limit), rewards summed, the RAM read after
    the last frame; sticky actions as the gymnasium id says (`*NoFrameskip-v4`: 0.0, `ALE/*-v5`: 0.25);
  * a lost life is a terminal for learning (`info["life_loss"]`, or-ed into `terminated` by the training
    loop; the game goes on), and the step after any terminal is played with FIRE (NOOP without FIRE),
    as CleanRL's EpisodicLifeEnv + FireResetEnv do, or is the NEXT_STEP autoreset of gymnasium's vector env
    after a game over; either way it is not the agent's decision and is masked out of the PPO update;
  * rewards: sign(r) for learning; the unclipped score per full game (all lives) is `charts/episodic_return`,
    its length in emulator frames `charts/episodic_length`; games are cut (truncated) 108,000 frames after
    the reset (counted from the end of the reset, as AtariVectorEnv counts).

The envs are vectorised by `SplitVectorEnv` (below): `--env-processes` slices of gymnasium SyncVectorEnvs
stepped at the same time, this process stepping the first slice (default: as many slices as usable cores;
1: one SyncVectorEnv). The games are the same step for step whatever the number; emulation, which bounds this
agent on a CPU, runs on every core (raw env x1.51 on 2 cores, training x1.09: bench/README.md). Torch then uses
the cores the env processes leave (`--torch-threads`, at least 1). `--async-envs` uses gymnasium's
AsyncVectorEnv instead (a process and a pipe message per env: no faster than one process on 2 cores).

Beyond CleanRL: `--ram-vars`, checkpoints (`--save-interval`, at the end, on Ctrl-C or SIGTERM), `--resume`,
an evaluation mode (`--eval-checkpoint`, `--eval-episodes`, `--eval-greedy`, `--eval-epsilon`,
`--eval-max-frames`, `--eval-num-envs`, `--eval-out`), `--runs-dir`, `--env-processes`, `--async-envs`, `--torch-threads`,
`--compile`, run.json (with the env settings and the processes / threads used), `perf/*` timing tags
(emulation / inference / update / logging seconds per iteration, also printed as a split at the end).
Videos and tracking, as CleanRL's flags: `--capture-video` records env 0's games during training (games 0, 1, 8, 27,
..., 729, then every 1000th: gymnasium RecordVideo's schedule) and every game of an evaluation, as MP4 files under
`<video-dir>/<run_name>/` (evaluation: `.../eval-step<global_step>/`, each game's file named in eval.json): the
RGB screen at full resolution, one frame per agent step at 15 frames/s (the game's own speed), VP9 in MP4 written by
OpenCV's VideoWriter (browsers and W&B play it). Env 0 (`AtariRamEnv`, in this process or an env process) records
the screen its emulator draws anyway; what the agent sees and learns is unchanged (tests/test_video.py: the same
seed gives the same weights with and without it).
`--track` logs to Weights & Biases (optional: `pip install wandb`; without it, one `error:` line): the TensorBoard
scalars synced, the videos uploaded, `--wandb-project-name`, `--wandb-entity`; WANDB_MODE=offline needs no account.
Bad input ends with one line `error: ...` on stderr and exit code 2; Ctrl-C (or SIGTERM) saves and exits 130.
Faults (docs/FORMATS.md section 8): a new run's folder is never shared, a name taken (the same env, experiment and
seed started in the same second) is made unique with `-2`, `-3`, ...; a second process in a run folder is refused;
a full disk or a read-only folder is one `error:` line, exit 2, the last checkpoint whole and run.json saying
"failed: disk full"; --resume removes the temp files a killed write left; an evaluation never replaces another
result in eval.json (refused before any game: --eval-out).
"""
import atexit
import contextlib
import errno
import fcntl
import functools
import io
import json
import os
import platform
import random
import re
import shlex
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal, Optional

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

gym.register_envs(ale_py)

AGENT_KIND = "ram"
CHECKPOINT_FORMAT = "memory-pixel-interp/checkpoint"


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=False`"""
    cuda: bool = True
    """if toggled, cuda will be enabled by default"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (optional: `pip install wandb`): the
    TensorBoard scalars synced, the --capture-video files uploaded"""
    wandb_project_name: str = "memory-pixel-interp"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (MP4, full-resolution RGB, under `<video-dir>/<run_name>/`):
    training records env 0's games 0, 1, 8, 27, ..., 729, then every 1000th; evaluation records every game"""
    video_dir: str = "videos"
    """folder that receives `<video-dir>/<run_name>/` with --capture-video"""
    runs_dir: str = "runs"
    """folder that receives the run folder `<runs-dir>/<run_name>/` (events, run.json, checkpoint.pt)"""
    save_interval: int = 100
    """write `checkpoint.pt` every this many iterations (also at the end and on Ctrl-C)"""
    resume: Optional[str] = None
    """continue the run of this checkpoint.pt in its own folder; its saved args are the defaults"""
    ram_vars: Optional[str] = None
    """the RAM-variable file (FORMATS.md section 1); default `ram_vars/<env-id>.json`"""
    ram_bytes: Literal["selected", "all"] = "selected"
    """the RAM bytes observed: the RAM-variable file's `selected` ones, or `all` 128 (the raw RAM; the file is then
    read only if it exists or --drop-bitmaps needs it)"""
    drop_bitmaps: bool = False
    """leave out the bytes the RAM-variable file's per-byte records call bitmaps ("kind": "bitmap")"""
    ram_stack: int = 1
    """the last N RAM observations side by side, oldest first (a velocity the game does not store becomes visible;
    after a reset the first observation fills all N)"""
    hidden: int = 256
    """width of the MLP's two hidden layers"""
    env_processes: int = 0
    """processes that step the envs at once, each a slice of them (this one included; 0: min(num_envs, usable CPU
    cores); 1: all in this process). The same games step for step whatever the number (bench/README.md: the gain)"""
    async_envs: bool = False
    """step the envs with gymnasium's AsyncVectorEnv (a process per env, a pipe message per env and step) instead of
    --env-processes (a message per slice of envs)"""
    torch_threads: int = 0
    """torch CPU threads (0: the usable CPU cores left by the env processes, at least 1; bench/README.md)"""
    compile: bool = False
    """compile the agent's two forward calls with torch.compile (off by default: compiling took 20-40 s per run on 2
    shared EPYC cores with torch 2.13 CPU, bench/bench_throughput.py --compile; bench/README.md)"""

    # Evaluation mode
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint.pt instead of training; writes eval.json next to it (or --eval-out)"""
    eval_out: Optional[str] = None
    """where the evaluation writes its result (JSON); default `eval.json` beside the checkpoint, which never replaces
    another result there (another checkpoint's, or other actions', games, frame cap or seed: refused before any game,
    pass --eval-out); only the same evaluation run again replaces its own"""
    eval_episodes: int = 10
    """number of full games (all lives) to play in evaluation mode"""
    eval_greedy: bool = False
    """evaluation takes the most probable action (default: sample, as PPO acts)"""
    eval_epsilon: float = 0.0
    """probability of a uniformly random action in evaluation"""
    eval_max_frames: int = 108000
    """evaluation games are cut (truncated) after this many emulator frames, so a stuck policy ends"""
    eval_num_envs: int = 8
    """games played in parallel in evaluation mode"""

    # Algorithm specific arguments
    env_id: str = "BreakoutNoFrameskip-v4"
    """the id of the environment"""
    total_timesteps: int = 10000000
    """total timesteps of the experiments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 8
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.1
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


# The valid range of every numeric flag, as in maths ("[1, inf)": 1 or more); check_ranges refuses the rest.
RANGES = {
    "seed": "[0, 2147483647]", "save_interval": "[1, inf)", "env_processes": "[0, inf)", "torch_threads": "[0, inf)",
    "eval_episodes": "[1, inf)", "eval_epsilon": "[0, 1]", "eval_max_frames": "[1, inf)", "eval_num_envs": "[1, inf)",
    "total_timesteps": "[1, inf)", "learning_rate": "(0, inf)", "num_envs": "[1, inf)", "num_steps": "[1, inf)",
    "gamma": "[0, 1]", "gae_lambda": "[0, 1]", "num_minibatches": "[1, inf)", "update_epochs": "[1, inf)",
    "clip_coef": "[0, inf)", "ent_coef": "[0, inf)", "vf_coef": "[0, inf)", "max_grad_norm": "(0, inf)",
    "target_kl": "[0, inf)", "ram_stack": "[1, inf)", "hidden": "[1, inf)",
}


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


STOP = {"requested": False}


def request_stop(signum, frame):
    """SIGINT (Ctrl-C) or SIGTERM (`timeout`, Slurm): finish (or abandon) the current iteration, save, exit 130."""
    if not STOP["requested"]:
        print(f"\n{signal.Signals(signum).name}: stopping after this step, saving a checkpoint ...", flush=True)
    STOP["requested"] = True


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


def make_run_folder(runs_dir, run_name):
    """Make the folder of a new run, `<runs_dir>/<run_name>`, and return (run_name, run_dir). A folder is never
    shared: os.mkdir fails on a name that exists, atomically, so of two runs started in the same second with the same
    env id, experiment name and seed, the second gets the name made unique with a suffix (`<run_name>-2`, `-3`, ...).
    A folder that cannot be made is one `error:` line."""
    try:
        os.makedirs(runs_dir, exist_ok=True)
        for n in range(1, 10000):
            name = run_name if n == 1 else f"{run_name}-{n}"
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.join(runs_dir, name))
                return name, os.path.join(runs_dir, name)
        raise FileExistsError(errno.EEXIST, "the names up to -9999 are all taken")
    except OSError as e:
        fail(f"cannot write the run folder '{os.path.join(runs_dir, run_name)}': {e.strerror or e}")


def lock_run_folder(run_dir):
    """Lock the run folder for this process (flock on `<run_dir>/.lock`, released by the kernel when the process ends,
    however it ends): a second process that would train in it at the same time (the same --resume twice) is refused.
    Also the check that the folder can be written. Returns the open lock file, to keep open."""
    try:
        lock = open(os.path.join(run_dir, ".lock"), "a")
    except OSError as e:
        fail(f"cannot write the run folder '{run_dir}': {e.strerror or e}")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fail(f"another process is training in '{run_dir}' now (it holds {os.path.join(run_dir, '.lock')})")
    return lock


def remove_orphaned_temp_files(run_dir):
    """Remove the temp files that writes killed midway (SIGKILL, a crash) left in the run folder: this script's own
    `checkpoint.pt.tmp-<pid>` and `run.json.tmp-<pid>` (write_atomic). Called with the folder's lock held
    (lock_run_folder), when no other process of this script can be writing there, so every such file is an orphan,
    whatever its pid (a pid may be reused, or be 1 in every container). Other files are kept. Returns the names removed."""
    removed = []
    for name in sorted(os.listdir(run_dir)):
        if re.fullmatch(r"(checkpoint\.pt|run\.json)\.tmp-\d+", name):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(run_dir, name))
                removed.append(name)
    return removed


def write_problem(e):
    """What a failed write (OSError) says about the disk, in run.json's status: "disk full", "read-only file system", or
    the system's message."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return "read-only file system" if e.errno == errno.EROFS else (e.strerror or str(e)).lower()


class RunWriter(SummaryWriter):
    """torch's SummaryWriter, whose write errors (tensorboard raises them at a later add_* call or at close, e.g. on a
    full disk) go to on_error(OSError), which does not return, instead of a traceback in the middle of the loop."""

    def __init__(self, log_dir, on_error, **kwargs):
        self.on_error = on_error
        default_hook = threading.excepthook

        def quiet_writer_thread(hook_args):  # tensorboard's writer thread re-raises a write error after keeping it for
            if issubclass(hook_args.exc_type, OSError) and type(hook_args.thread).__name__ == "_AsyncWriterThread":
                return  # the next add_* or close, which raise it here: one `error:` line, no thread traceback
            default_hook(hook_args)

        try:
            super().__init__(log_dir, **kwargs)
        except OSError as e:
            on_error(e)
        # set once the writer thread is made (a thread keeps the hook of its making as a fallback), and put back at
        # exit: the hook's globals (this script's, the envs with them) must not outlive the interpreter's shutdown of
        # its modules, or nanobind reports the emulators it still finds then as leaked
        threading.excepthook = quiet_writer_thread
        atexit.register(setattr, threading, "excepthook", default_hook)

    def add_scalar(self, *args, **kwargs):
        try:
            super().add_scalar(*args, **kwargs)
        except OSError as e:
            self.on_error(e)

    def add_text(self, *args, **kwargs):
        try:
            super().add_text(*args, **kwargs)
        except OSError as e:
            self.on_error(e)

    def close(self):
        try:
            super().close()
        except OSError as e:
            self.on_error(e)


def eval_output(args, ckpt, ckpt_path):
    """Where the evaluation's result goes, checked before any game is played: --eval-out, else `eval.json` beside the
    checkpoint. The default never replaces another result: an eval.json there that records another checkpoint file, the
    same file at another global_step, other actions (--eval-greedy, --eval-epsilon), another number of games, frame cap
    or seed, or that is no evaluation result, is refused with one `error:` line naming --eval-out; only the same
    evaluation run again (the same games: with videos, say) replaces its own. --eval-out replaces what its file holds. A path that cannot be written is one `error:` line. Returns it."""
    path = args.eval_out or os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "eval.json")
    if args.eval_out is None and os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError):
            old = None
        if not isinstance(old, dict) or not isinstance(old.get("checkpoint"), str):
            fail(f"'{path}' is there and is no evaluation result: pass --eval-out PATH to write this one elsewhere")
        greedy = args.eval_greedy or (ckpt.get("source") or {}).get("actor") == "Q-values"  # (a Q-network acts greedily)
        if (os.path.realpath(old["checkpoint"]) != os.path.realpath(ckpt_path) or old.get("global_step") != ckpt["global_step"]
                or old.get("greedy") != greedy or old.get("epsilon") != args.eval_epsilon
                or old.get("episodes") != args.eval_episodes or old.get("max_frames") != args.eval_max_frames
                or old.get("seed") != args.seed):
            fail(f"'{path}' holds the result of {old['checkpoint']} at global_step {old.get('global_step')} "
                 f"({old.get('episodes')} games, {'greedy' if old.get('greedy') else 'sampled'} actions, epsilon "
                 f"{old.get('epsilon')}, frame cap {old.get('max_frames')}, seed {old.get('seed')}): pass --eval-out "
                 f"PATH to write this one elsewhere")
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "it is a folder")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(f"{path}.tmp-{os.getpid()}", "wb").close()
        os.remove(f"{path}.tmp-{os.getpid()}")
    except OSError as e:
        fail(f"cannot write the evaluation result '{path}': {e.strerror or e}")
    return path


def video_codec(folder):
    """--capture-video: make `folder` and return the MP4 codec this OpenCV build writes: VP9 ("vp09", which browsers
    and W&B play), else MPEG-4 Part 2 ("mp4v", which most browsers do not play; a warning says so). A folder that
    cannot be written, or no MP4 encoder at all, is one `error:` line."""
    test = os.path.join(folder, f".codec-test.tmp-{os.getpid()}.mp4")
    try:
        os.makedirs(folder, exist_ok=True)
        open(test, "wb").close()
    except OSError as e:
        fail(f"cannot write the video folder '{folder}': {e.strerror or e}")
    try:
        for fourcc in ("vp09", "mp4v"):
            writer = cv2.VideoWriter(test, cv2.VideoWriter_fourcc(*fourcc), 15, (16, 16))
            opened = writer.isOpened()
            writer.release()
            if opened:
                if fourcc != "vp09":
                    print("warning: this OpenCV build has no VP9 encoder: videos are MPEG-4 Part 2, which most browsers "
                          "do not play (VLC and ffplay do)", flush=True)
                return fourcc
    finally:
        os.remove(test)
    fail("--capture-video: this OpenCV build writes no MP4 (pip install opencv-python-headless: its FFmpeg has VP9)")


def video_wanted(game):
    """Which games are recorded during training: gymnasium RecordVideo's default rule, which CleanRL's videos follow:
    game 0, 1, 8, 27, ..., 729 (the cubes), then every 1000th; `game` counts a process's games of one env from 0."""
    return round(game ** (1 / 3)) ** 3 == game if game < 1000 else game % 1000 == 0


class VideoRecorder:
    """The games of one env as MP4 files `<folder>/<prefix>-game<N>.mp4` (N counts this env's games from 0): RGB
    screens at the emulator's full resolution, one per agent step, at `fps` (15 = 60 emulator frames/s over frame
    skip 4: the game's own speed), written by OpenCV's VideoWriter (FFmpeg) with the `fourcc` of video_codec. Games
    recorded: the first `games` (evaluation), else those of video_wanted. A file is written as `.<name>.tmp-<pid>.mp4`
    and renamed when its game ends (or at close: a game cut by the end of training is kept, as far as it got), so
    an .mp4 without the dot is complete."""

    def __init__(self, folder, prefix, fps, fourcc, games=None):
        self.folder, self.prefix, self.fps, self.fourcc, self.games = folder, prefix, fps, fourcc, games
        self.game, self.writer, self.tmp, self.path = -1, None, None, None

    def start_game(self, rgb):
        """A new game starts with this screen, (H, W, 3) uint8 RGB; the game before it, if any, has ended."""
        self.end_game()
        self.game += 1
        if (video_wanted(self.game) if self.games is None else self.game < self.games):
            name = f"{self.prefix}-game{self.game}.mp4"
            self.path, self.tmp = os.path.join(self.folder, name), os.path.join(self.folder, f".{name[:-4]}.tmp-{os.getpid()}.mp4")
            self.writer = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (rgb.shape[1], rgb.shape[0]))
            if not self.writer.isOpened():
                print(f"warning: --capture-video: cannot write {self.tmp}; game {self.game} is not recorded", flush=True)
                self.writer = None
        self.add(rgb)

    def add(self, rgb):
        """The screen after an agent step of the game in progress, (H, W, 3) uint8 RGB."""
        if self.writer is not None:
            self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def end_game(self):
        if self.writer is not None:
            self.writer.release()
            os.replace(self.tmp, self.path)
            self.writer = None


def require_wandb():
    """--track's optional dependency, checked before anything is written: the wandb module, or one `error:` line."""
    try:
        import wandb
    except ImportError:
        fail("--track needs Weights & Biases, which is not installed: pip install wandb")
    return wandb


def start_wandb(wandb, args, name, job_type):
    """A W&B run as CleanRL starts one (project, entity, the args as config, TensorBoard synced, code saved); call it
    before the SummaryWriter is made. Its id is the run's name, so a resumed run continues its W&B run. Without an
    account: WANDB_MODE=offline writes it under ./wandb/ (`wandb sync` uploads it later)."""
    try:
        return wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                          name=name, id=re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:128], resume="allow", job_type=job_type,
                          save_code=True)
    except Exception as e:  # not logged in, no network, a bad entity, ...
        fail(f"--track: wandb could not start a run: {(str(e).strip().splitlines() or [type(e).__name__])[0][:300]}")


def upload_videos(wandb_run, folder, uploaded, key):
    """--track with --capture-video: log every finished video of `folder` not in the set `uploaded` (updated) to the
    W&B run under `key` (CleanRL's runs upload theirs through wandb's gym monitor)."""
    if wandb_run is None or not os.path.isdir(folder):
        return
    import wandb
    for name in sorted(os.listdir(folder)):
        if name.endswith(".mp4") and not name.startswith(".") and name not in uploaded:
            uploaded.add(name)
            wandb_run.log({key: wandb.Video(os.path.join(folder, name), format="mp4", caption=name)})


def rom_name(env_id):
    """ALE ROM name of an id from ale_py's gymnasium registration (FORMATS.md), else None."""
    spec = gym.registry.get(env_id) if isinstance(env_id, str) else None
    return spec.kwargs["game"] if spec is not None and "game" in spec.kwargs else None


def game_from_env_id(env_id):
    """'BreakoutNoFrameskip-v4' -> 'breakout'; an id ale_py does not register is refused."""
    game = rom_name(env_id)
    if game is None:
        fail(f"unknown env id '{env_id}' (expected an id ale_py registers, e.g. BreakoutNoFrameskip-v4 or ALE/Pong-v5)")
    return game


def load_ram_vars(path, env_id, game):
    """Read and check a RAM-variable file (FORMATS.md section 1); return (selected indices, the whole dict)."""
    if not os.path.isfile(path):
        fail(f"RAM-variable file '{path}' not found (write it with extract_ram_vars.py, or pass --ram-vars)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        fail(f"RAM-variable file '{path}' is not valid JSON: {str(e).splitlines()[0][:200]}")
    if not isinstance(data, dict) or data.get("format") != "memory-pixel-interp/ram-vars":
        fail(f"'{path}' is not a RAM-variable file (its \"format\" is not \"memory-pixel-interp/ram-vars\")")
    missing = [k for k in ("version", "env_id", "game", "selected") if k not in data]
    if missing:
        fail(f"RAM-variable file '{path}' lacks {', '.join(missing)}")
    file_game = rom_name(data["env_id"]) if isinstance(data["env_id"], str) else None
    if data["game"] != game or file_game != game:
        fail(f"RAM-variable file '{path}' is for {data['env_id']} (game {data['game']}), not {env_id} (game {game})")
    selected = data["selected"]
    if (not isinstance(selected, list) or not selected
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= 127 for i in selected)
            or selected != sorted(set(selected))):
        fail(f"RAM-variable file '{path}': \"selected\" must be a non-empty sorted list of distinct RAM indices 0..127")
    return selected, data


def choose_ram_bytes(args, game):
    """The RAM indices the agent observes and the RAM-variable record stored with them (--ram-vars, --ram-bytes,
    --drop-bitmaps): the file's `selected` bytes or all 128, less the bytes its records call bitmaps. With `all`, no
    --ram-vars and no file at the default path (and no --drop-bitmaps) the record is a minimal one that names the
    choice. Returns (indices, dict)."""
    given = args.ram_vars is not None  # a file named on the command line must be there, whatever --ram-bytes says
    if not given:
        args.ram_vars = os.path.join("ram_vars", args.env_id.replace("/", "_") + ".json")
    if args.ram_bytes == "all" and not args.drop_bitmaps and not given and not os.path.isfile(args.ram_vars):
        ram_vars = {"format": "memory-pixel-interp/ram-vars", "version": 0, "env_id": args.env_id, "game": game,
                    "selected": list(range(128)), "selection_rule": "all 128 bytes (--ram-bytes all, no file read)"}
        args.ram_vars = None
        return list(range(128)), ram_vars
    selected, ram_vars = load_ram_vars(args.ram_vars, args.env_id, game)
    indices = list(range(128)) if args.ram_bytes == "all" else list(selected)
    if args.drop_bitmaps:
        kinds = {b.get("index"): b.get("kind") for b in ram_vars.get("bytes") or [] if isinstance(b, dict)}
        if not kinds:
            fail(f"--drop-bitmaps: RAM-variable file '{args.ram_vars}' has no per-byte records (\"bytes\") to say "
                 f"which bytes are bitmaps")
        indices = [i for i in indices if kinds.get(i) != "bitmap"]
        if not indices:
            fail(f"--drop-bitmaps leaves no byte of '{args.ram_vars}' to observe")
    return indices, ram_vars


def env_settings(env_id):
    """Sticky-action probability and frame limit of the id, as ale_py registers them (v4: 0.0, v5: 0.25)."""
    kwargs = gym.registry[env_id].kwargs
    return float(kwargs.get("repeat_action_probability", 0.25)), int(kwargs.get("max_num_frames_per_episode") or 108000)


class AtariRamEnv(gym.Env):
    """One ALE game stepped as the pixel agent's AtariVectorEnv steps it, observing selected RAM bytes. ram_stack: the
    observation is the last N reads of those bytes side by side, oldest first, uint8 (N * len(ram_indices),); a reset
    fills all N with its read (a lost life does not: the game goes on). video: the arguments of a VideoRecorder that
    records this env's games (--capture-video): the emulator draws its RGB screen whatever it is observed by, so the
    screen after each step is the recorded frame."""

    def __init__(self, env_id, ram_indices, max_frames=None, frameskip=4, noop_max=30, video=None, ram_stack=1):
        repeat_action_probability, default_max_frames = env_settings(env_id)
        # the frame limit is counted here, from the end of the reset, as AtariVectorEnv counts it
        kwargs = dict(obs_type="ram", frameskip=1, repeat_action_probability=repeat_action_probability,
                      full_action_space=False, max_num_frames_per_episode=None)
        self.env = gym.make(env_id, **kwargs)
        self.ale = self.env.unwrapped.ale
        self.action_set = list(self.ale.getMinimalActionSet())
        self.has_fire = ale_py.Action.FIRE in self.action_set
        # the action of the step after a terminal: FIRE after a lost life (CleanRL's FireResetEnv), else NOOP
        self.reset_action = self.action_set.index(ale_py.Action.FIRE) if self.has_fire else 0
        self.ram_indices = np.asarray(ram_indices, dtype=np.int64)
        self.frameskip, self.noop_max, self.max_frames = frameskip, noop_max, max_frames or default_max_frames
        self.history = deque(maxlen=ram_stack)
        self.observation_space = gym.spaces.Box(0, 255, (len(self.ram_indices) * ram_stack,), dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.action_set))
        self.rng = np.random.default_rng()
        self.lives = self.reset_frame = 0
        self.recorder = VideoRecorder(*video) if video is not None else None

    def observe(self, life_loss, reset=False):
        info = {"lives": self.ale.lives(), "episode_frame_number": self.ale.getEpisodeFrameNumber(), "life_loss": life_loss}
        ram = self.ale.getRAM()[self.ram_indices]
        self.history.extend([ram] * (self.history.maxlen if reset else 1))
        return np.concatenate(self.history), info

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
            self.env.reset(seed=seed)  # seeds the emulator (sticky actions) and reloads the ROM
        self.ale.reset_game()
        for _ in range(int(self.rng.integers(self.noop_max)) + 1 - int(self.has_fire)):
            self.ale.act(ale_py.Action.NOOP)
            if self.ale.game_over():
                self.ale.reset_game()
        if self.has_fire:
            self.ale.act(ale_py.Action.FIRE)
        self.lives, self.reset_frame = self.ale.lives(), self.ale.getEpisodeFrameNumber()
        if self.recorder is not None:
            self.recorder.start_game(self.ale.getScreenRGB())
        return self.observe(False, reset=True)

    def truncated(self):
        return self.ale.getEpisodeFrameNumber() - self.reset_frame >= self.max_frames

    def step(self, action):
        reward = 0.0
        for _ in range(self.frameskip):
            reward += self.ale.act(self.action_set[int(action)])
            if self.ale.game_over() or self.truncated():
                break
        life_loss = self.ale.lives() < self.lives
        self.lives = self.ale.lives()
        if self.recorder is not None:
            self.recorder.add(self.ale.getScreenRGB())
        obs, info = self.observe(life_loss)
        return obs, reward, self.ale.game_over(with_truncation=False), self.truncated(), info

    def close(self):
        if self.recorder is not None:
            self.recorder.end_game()
        self.env.close()


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _slice_worker(conn, make_slice):
    """Body of a SplitVectorEnv worker process: serve reset / step / close calls on its own slice of envs."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the parent process handles Ctrl-C / SIGTERM, then closes us
        signal.signal(sig, signal.SIG_IGN)
    envs = make_slice()
    while True:
        command, data = conn.recv()
        if command == "close":
            envs.close()
            conn.close()
            return
        conn.send(envs.reset(seed=data) if command == "reset" else envs.step(data))


class SplitVectorEnv:
    """`num_envs` envs in `processes` contiguous slices, stepped at the same time: this process steps the first
    slice and each spawned worker process one other, every slice a gymnasium SyncVectorEnv (NEXT_STEP autoreset).
    Slice k is seeded with seed + (its first env index), so observations, rewards and infos are exactly those of
    one SyncVectorEnv over all envs, seeded with seed: only the wall time differs. One pipe message per slice and
    step, where gymnasium's AsyncVectorEnv sends one per env (its pipes cost more than the emulation on 2 cores)."""

    def __init__(self, env_fns, processes):
        import multiprocessing
        bounds = np.linspace(0, len(env_fns), processes + 1).astype(int)
        self.starts = bounds[:-1]
        self.local = gym.vector.SyncVectorEnv(env_fns[: bounds[1]], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        self.num_envs = len(env_fns)
        self.single_observation_space, self.single_action_space = self.local.single_observation_space, self.local.single_action_space
        self.conns, self.workers = [], []
        context = multiprocessing.get_context("spawn")  # no fork of a process that has torch threads running
        for k in range(1, processes):
            fns = env_fns[bounds[k]: bounds[k + 1]]
            parent, child = context.Pipe()
            worker = context.Process(target=_slice_worker, daemon=True, args=(
                child, functools.partial(gym.vector.SyncVectorEnv, fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)))
            worker.start()
            child.close()
            self.conns.append(parent)
            self.workers.append(worker)

    @staticmethod
    def merge(parts):
        """Concatenate the slices' (obs, reward, terminated, truncated, infos), or (obs, infos) of a reset."""
        *arrays, infos = zip(*parts)
        merged = {key: np.concatenate([info[key] for info in infos]) for key in infos[0]}
        return (*[np.concatenate(a) for a in arrays], merged)

    def reset(self, seed=None):
        for conn, start in zip(self.conns, self.starts[1:]):
            conn.send(("reset", None if seed is None else seed + int(start)))
        return self.merge([self.local.reset(seed=seed)] + [conn.recv() for conn in self.conns])

    def step(self, actions):
        for conn, start, end in zip(self.conns, self.starts[1:], [*self.starts[2:], self.num_envs]):
            conn.send(("step", actions[start:end]))
        return self.merge([self.local.step(actions[: self.starts[1] if self.conns else None])] + [conn.recv() for conn in self.conns])

    def get_attr(self, name):
        return self.local.get_attr(name)

    def close(self):
        for conn in self.conns:
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("close", None))
        for worker in self.workers:
            worker.join(timeout=5)
        self.local.close()


def make_envs(env_id, num_envs, ram_indices, async_envs, max_frames=None, noop_max=30, processes=1, videos=(), ram_stack=1):
    """Vector env of AtariRamEnv, NEXT_STEP autoreset (as the pixel agent's AtariVectorEnv): a SplitVectorEnv over
    `processes` processes (1: gymnasium's SyncVectorEnv), or gymnasium's AsyncVectorEnv with `async_envs`. videos[i]:
    the VideoRecorder arguments of env i (--capture-video), or None; envs past the list's end are not recorded.
    ram_stack: each env's observation holds its last N RAM reads (AtariRamEnv)."""
    env_fns = [functools.partial(AtariRamEnv, env_id, ram_indices, max_frames, noop_max=noop_max, ram_stack=ram_stack,
                                 video=videos[i] if i < len(videos) else None) for i in range(num_envs)]
    if processes > 1 and not async_envs:
        envs = SplitVectorEnv(env_fns, min(processes, num_envs))
    elif async_envs:
        # the workers ignore Ctrl-C and SIGTERM (sent to the whole process group); this process saves
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        envs = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    else:
        envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    return envs, int(envs.get_attr("reset_action")[0])


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


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


def load_checkpoint(path):
    """Read and check a checkpoint (FORMATS.md section 2); any problem is one `error:` line."""
    if not os.path.isfile(path):
        fail(f"checkpoint '{path}' not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        fail(f"cannot read checkpoint '{path}' (corrupt or not a checkpoint.pt): {type(e).__name__}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        fail(f"'{path}' is not a memory-pixel-interp checkpoint")
    missing = [k for k in ("version", "agent", "env_id", "model_kwargs", "state_dict", "optimizer", "global_step",
                           "iteration", "args", "run_name") if k not in ckpt]
    if missing or not isinstance(ckpt["args"], dict) or not isinstance(ckpt["model_kwargs"], dict):
        fail(f"checkpoint '{path}' lacks {', '.join(missing) or 'usable args / model_kwargs'}")
    if ckpt["agent"] != AGENT_KIND:
        fail(f"checkpoint '{path}' is for the {ckpt['agent']} agent, not the {AGENT_KIND} agent")
    try:
        RamAgent(**ckpt["model_kwargs"]).load_state_dict(ckpt["state_dict"])
    except Exception as e:
        fail(f"checkpoint '{path}' does not rebuild the {AGENT_KIND} model: {str(e).splitlines()[0][:200]}")
    indices, stack = ckpt.get("ram_indices"), ckpt.get("ram_stack", 1)
    if (not isinstance(indices, list) or not isinstance(stack, int) or stack < 1
            or len(indices) * stack != ckpt["model_kwargs"].get("n_ram")
            or not all(isinstance(i, int) and 0 <= i <= 127 for i in indices) or not isinstance(ckpt.get("ram_vars"), dict)):
        fail(f"checkpoint '{path}' has no usable ram_indices / ram_vars")
    return ckpt


def rng_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def machine_description(device):
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    text = f"{platform.node()}: {cpu}, {os.cpu_count()} cores"
    return text + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU used")


def format_seconds(s):
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def evaluate(args, ckpt, ckpt_path, device, env_processes, wandb=None):
    """Play `eval_episodes` full games with the checkpoint's policy; print and write the result (eval_output: eval.json
    beside the checkpoint, or --eval-out). With --capture-video
    every game is recorded (each env its own games) under `<video-dir>/<run_name>/eval-step<global_step>/`, its file
    named in eval.json; with --track (wandb: the module) the scores and videos go to a W&B run `<run_name>-eval-step<N>`."""
    out = eval_output(args, ckpt, ckpt_path)  # checked before any game is played
    agent = RamAgent(**ckpt["model_kwargs"]).to(device)
    agent.load_state_dict(ckpt["state_dict"])
    agent.eval()
    n_envs = max(1, min(args.eval_episodes, args.eval_num_envs))
    # a fixed number of games per env (not the first N to end, which would favour short games)
    quota = np.array([args.eval_episodes // n_envs + (i < args.eval_episodes % n_envs) for i in range(n_envs)])
    video_folder = os.path.join(args.video_dir, ckpt["run_name"], f"eval-step{ckpt['global_step']}")
    fourcc = video_codec(video_folder) if args.capture_video else None
    videos = [(video_folder, f"env{i}", 60 // 4, fourcc, int(quota[i])) for i in range(n_envs)] if args.capture_video else ()
    envs, reset_action = make_envs(args.env_id, n_envs, ckpt["ram_indices"], args.async_envs, max_frames=args.eval_max_frames,
                                   processes=env_processes, videos=videos,  # make_envs caps the processes at n_envs
                                   ram_stack=ckpt.get("ram_stack", 1))
    wandb_run = start_wandb(wandb, args, f"{ckpt['run_name']}-eval-step{ckpt['global_step']}", "eval") if args.track else None
    played = np.zeros(n_envs, dtype=int)
    results, game_videos = [], []
    rng = np.random.default_rng(args.seed)
    next_obs, infos = envs.reset(seed=args.seed)
    done = np.zeros(n_envs, dtype=bool)
    truncated = np.zeros(n_envs, dtype=bool)
    game_return = np.zeros(n_envs)
    prev_frames = infos["episode_frame_number"].copy()
    print(f"evaluating {ckpt_path} (global_step {ckpt['global_step']}) on {args.env_id}: {args.eval_episodes} games, "
          f"{'greedy' if args.eval_greedy else 'sampled'} actions, epsilon {args.eval_epsilon}", flush=True)
    while (played < quota).any():
        if STOP["requested"]:
            envs.close()  # (recording envs finish their videos)
            print(f"interrupted: {out} not written", file=sys.stderr)
            sys.exit(130)
        with torch.no_grad():
            logits = agent.actor(agent.network(encode_ram(torch.from_numpy(next_obs).to(device))))
            action = logits.argmax(1) if args.eval_greedy else Categorical(logits=logits).sample()
        action = action.cpu().numpy()
        explore = rng.random(n_envs) < args.eval_epsilon
        action[explore] = rng.integers(envs.single_action_space.n, size=int(explore.sum()))
        action[done] = reset_action
        next_obs, reward, terminations, truncations, infos = envs.step(action)
        terminations = np.logical_or(terminations, infos["life_loss"])  # a lost life: FIRE next step
        ended = infos["episode_frame_number"] < prev_frames
        for i in np.flatnonzero(ended):
            if played[i] < quota[i]:
                # env i (maybe in another process) finished this game's file when its next game started, this step
                video = os.path.abspath(os.path.join(video_folder, f"env{i}-game{played[i]}.mp4"))
                game_videos.append(video if os.path.isfile(video) else None)
                played[i] += 1
                results.append((float(game_return[i]), int(prev_frames[i]), bool(truncated[i])))
                print(f"game {len(results)}/{args.eval_episodes}: return {game_return[i]:.0f}, {prev_frames[i]} frames"
                      + (" (truncated)" if truncated[i] else "") + (f", video {game_videos[-1]}" if args.capture_video else ""),
                      flush=True)
                if wandb_run is not None:
                    wandb_run.log({"eval/episodic_return": game_return[i], "eval/episodic_length": prev_frames[i]})
        game_return = np.where(ended, 0.0, game_return) + reward
        truncated = np.where(ended, False, truncated | truncations)
        prev_frames = infos["episode_frame_number"].copy()
        done = np.logical_or(terminations, truncations)
    envs.close()
    returns = [r for r, _, _ in results]
    report = {"checkpoint": os.path.abspath(ckpt_path), "episodes": len(returns), "returns": returns,
              "mean": float(np.mean(returns)), "std": float(np.std(returns)), "lengths": [l for _, l, _ in results],
              "truncated": [t for _, _, t in results], "agent": AGENT_KIND, "env_id": args.env_id,
              "global_step": int(ckpt["global_step"]), "greedy": args.eval_greedy, "epsilon": args.eval_epsilon,
              "max_frames": args.eval_max_frames, "seed": args.seed, "videos": game_videos if args.capture_video else None}
    eval_output(args, ckpt, ckpt_path)  # again: a result written there while these games played is kept
    try:
        write_json(out, report)
    except OSError as e:  # (the games' returns are printed above)
        fail(f"cannot write the evaluation result '{out}': {write_problem(e)} ({e.strerror or e})")
    print(f"eval: {report['mean']:.2f} ± {report['std']:.2f} over {len(returns)} games (unclipped score) -> {out}")
    if wandb_run is not None:
        upload_videos(wandb_run, video_folder, set(), "videos/eval")
        wandb_run.summary.update({"eval/mean": report["mean"], "eval/std": report["std"]})
        wandb_run.finish()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    args = parse_args()
    ckpt, ckpt_path = None, args.resume or args.eval_checkpoint
    if args.resume and args.eval_checkpoint:
        fail("give either --resume or --eval-checkpoint, not both")
    if ckpt_path:
        ckpt = load_checkpoint(ckpt_path)
        saved = {f.name: ckpt["args"][f.name] for f in fields(Args) if f.name in ckpt["args"]}
        saved.update(resume=None, eval_checkpoint=None)
        if args.eval_checkpoint:  # an evaluation records or tracks only when asked to, whatever the training did
            saved.update(capture_video=False, track=False)
        args = parse_args(default=replace(Args(), **saved))  # saved args, overridden by the command line
        if args.env_id != ckpt["env_id"]:
            fail(f"checkpoint '{ckpt_path}' is for {ckpt['env_id']}, not {args.env_id}")
        for name in ("ram_vars", "ram_bytes", "drop_bitmaps", "ram_stack", "hidden"):
            if getattr(args, name) != saved.get(name, getattr(Args(), name)):
                fail(f"--{name.replace('_', '-')} cannot change for a checkpoint: '{ckpt_path}' holds its own RAM "
                     f"selection and network")
    check_ranges(args, RANGES)
    game = game_from_env_id(args.env_id)
    wandb = require_wandb() if args.track else None
    if ckpt is not None:
        ram_indices, ram_vars = ckpt["ram_indices"], ckpt["ram_vars"]
    else:
        ram_indices, ram_vars = choose_ram_bytes(args, game)
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_minibatches > args.batch_size:
        fail(f"--num-minibatches {args.num_minibatches} is above the batch (num_envs*num_steps = {args.batch_size})")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    env_processes = args.env_processes or min(args.num_envs if not args.eval_checkpoint else args.eval_num_envs, usable_cores())
    # the MLP is small: torch threads beyond the cores the env processes leave free only compete with emulation
    torch.set_num_threads(args.torch_threads if args.torch_threads > 0 else max(1, usable_cores() - env_processes + 1))

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    if args.eval_checkpoint:
        evaluate(args, ckpt, args.eval_checkpoint, device, env_processes, wandb)
        sys.exit(0)

    # run folder: a new one, or the resumed checkpoint's own
    if ckpt is not None:
        run_name, run_dir = ckpt["run_name"], os.path.dirname(os.path.abspath(args.resume))
        global_step = int(ckpt["global_step"])
        iteration_done = global_step // args.batch_size  # (num_envs / num_steps may differ from the saved run)
        wall_before = float(ckpt.get("wall_seconds", 0.0))
        if global_step + args.batch_size > args.total_timesteps:
            fail(f"checkpoint '{args.resume}' is at global_step {global_step}; pass a --total-timesteps above "
                 f"{global_step + args.batch_size - 1} to train further")
    else:
        if args.num_iterations < 1:
            fail(f"--total-timesteps {args.total_timesteps} is below one iteration (num_envs*num_steps = {args.batch_size})")
        # a name taken (the same env, experiment and seed started in the same second) is made unique: `-2`, `-3`, ...
        run_name, run_dir = make_run_folder(
            args.runs_dir, f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}")
        global_step, iteration_done, wall_before = 0, 0, 0.0
    run_lock = lock_run_folder(run_dir)  # one training process per run folder; also checks it can be written
    orphans = remove_orphaned_temp_files(run_dir)
    if orphans:
        print(f"removed {len(orphans)} temp file(s) of a killed write: {', '.join(orphans)}", flush=True)
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    video_folder = os.path.join(args.video_dir, run_name)
    fourcc = video_codec(video_folder) if args.capture_video else None
    machine = machine_description(device)
    repeat_action_probability, max_frames = env_settings(args.env_id)
    env_config = {"repeat_action_probability": repeat_action_probability, "frameskip": 4,
                  "max_num_frames_per_episode": max_frames, "noop_max": 30, "full_action_space": False}
    runtime = {"precision": "fp32", "torch_threads": torch.get_num_threads(),
               "env_processes": 1 if args.async_envs else min(env_processes, args.num_envs),
               "async_envs": args.async_envs, "torch": str(torch.__version__), "ale_py": ale_py.__version__}

    # env setup
    # --capture-video: env 0 records its games (a resumed run's files say from where)
    videos = [(video_folder, f"from-step{global_step}-env0" if ckpt is not None else "env0", 60 // 4, fourcc)] if fourcc else ()
    envs, reset_action = make_envs(args.env_id, args.num_envs, ram_indices, args.async_envs, processes=env_processes,
                                   videos=videos, ram_stack=args.ram_stack)
    n_actions = int(envs.single_action_space.n)
    # a stack of N RAM reads is N times the bytes to the network (RamAgent is the same class)
    model_kwargs = {"n_actions": n_actions, "n_ram": len(ram_indices) * args.ram_stack, "hidden": args.hidden}

    agent = RamAgent(**model_kwargs).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    if ckpt is not None:
        if ckpt["model_kwargs"] != model_kwargs:
            fail(f"checkpoint '{args.resume}' has model_kwargs {ckpt['model_kwargs']}, this env needs n_actions={n_actions}")
        agent.load_state_dict(ckpt["state_dict"])
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except Exception as e:
            fail(f"checkpoint '{args.resume}' has an unusable optimizer state: {str(e).splitlines()[0][:200]}")
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
    if args.compile:  # only the two calls are compiled: the module, its state_dict and checkpoints stay as they are
        agent.get_action_and_value = torch.compile(agent.get_action_and_value)
        agent.get_value = torch.compile(agent.get_value)

    wandb_run = start_wandb(wandb, args, run_name, "train") if args.track else None
    uploaded = set()

    run_start = time.time()
    # one record per training process (piece); a resumed run carries the earlier pieces in its checkpoint (one
    # written before pieces were recorded gets a single record for all of them, its machine unknown)
    sessions_before = list(ckpt.get("sessions") or []) if ckpt is not None else []
    if global_step > 0 and not sessions_before:
        sessions_before = [{"start_step": 0, "end_step": int(global_step), "wall_seconds": wall_before, "machine": None,
                            "note": "pieces before sessions were recorded"}]
    session_start_step = global_step

    def sessions():
        """The run's pieces so far, this process last (run.json and checkpoint "sessions", docs/FORMATS.md)."""
        return sessions_before + [{"start_step": int(session_start_step), "end_step": int(global_step),
                                   "wall_seconds": time.time() - run_start, "machine": machine,
                                   "device": device.type, **runtime}]

    def run_record(status):
        """run.json (docs/FORMATS.md)."""
        return {
            "format": "memory-pixel-interp/run", "version": 1, "agent": AGENT_KIND, "env_id": args.env_id,
            "seed": args.seed, "run_name": run_name, "args": asdict(args), "device": device.type, "machine": machine,
            "status": status, "global_step": int(global_step), "wall_seconds": wall_before + time.time() - run_start,
            "ram_vars": args.ram_vars, "env_settings": env_config, "runtime": runtime, "sessions": sessions()}

    def write_failed(e, what):
        """A write failed (a full disk, a folder gone read-only): stop. What was written stays whole (the last checkpoint
        too: temp file + rename); run.json says what happened, if it can still be written; one `error:` line, exit 2."""
        said = False
        with contextlib.suppress(OSError):
            write_json(os.path.join(run_dir, "run.json"),
                       {**run_record(f"failed: {write_problem(e)}"), "error": f"cannot write {what}: {e.strerror or e}"})
            said = True
        envs.close()
        if wandb_run is not None:
            wandb_run.finish(exit_code=2)
        if os.path.isfile(checkpoint_path):
            print(f"the last checkpoint is kept; to go on once it can be written: python {shlex.quote(sys.argv[0])} "
                  f"--resume {shlex.quote(checkpoint_path)}", flush=True)
        fail(f"cannot write {what} in '{run_dir}': {write_problem(e)} ({e.strerror or e}); "
             + (f"run.json says \"failed: {write_problem(e)}\"" if said else "run.json could not be updated either"))

    def write_run_json(status):
        try:
            write_json(os.path.join(run_dir, "run.json"), run_record(status))
        except OSError as e:
            write_failed(e, "run.json")

    def save_checkpoint(status):
        checkpoint = {
            "format": CHECKPOINT_FORMAT, "version": 1, "agent": AGENT_KIND, "env_id": args.env_id, "game": game,
            "model_kwargs": model_kwargs,
            "state_dict": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
            "optimizer": optimizer.state_dict(), "global_step": int(global_step), "iteration": int(iteration_done),
            "args": asdict(args), "run_name": run_name, "wall_seconds": wall_before + time.time() - run_start,
            "ram_indices": list(ram_indices), "ram_stack": args.ram_stack, "ram_vars": ram_vars, "rng": rng_state(),
            "env_settings": env_config,
            "sessions": sessions()}
        data = io.BytesIO()  # serialised first: a failed write is then an OSError, not torch's RuntimeError
        torch.save(checkpoint, data)
        try:
            write_atomic(checkpoint_path, lambda f: f.write(data.getbuffer()))
        except OSError as e:
            write_failed(e, "checkpoint.pt")
        write_run_json(status)

    # purge_step: on resume, TensorBoard drops the events an earlier process logged after the checkpoint's step; a write
    # error (a full disk) goes to write_failed
    writer = RunWriter(run_dir, lambda e: write_failed(e, "the event file"),
                       purge_step=global_step + 1 if ckpt is not None else None)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )

    write_run_json("running")
    print(f"run folder {run_dir}  device {device}  machine {machine}", flush=True)
    shown = list(ram_indices) if len(ram_indices) <= 32 else f"[{', '.join(map(str, ram_indices[:16]))}, ..., {ram_indices[-1]}]"
    print(f"RAM variables: {len(ram_indices)} bytes {shown} from {args.ram_vars or 'no file (--ram-bytes all)'}"
          + (f", the last {args.ram_stack} observations stacked" if args.ram_stack > 1 else ""), flush=True)
    if ckpt is not None:
        print(f"resuming {run_name} from global_step {global_step}", flush=True)

    # ALGO Logic: Storage setup (observations stay uint8 until the network)
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape, dtype=torch.uint8).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)

    # TRY NOT TO MODIFY: start the game
    start_step = global_step
    start_time = time.time()
    next_obs, infos = envs.reset(seed=args.seed + global_step)  # a resumed run does not replay the same games
    next_obs = torch.from_numpy(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    done_np = np.zeros(args.num_envs, dtype=bool)
    game_return = np.zeros(args.num_envs)  # unclipped score of the game in progress, per env
    prev_frames = infos["episode_frame_number"].copy()
    recent_returns = deque(maxlen=20)
    games = 0
    perf = {"emulation": 0.0, "inference": 0.0, "update": 0.0, "logging": 0.0}

    for iteration in range(iteration_done + 1, args.num_iterations + 1):
        iteration_perf = dict.fromkeys(perf, 0.0)
        iteration_start_step = global_step
        # Annealing the rate if instructed to do so (from the step reached, so resumed runs anneal alike).
        if args.anneal_lr:
            frac = 1.0 - (global_step // args.batch_size) / args.num_iterations
            lrnow = frac * args.learning_rate
            optimizer.param_groups[0]["lr"] = lrnow

        for step in range(0, args.num_steps):
            if STOP["requested"]:
                break
            t0 = time.perf_counter()
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            # the step after a terminal is the env's (FIRE after a lost life, a reset after a game over)
            action_np = action.cpu().numpy()
            action_np[done_np] = reset_action
            actions[step] = torch.from_numpy(action_np).to(device)
            logprobs[step] = logprob
            t1 = time.perf_counter()

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs, reward, terminations, truncations, infos = envs.step(action_np)
            terminations = np.logical_or(terminations, infos["life_loss"])  # a lost life ends the episode for learning
            t2 = time.perf_counter()
            done_np = np.logical_or(terminations, truncations)
            rewards[step] = torch.from_numpy(np.sign(reward).astype(np.float32)).to(device).view(-1)
            next_obs, next_done = torch.from_numpy(next_obs).to(device), torch.from_numpy(done_np).float().to(device)

            # a game ended (all lives, or truncated) when its episode frame counter starts again
            ended = infos["episode_frame_number"] < prev_frames
            for i in np.flatnonzero(ended):
                games += 1
                recent_returns.append(game_return[i])
                writer.add_scalar("charts/episodic_return", game_return[i], global_step)
                writer.add_scalar("charts/episodic_length", prev_frames[i], global_step)
            game_return = np.where(ended, 0.0, game_return) + reward
            prev_frames = infos["episode_frame_number"].copy()
            t3 = time.perf_counter()
            iteration_perf["inference"] += t1 - t0
            iteration_perf["emulation"] += t2 - t1
            iteration_perf["logging"] += t3 - t2

        if STOP["requested"]:
            global_step = iteration_start_step  # the unfinished rollout is abandoned, not learned from
            break

        t_update = time.perf_counter()
        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to(device)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        # flatten the batch
        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + envs.single_action_space.shape).long()  # once, not per minibatch
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)
        # the steps right after a terminal were the env's, not the policy's: leave them out of the update
        b_inds = np.flatnonzero(dones.reshape(-1).cpu().numpy() == 0)

        # Optimizing the policy and value network
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            # the shuffled indices go to the device once per epoch, not once per minibatch
            for mb_inds in torch.tensor_split(torch.from_numpy(b_inds).to(device), args.num_minibatches):
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean()]  # no .item(): no sync

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds],
                        -args.clip_coef,
                        args.clip_coef,
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values[b_inds].cpu().numpy(), b_returns[b_inds].cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        iteration_done = iteration
        if device.type == "cuda":
            torch.cuda.synchronize()  # so that the update's kernels are timed as update
        t_log = time.perf_counter()
        iteration_perf["update"] += t_log - t_update

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", torch.stack(clipfracs).mean().item(), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        sps = int((global_step - start_step) / (time.time() - start_time))
        writer.add_scalar("charts/SPS", sps, global_step)
        recent = f"{np.mean(recent_returns):.1f}" if recent_returns else "n/a"
        print(f"global_step={global_step}/{args.total_timesteps} iter={iteration}/{args.num_iterations} SPS={sps} "
              f"return(last {len(recent_returns)} games)={recent} games={games} "
              f"ETA={format_seconds((args.total_timesteps - global_step) / max(sps, 1))}", flush=True)
        if iteration % args.save_interval == 0 and iteration < args.num_iterations:
            save_checkpoint("running")
        upload_videos(wandb_run, video_folder, uploaded, "videos/env0")
        iteration_perf["logging"] += time.perf_counter() - t_log
        for key, seconds in iteration_perf.items():
            perf[key] += seconds
            writer.add_scalar(f"perf/{key}_seconds", seconds, global_step)
        if STOP["requested"]:
            break

    interrupted = STOP["requested"] and iteration_done < args.num_iterations
    save_checkpoint("interrupted" if interrupted else "finished")
    envs.close()  # env 0 finishes its video file
    writer.close()
    upload_videos(wandb_run, video_folder, uploaded, "videos/env0")
    if wandb_run is not None:
        wandb_run.finish(exit_code=130 if interrupted else 0)
    total = sum(perf.values()) or 1.0
    print("time split: " + ", ".join(f"{k} {v:.1f}s ({100 * v / total:.0f}%)" for k, v in perf.items())
          + f"; wall {time.time() - start_time:.1f}s", flush=True)
    print(f"{'interrupted' if interrupted else 'finished'} at global_step {global_step}; checkpoint {checkpoint_path}", flush=True)
    if interrupted:  # the exact command that goes on (saved args are the defaults; the command line's overrides too)
        print(f"to go on: python {shlex.quote(sys.argv[0])} --resume {shlex.quote(checkpoint_path)}", flush=True)
    sys.exit(130 if interrupted else 0)
