"""PPO on Atari pixels: the "pixel agent" of memory-pixel-interp.

A copy-and-adapt of CleanRL's `cleanrl/ppo_atari.py` (same hyperparameter defaults, same Nature CNN, same
TensorBoard tags), running on ale-py's C++ vector env `ale_py.vector_env.AtariVectorEnv` for speed. The
file contract (run folder, run.json, checkpoint.pt, eval.json, model classes) is docs/FORMATS.md.

    python ppo_pixel_breakout.py --env-id BreakoutNoFrameskip-v4                 # train (10M steps)
    python ppo_pixel_breakout.py --resume runs/<run_name>/checkpoint.pt          # continue that run
    python ppo_pixel_breakout.py --eval-checkpoint runs/<run_name>/checkpoint.pt --eval-episodes 10
    python ppo_pixel_breakout.py --eval-checkpoint ppo-BreakoutNoFrameskip-v4.zip     # an RL Zoo / SB3 agent, or a
                                                                                   # CleanRL .cleanrl_model

Environment semantics (FORMATS.md section 4; identical, step for step, in ppo_ram_breakout.py):
  * observation: 84x84 grayscale, max over the last 2 of 4 skipped frames, stack of 4, kept uint8 until
    the network (which divides by 255);
  * reset: ALE's vector env plays 0-29 random no-op frames and one FIRE frame (1-30 no-ops when the game
    has no FIRE); CleanRL plays 1-30 no-ops, then a FIRE step and a RIGHT step;
  * episodic life for learning: `life_loss_info=True` makes a lost life `terminated` while the game goes
    on. (Measured in ale-py 0.12.1: `episodic_life=True` instead RESETS THE WHOLE GAME on every lost life,
    so a game never gets past its first life; and the env never presses FIRE after a lost life, so in
    Breakout the ball is never served again unless the agent presses FIRE.)
  * fire reset after a lost life: the step after any terminal is played with FIRE (NOOP when the game has
    no FIRE), like CleanRL's EpisodicLifeEnv + FireResetEnv reset. After a game over (or a truncation) the
    vector env's NEXT_STEP autoreset makes that step a reset step whose action is ignored. Either way the
    step after a terminal is not the agent's decision, so it is masked out of the PPO update (it stays in
    the rollout, where its GAE term is cut off by the preceding terminal anyway);
  * rewards: `reward_clipping=False`, clipped with np.sign in Python for learning; the UNCLIPPED score is
    summed per full game (all lives) and logged as `charts/episodic_return`; `charts/episodic_length` is
    the game's length in emulator frames (as CleanRL's, whose RecordEpisodeStatistics sits below the frame
    skip). A game's end is detected by its episode frame counter starting again, which also counts
    truncated games (cut 108,000 frames after the end of their reset, the gymnasium ids' limit);
  * sticky actions as the gymnasium id says (`*NoFrameskip-v4`: 0.0, `ALE/*-v5`: 0.25); minimal action set.

Speed (none of it changes the algorithm; gains measured by bench/bench_throughput.py, figures in bench/README.md):
  * `--precision auto` (default): the CNN trunk (`network`) runs under bf16 autocast where the hardware has
    native bf16 (CUDA, or a CPU with AVX512-BF16 / AMX); the heads, log-probs, ratio, losses, gradients and Adam
    stay fp32, and checkpoints are fp32. `--precision fp32` turns it off;
  * torch uses all usable cores (`--torch-threads`); on cores shared with other busy processes use
    `--torch-threads 1`: threads of one parallel region then wait for each other's time slices (measured 11 SPS
    with 2 threads against 81 with 1 beside a training run on 2 cores);
  * channels-last CNN weights (`--channels-last`, default), fused Adam, uint8 frames until the network.

Beyond CleanRL: checkpoints (`--save-interval`, at the end, on Ctrl-C or SIGTERM), `--resume`, an evaluation
mode (`--eval-checkpoint`, `--eval-episodes`, `--eval-greedy`, `--eval-epsilon`, `--eval-max-frames`,
`--eval-num-envs`, `--eval-out`), `--runs-dir`, `--env-threads`, `--torch-threads`, `--precision`, `--compile`,
`--channels-last`, run.json (with the env settings and the precision / threads used), `perf/*` timing tags
(emulation / inference / update / logging seconds per iteration, also printed as a split at the end).
Videos and tracking, as CleanRL's flags: `--capture-video` records env 0's games during training (games 0, 1, 8, 27,
..., 729, then every 1000th: gymnasium RecordVideo's schedule) and every game of an evaluation, as MP4 files under
`<video-dir>/<run_name>/` (evaluation: `.../eval-step<global_step>/`, each game's file named in eval.json): the
RGB screen at full resolution, one frame per agent step at 15 frames/s (the game's own speed), VP9 in MP4 written by
OpenCV's VideoWriter (browsers and W&B play it). ale-py's AtariVectorEnv returns only the 84x84 gray stack and
cannot render one env, so a second AtariVectorEnv (`GameRecorder`) with RGB frames at the screen's own size plays
the same games as env 0: seeded alike and given env 0's actions it is env 0 step for step (checked at every step;
recording stops with a warning if it ever is not). It costs one more emulator; what the agent sees and learns is
unchanged (tests/test_video.py: the same seed gives the same weights with and without it).
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
import gzip
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
import zipfile
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
from ale_py.vector_env import AtariVectorEnv
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

gym.register_envs(ale_py)

AGENT_KIND = "pixel"
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
    env_threads: int = 0
    """threads of the C++ vector env (0: min(num_envs, usable CPU cores))"""
    torch_threads: int = 0
    """torch CPU threads (0: all usable CPU cores; bench/bench_throughput.py measures this default against 1)"""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """CNN trunk precision: bf16 autocast (heads, log-probs, ratio, losses and Adam stay fp32); auto: bf16 where the
    CUDA GPU or the CPU (AVX512-BF16 / AMX) supports it, else fp32. Checkpoints are fp32 either way"""
    compile: bool = False
    """compile the agent's two forward calls with torch.compile (off by default: compiling took 20-40 s per run on 2
    shared EPYC cores with torch 2.13 CPU, bench/bench_throughput.py --compile; bench/README.md)"""
    channels_last: bool = True
    """keep the CNN's weights channels-last (NHWC): the same network; in fp32 the PPO update was 13-17% faster on 2
    shared EPYC cores (torch 2.13 CPU), with the bf16 trunk training SPS x0.96-1.05, no clear gain (python
    bench/bench_throughput.py, its --no-channels-last setting, quiet 2-core EPYC; bench/README.md)"""

    # Evaluation mode
    eval_checkpoint: Optional[str] = None
    """evaluate this checkpoint.pt instead of training; writes eval.json next to it (or --eval-out). Also takes an agent trained
    elsewhere (FORMATS.md section 6): a Stable-Baselines3 PPO / A2C (CnnPolicy) or DQN zip, a CleanRL ppo_atari.py /
    dqn_atari.py state_dict (.cleanrl_model), a cleanba PPO file (Flax msgpack; Nature or IMPALA CNN), an atari-agents
    DQN / M-DQN file (.gz), a Sample Factory 2.x APPO checkpoint (checkpoint_p0/checkpoint_*.pth), played on --env-id"""
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
    "seed": "[0, 2147483647]", "save_interval": "[1, inf)", "env_threads": "[0, inf)", "torch_threads": "[0, inf)",
    "eval_episodes": "[1, inf)", "eval_epsilon": "[0, 1]", "eval_max_frames": "[1, inf)", "eval_num_envs": "[1, inf)",
    "total_timesteps": "[1, inf)", "learning_rate": "(0, inf)", "num_envs": "[1, inf)", "num_steps": "[1, inf)",
    "gamma": "[0, 1]", "gae_lambda": "[0, 1]", "num_minibatches": "[1, inf)", "update_epochs": "[1, inf)",
    "clip_coef": "[0, inf)", "ent_coef": "[0, inf)", "vf_coef": "[0, inf)", "max_grad_norm": "(0, inf)",
    "target_kl": "[0, inf)",
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


def env_settings(env_id):
    """Sticky-action probability and frame limit of the id, as ale_py registers them (v4: 0.0, v5: 0.25)."""
    kwargs = gym.registry[env_id].kwargs
    return float(kwargs.get("repeat_action_probability", 0.25)), int(kwargs.get("max_num_frames_per_episode") or 108000)


def make_envs(env_id, num_envs, num_threads, max_frames=None, noop_max=30, rgb=False):
    """The C++ vector env with CleanRL's preprocessing; see the module docstring for the flag choice. rgb: observe the
    RGB screen at its own size (ale.getScreenDims(): 210x160 on most games), no max, no stack, instead of the agent's
    84x84 gray stack (GameRecorder); the games are the same, only what is observed differs."""
    repeat_action_probability, default_max_frames = env_settings(env_id)
    height, width = 84, 84
    if rgb:
        ale = ale_py.ALEInterface()
        ale.setLoggerMode(ale_py.LoggerMode.Error)
        ale.loadROM(ale_py.roms.get_rom_path(game_from_env_id(env_id)))
        height, width = ale.getScreenDims()
    envs = AtariVectorEnv(
        game=game_from_env_id(env_id),
        num_envs=num_envs,
        num_threads=num_threads if num_threads > 0 else min(num_envs, usable_cores()),
        repeat_action_probability=repeat_action_probability,
        max_num_frames_per_episode=max_frames or default_max_frames,
        full_action_space=False,
        img_height=height,
        img_width=width,
        grayscale=not rgb,
        stack_num=1 if rgb else 4,
        frameskip=4,
        maxpool=not rgb,
        noop_max=noop_max,
        use_fire_reset=True,
        episodic_life=False,  # True would reset the whole game on each lost life
        life_loss_info=True,  # a lost life is `terminated`, the game goes on
        reward_clipping=False,  # clipped in Python: learning sees sign(r), logs see the score
        autoreset_mode="NextStep",
    )
    action_set = list(envs.ale.get_action_set())
    # the action of the step after a terminal: FIRE after a lost life (CleanRL's FireResetEnv), else NOOP
    reset_action = action_set.index(ale_py.Action.FIRE) if ale_py.Action.FIRE in action_set else 0
    return envs, reset_action


class GameRecorder:
    """--capture-video for the C++ vector env, whose observation is the agent's 84x84 gray stack and which cannot
    render one env's screen: a second AtariVectorEnv of `n` envs (make_envs with rgb) plays the same games as envs
    0..n-1 of the agent's. Reset with the same seed (env i gets seed + i in both) and stepped with the same actions,
    its env i is the agent's env i step for step: the same noop starts, sticky actions, rewards, lives and frame
    counters (measured identical in ale-py 0.12.1; checked at every step: if they ever differ, recording stops with a
    warning). One more emulator per recorded env; the agent's envs, random numbers and learning are untouched.
    Env i's games go to a VideoRecorder with prefix `<prefix>env<i>`, recording its first games[i] games (evaluation),
    or those of video_wanted (games=None, training)."""

    def __init__(self, env_id, n, max_frames, folder, prefix, fourcc, games=None):
        self.envs, _ = make_envs(env_id, n, 1, max_frames=max_frames, rgb=True)
        self.recorders = [VideoRecorder(folder, f"{prefix}env{i}", 60 // 4, fourcc, None if games is None else games[i])
                          for i in range(n)]
        self.prev_frames = None

    def reset(self, seed):
        frames, infos = self.envs.reset(seed=seed)
        self.prev_frames = infos["episode_frame_number"].copy()
        for recorder, frame in zip(self.recorders, frames):
            recorder.start_game(frame[0])

    def step(self, actions, reward, infos):
        """actions: the actions the agent's envs just took (the first n are replayed here); reward, infos: what the
        agent's envs returned for them."""
        if self.envs is None:
            return
        n = len(self.recorders)
        frames, own_reward, _, _, own = self.envs.step(actions[:n])
        if not (np.array_equal(own_reward, reward[:n]) and all(np.array_equal(own[k], infos[k][:n])
                                                               for k in ("lives", "episode_frame_number"))):
            print("warning: --capture-video: the recording env no longer plays the agent's games step for step; "
                  "recording stopped", flush=True)
            self.close()
            return
        started = own["episode_frame_number"] < self.prev_frames  # a new game: its frame counter starts again
        self.prev_frames = own["episode_frame_number"].copy()
        for i, recorder in enumerate(self.recorders):
            (recorder.start_game if started[i] else recorder.add)(frames[i, 0])

    def close(self):
        for recorder in self.recorders:
            recorder.end_game()
        if self.envs is not None:
            self.envs.close()
            self.envs = None


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


def load_checkpoint(path):
    """Read and check a checkpoint (FORMATS.md section 2), or an agent trained by Stable-Baselines3 / CleanRL
    (read_external_agent: a dict with "source", for evaluation only); any problem is one `error:` line."""
    if not os.path.isfile(path):
        fail(f"checkpoint '{path}' not found")
    try:
        external = read_external_agent(path)
    except ValueError as e:
        fail(str(e))
    if external is not None:
        return external
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
        Agent(**ckpt["model_kwargs"]).load_state_dict(ckpt["state_dict"])
    except Exception as e:
        fail(f"checkpoint '{path}' does not rebuild the {AGENT_KIND} model: {str(e).splitlines()[0][:200]}")
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


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_precision(precision, device):
    """--precision -> the trunk's autocast dtype (None: fp32). bf16 only where the hardware does it natively:
    emulated bf16 (a CPU without AVX512-BF16 or AMX) is slower than fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        flags = ""
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo") as f:
                flags = next((l for l in f if l.startswith("flags")), "")
        native = " avx512_bf16" in flags or " amx_bf16" in flags
    if precision == "bf16" and not native:
        fail(f"--precision bf16: this {device.type.upper()} has no native bf16 (use --precision auto or fp32)")
    return torch.bfloat16 if native else None


def format_seconds(s):
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def evaluate(args, ckpt, ckpt_path, device, wandb=None):
    """Play `eval_episodes` full games with the checkpoint's policy; print and write the result (eval_output: eval.json
    beside the checkpoint, or --eval-out). An agent trained
    elsewhere (ckpt["source"]) plays on this script's observations (AtariVectorEnv), not its own pipeline's
    (docs/results/external_agents_check.md has the measured difference); a Q-network (CleanRL / SB3 DQN) acts greedily on its
    Q-values (argmax; softmax sampling of Q-values is not how DQN acts), with --eval-epsilon as its exploration.
    With --capture-video every game is recorded (GameRecorder) under `<video-dir>/<run_name>/eval-step<global_step>/`,
    its file named in eval.json; with --track (wandb: the module) the scores and videos go to a W&B run
    `<run_name>-eval-step<N>`."""
    out = eval_output(args, ckpt, ckpt_path)  # checked before any game is played
    model_class = {"impala-cnn": ImpalaAgent, "sample-factory-cnn": SampleFactoryAgent}.get(ckpt.get("architecture"), Agent)
    agent = model_class(**ckpt["model_kwargs"]).to(device)
    agent.load_state_dict(ckpt["state_dict"])
    agent.eval()
    source = ckpt.get("source")
    greedy = args.eval_greedy or (source is not None and source["actor"] == "Q-values")
    n_envs = max(1, min(args.eval_episodes, args.eval_num_envs))
    envs, reset_action = make_envs(args.env_id, n_envs, args.env_threads, max_frames=args.eval_max_frames)
    if envs.single_action_space.n != ckpt["model_kwargs"]["n_actions"]:
        envs.close()
        fail(f"'{ckpt_path}' has {ckpt['model_kwargs']['n_actions']} actions; {args.env_id} has {envs.single_action_space.n}")
    # a fixed number of games per env (not the first N to end, which would favour short games)
    quota = np.array([args.eval_episodes // n_envs + (i < args.eval_episodes % n_envs) for i in range(n_envs)])
    played = np.zeros(n_envs, dtype=int)
    results, videos = [], []
    # an agent trained elsewhere has no run name (its file's name stands in) and may have no step count
    eval_name = os.path.join(ckpt.get("run_name") or os.path.splitext(os.path.basename(ckpt_path))[0],
                             "eval" if ckpt["global_step"] is None else f"eval-step{ckpt['global_step']}")
    video_folder = os.path.join(args.video_dir, eval_name)
    recorder = (GameRecorder(args.env_id, n_envs, args.eval_max_frames, video_folder, "", video_codec(video_folder), quota)
                if args.capture_video else None)
    wandb_run = start_wandb(wandb, args, eval_name.replace(os.sep, "-"), "eval") if args.track else None
    rng = np.random.default_rng(args.seed)
    next_obs, infos = envs.reset(seed=args.seed)
    if recorder is not None:
        recorder.reset(seed=args.seed)
    done = np.zeros(n_envs, dtype=bool)
    truncated = np.zeros(n_envs, dtype=bool)
    game_return = np.zeros(n_envs)
    prev_frames = infos["episode_frame_number"].copy()
    print(f"evaluating {ckpt_path} (global_step {ckpt['global_step']}) on {args.env_id}: {args.eval_episodes} games, "
          f"{'greedy' if greedy else 'sampled'} actions, epsilon {args.eval_epsilon}", flush=True)
    if source is not None:
        print(f"trained elsewhere: {source['library']} {source['algorithm']} ({source['policy']}), layers "
              + ", ".join(f"{o}={t}" for o, t in source["layer_map"].items())
              + (f"; trained on {source['trained_on']}" if source.get("trained_on") else "")
              + f"; it sees this script's observations, not those of its own pipeline ({source['pipeline']})", flush=True)
    while (played < quota).any():
        if STOP["requested"]:
            if recorder is not None:
                recorder.close()  # the games so far keep their videos
            print(f"interrupted: {out} not written", file=sys.stderr)
            sys.exit(130)
        with torch.no_grad():
            logits = agent.actor(agent.network(torch.from_numpy(next_obs).to(device).float() / 255.0))
            action = logits.argmax(1) if greedy else Categorical(logits=logits).sample()
        action = action.cpu().numpy()
        explore = rng.random(n_envs) < args.eval_epsilon
        action[explore] = rng.integers(envs.single_action_space.n, size=int(explore.sum()))
        action[done] = reset_action
        next_obs, reward, terminations, truncations, infos = envs.step(action)
        if recorder is not None:
            recorder.step(action, reward, infos)
        ended = infos["episode_frame_number"] < prev_frames
        for i in np.flatnonzero(ended):
            if played[i] < quota[i]:
                video = os.path.abspath(os.path.join(video_folder, f"env{i}-game{played[i]}.mp4"))
                videos.append(video if os.path.isfile(video) else None)  # None: recording had stopped (a warning said why)
                played[i] += 1
                results.append((float(game_return[i]), int(prev_frames[i]), bool(truncated[i])))
                print(f"game {len(results)}/{args.eval_episodes}: return {game_return[i]:.0f}, {prev_frames[i]} frames"
                      + (" (truncated)" if truncated[i] else "") + (f", video {videos[-1]}" if recorder else ""), flush=True)
                if wandb_run is not None:
                    wandb_run.log({"eval/episodic_return": game_return[i], "eval/episodic_length": prev_frames[i]})
        game_return = np.where(ended, 0.0, game_return) + reward
        truncated = np.where(ended, False, truncated | truncations)
        prev_frames = infos["episode_frame_number"].copy()
        done = np.logical_or(terminations, truncations)
    envs.close()
    if recorder is not None:
        recorder.close()
    returns = [r for r, _, _ in results]
    report = {"checkpoint": os.path.abspath(ckpt_path), "episodes": len(returns), "returns": returns,
              "mean": float(np.mean(returns)), "std": float(np.std(returns)), "lengths": [l for _, l, _ in results],
              "truncated": [t for _, _, t in results], "agent": AGENT_KIND, "env_id": args.env_id,
              "global_step": None if ckpt["global_step"] is None else int(ckpt["global_step"]), "greedy": greedy,
              "epsilon": args.eval_epsilon, "max_frames": args.eval_max_frames, "seed": args.seed, "source": source,
              "videos": videos if recorder else None}
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
        if "source" in ckpt:  # trained elsewhere (SB3, CleanRL): evaluated on --env-id, never trained further here
            if args.resume:
                fail(f"'{args.resume}' is a {ckpt['source']['library']} {ckpt['source']['algorithm']} agent: --resume "
                     "takes this script's checkpoint.pt (evaluate it with --eval-checkpoint)")
        else:
            saved = {f.name: ckpt["args"][f.name] for f in fields(Args) if f.name in ckpt["args"]}
            saved.update(resume=None, eval_checkpoint=None)
            if args.eval_checkpoint:  # an evaluation records or tracks only when asked to, whatever the training did
                saved.update(capture_video=False, track=False)
            saved.setdefault("precision", "fp32")  # runs saved before --precision existed trained in fp32
            args = parse_args(default=replace(Args(), **saved))  # saved args, overridden by the command line
            if args.env_id != ckpt["env_id"]:
                fail(f"checkpoint '{ckpt_path}' is for {ckpt['env_id']}, not {args.env_id}")
    check_ranges(args, RANGES)
    game = game_from_env_id(args.env_id)
    wandb = require_wandb() if args.track else None
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
    torch.set_num_threads(args.torch_threads if args.torch_threads > 0 else usable_cores())

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    trunk_dtype = resolve_precision(args.precision, device)

    if args.eval_checkpoint:
        if why := trained_game_mismatch(ckpt.get("source"), game):
            fail(f"--eval-checkpoint '{args.eval_checkpoint}': {why} (pass its game's --env-id)")
        evaluate(args, ckpt, args.eval_checkpoint, device, wandb)
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
    runtime = {"precision": "bf16" if trunk_dtype is not None else "fp32", "torch_threads": torch.get_num_threads(),
               "env_threads": args.env_threads or min(args.num_envs, usable_cores()), "torch": str(torch.__version__),
               "ale_py": ale_py.__version__}

    # env setup
    envs, reset_action = make_envs(args.env_id, args.num_envs, args.env_threads)
    n_actions = int(envs.single_action_space.n)
    # --capture-video: env 0's games in full-resolution RGB, from a twin of env 0 (a resumed run's files say from where)
    recorder = (GameRecorder(args.env_id, 1, None, video_folder, f"from-step{global_step}-" if ckpt is not None else "", fourcc)
                if args.capture_video else None)

    agent = Agent(n_actions=n_actions, in_channels=4).to(device)
    agent.trunk_dtype = trunk_dtype
    if args.channels_last:  # before the optimizer takes the parameters; checkpoints load into either layout
        agent = agent.to(memory_format=torch.channels_last)
    # fused Adam: one kernel for all parameters, the same update rule (~2 ms of ~60 ms per CPU minibatch step)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=device.type in ("cpu", "cuda"))
    if ckpt is not None:
        if ckpt["model_kwargs"] != {"n_actions": n_actions, "in_channels": 4}:
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
            "ram_vars": None, "env_settings": env_config, "runtime": runtime, "sessions": sessions()}

    def write_failed(e, what):
        """A write failed (a full disk, a folder gone read-only): stop. What was written stays whole (the last checkpoint
        too: temp file + rename); run.json says what happened, if it can still be written; one `error:` line, exit 2."""
        said = False
        with contextlib.suppress(OSError):
            write_json(os.path.join(run_dir, "run.json"),
                       {**run_record(f"failed: {write_problem(e)}"), "error": f"cannot write {what}: {e.strerror or e}"})
            said = True
        envs.close()
        if recorder is not None:
            recorder.close()
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
            "model_kwargs": {"n_actions": n_actions, "in_channels": 4},
            "state_dict": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
            "optimizer": optimizer.state_dict(), "global_step": int(global_step), "iteration": int(iteration_done),
            "args": asdict(args), "run_name": run_name, "wall_seconds": wall_before + time.time() - run_start,
            "ram_indices": None, "ram_vars": None, "rng": rng_state(), "env_settings": env_config,
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
    if recorder is not None:
        recorder.reset(seed=args.seed + global_step)
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
            if recorder is not None:
                recorder.step(action_np, reward, infos)
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
    envs.close()
    if recorder is not None:
        recorder.close()
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
