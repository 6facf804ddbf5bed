"""Watching the agents play: --capture-video and --track in both training scripts (training and evaluation), and
probe_video.py's decoded-state video. Tiny budgets, every script a subprocess, chained only through its files; the
screen size comes from the emulator and the paddle byte is found from it (test_probe.paddle_from_emulator)."""
import json
import os
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest
import torch
from ale_py import ALEInterface, LoggerMode, roms

from conftest import ROOT, assert_clean_error, run_script
from test_probe import paddle_from_emulator

PIXEL, RAM, VIDEO = "ppo_pixel_breakout.py", "ppo_ram_breakout.py", "probe_video.py"
ENV = "BreakoutNoFrameskip-v4"
RAM_VARS = ROOT / "ram_vars" / f"{ENV}.json"
# 2 envs x 64 steps x 8 iterations: env 0 plays 512 steps, a random-ish agent ends two or three games in them
TRAIN = ["--env-id", ENV, "--num-envs", "2", "--num-steps", "64", "--total-timesteps", "1024", "--torch-threads", "1",
         "--seed", "1"]
AGENTS = {"pixel": (PIXEL, []), "ram": (RAM, ["--ram-vars", RAM_VARS])}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE_TINY = ["--num-base-states", "6", "--samples-per-var", "6", "--top-k", "2", "--rollout-steps", "60",
              "--importance-steps", "32", "--causal-pairs", "8", "--random-directions", "2", "--no-report",
              "--torch-threads", "1"]


def screen_size():
    """(width, height) of Breakout's screen, from the emulator."""
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.loadROM(roms.get_rom_path("breakout"))
    height, width = ale.getScreenDims()
    return int(width), int(height)


def decode(path):
    """Read a video back with OpenCV: (number of frames, (width, height) of each, mean pixel value)."""
    cap = cv2.VideoCapture(str(path))
    sizes, means = set(), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        sizes.add((frame.shape[1], frame.shape[0]))
        means.append(frame.mean())
    cap.release()
    assert len(sizes) <= 1, sizes
    return len(means), sizes.pop() if sizes else None, float(np.mean(means)) if means else 0.0


def only(folder):
    dirs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Each agent trained twice with the same seed: without and with --capture-video."""
    d = tmp_path_factory.mktemp("video")
    out = {"dir": d}
    for agent, (script, extra) in AGENTS.items():
        for capture in (False, True):
            flags = ["--capture-video", "--video-dir", d / f"videos_{agent}"] if capture else []
            proc = run_script(script, *TRAIN, *extra, "--runs-dir", d / f"runs_{agent}_{capture}", *flags, cwd=d)
            out[agent, capture] = only(d / f"runs_{agent}_{capture}"), proc
    return out


@pytest.mark.parametrize("agent", AGENTS)
def test_recording_does_not_change_what_is_learned(trained, agent):
    (plain, _), (recorded, _) = trained[agent, False], trained[agent, True]
    a = torch.load(plain / "checkpoint.pt", map_location="cpu", weights_only=True)
    b = torch.load(recorded / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert (a["args"]["capture_video"], b["args"]["capture_video"]) == (False, True)
    assert a["global_step"] == b["global_step"] == 1024
    for key, weight in a["state_dict"].items():
        assert torch.equal(weight, b["state_dict"][key]), key


@pytest.mark.parametrize("agent", AGENTS)
def test_training_records_env0_games_in_full_resolution(trained, agent):
    run_dir, proc = trained[agent, True]
    folder = trained["dir"] / f"videos_{agent}" / run_dir.name
    names = sorted(p.name for p in folder.iterdir())
    # gymnasium's RecordVideo schedule: games 0 and 1 (then 8, 27, ...); a game is written under a temp name first
    assert names[:2] == ["env0-game0.mp4", "env0-game1.mp4"] and set(names) <= {f"env0-game{g}.mp4" for g in (0, 1, 8)}, names
    assert "warning" not in proc.stdout, proc.stdout[-2000:]  # the pixel agent's recording env kept in step with env 0
    for name in names:
        frames, size, mean = decode(folder / name)
        assert frames >= 10 and size == screen_size() and mean > 5, (name, frames, size, mean)  # the game, not 84x84


@pytest.mark.parametrize("agent", AGENTS)
def test_evaluation_records_every_game(trained, agent, tmp_path):
    script, extra = AGENTS[agent]
    run_dir, _ = trained[agent, False]
    proc = run_script(script, "--eval-checkpoint", run_dir / "checkpoint.pt", "--eval-episodes", "3", "--eval-num-envs", "2",
                      "--eval-max-frames", "3000", "--capture-video", "--video-dir", tmp_path / "videos", cwd=tmp_path)
    report = json.loads((run_dir / "eval.json").read_text())
    assert len(report["videos"]) == 3 and len(set(report["videos"])) == 3, report["videos"]
    folder = tmp_path / "videos" / run_dir.name / "eval-step1024"
    assert sorted(p.name for p in folder.iterdir()) == sorted(os.path.basename(v) for v in report["videos"])
    for video, length in zip(report["videos"], report["lengths"]):
        frames, size, _ = decode(video)
        # one frame after the reset, then one per agent step of 4 frames; the reset's 0-29 noop frames are not steps
        assert size == screen_size() and 0 <= length / 4 - frames <= 8, (video, frames, length)
    assert proc.stdout.count(", video ") == 3


def test_track_logs_to_wandb_offline(trained, tmp_path):
    """--track as CleanRL: the TensorBoard scalars synced and the videos uploaded, here into an offline W&B run."""
    pytest.importorskip("wandb", reason="wandb is optional (pip install wandb); CI installs it for this test")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    run_script(PIXEL, *TRAIN[:-4], "--total-timesteps", "512", "--seed", "1", "--runs-dir", tmp_path / "runs", "--track",
               "--capture-video", "--video-dir", tmp_path / "videos", cwd=tmp_path, env_extra=env)
    run_dir = only(tmp_path / "runs")
    [wb] = list((tmp_path / "wandb").glob(f"offline-run-*-{run_dir.name}"))
    log = next(wb.glob("run-*.wandb")).read_bytes()
    assert b"charts/episodic_return" in log and b"losses/value_loss" in log  # TensorBoard synced
    assert len(list(wb.glob("files/media/videos/**/*.mp4"))) >= 1 and b"videos/env0" in log
    # the memory agent's evaluation: its scores and videos go to a run of their own
    ram_run, _ = trained["ram", False]
    run_script(RAM, "--eval-checkpoint", ram_run / "checkpoint.pt", "--eval-episodes", "2", "--eval-num-envs", "2",
               "--eval-max-frames", "2000", "--eval-out", tmp_path / "eval.json", "--track", "--capture-video",
               "--video-dir", tmp_path / "videos", cwd=tmp_path, env_extra=env)  # eval.json: the other test's
    [wb] = list((tmp_path / "wandb").glob(f"offline-run-*-{ram_run.name}-eval-step1024"))
    log = next(wb.glob("run-*.wandb")).read_bytes()
    assert b"eval/episodic_return" in log and len(list(wb.glob("files/media/videos/**/*.mp4"))) == 2


@pytest.mark.parametrize("agent", AGENTS)
def test_track_without_wandb_is_one_error_line(agent, tmp_path):
    """The optional dependency missing (a stand-in module that fails to import, whether wandb is installed or not)."""
    (tmp_path / "shim").mkdir()
    (tmp_path / "shim" / "wandb.py").write_text("raise ModuleNotFoundError(\"No module named 'wandb'\")\n")
    script, extra = AGENTS[agent]
    proc = run_script(script, *TRAIN, *extra, "--runs-dir", tmp_path / "runs", "--track", cwd=tmp_path, check=False,
                      env_extra={"PYTHONPATH": str(tmp_path / "shim")})
    assert_clean_error(proc, "pip install wandb")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("agent", AGENTS)
def test_unwritable_video_folder_is_one_error_line(agent, tmp_path):
    (tmp_path / "a_file").write_text("")
    script, extra = AGENTS[agent]
    proc = run_script(script, *TRAIN, *extra, "--runs-dir", tmp_path / "runs", "--capture-video", "--video-dir",
                      tmp_path / "a_file", cwd=tmp_path, check=False)
    assert_clean_error(proc, "cannot write the video folder")


# ---- the decoded-state video (probe_video.py) on a tiny probe of the tiny agents
@pytest.fixture(scope="module")
def probed(trained):
    d = trained["dir"]
    paddle, _ = paddle_from_emulator()
    pixel, ram = trained["pixel", False][0] / "checkpoint.pt", trained["ram", False][0] / "checkpoint.pt"
    run_script("probe_function_vectors.py", "--pixel-checkpoint", pixel, "--ram-checkpoint", ram, "--ram-vars", RAM_VARS,
               "--out-dir", d / "probe", "--include-vars", str(paddle), *PROBE_TINY, cwd=d)
    return {"dir": d / "probe", "paddle": paddle, "pixel": pixel, "ram": ram}


@pytest.fixture(scope="module")
def decoded(probed):
    proc = run_script(VIDEO, "--probe-dir", probed["dir"], "--layer", "relu1", "--vars", str(probed["paddle"]), "--frames", "24",
                      "--fit-steps", "48", "--num-envs", "2", "--calib-bases", "2", "--torch-threads", "1")
    return proc, probed["dir"] / "decoded_relu1_natural.mp4"


def test_decoded_state_video_has_the_frames_asked_for(probed, decoded):
    d, paddle = probed["dir"], probed["paddle"]
    proc = decoded[0]
    meta = json.loads((d / "decoded_relu1_natural.json").read_text())
    frames, size, mean = decode(d / "decoded_relu1_natural.mp4")
    assert frames == meta["frames"] == 24 and list(size) == meta["frame_size"] and mean > 5, (frames, size, meta["frame_size"])
    assert (meta["format"], meta["version"], meta["layer"], meta["readout"]) == ("memory-pixel-interp/probe-video", 1, "relu1",
                                                                                 "natural")
    [var] = meta["variables"]
    assert var["index"] == paddle and var["unit"] is not None and var["readout"]["n_frames"] == 2 * 48
    assert var["position"] is not None or var["position_reason"]  # a marker, or why there is none
    assert var["video_score"]["mae"] >= 0 and "[done]" in proc.stdout
    # the report of that probe folder shows the video
    page = (d / "report.html").read_text()
    assert "<video src='decoded_relu1_natural.mp4'" in page and "Decoded-state videos" in page
    # the probe's own (intervention) read-out, without rebuilding the report
    run_script(VIDEO, "--probe-dir", d, "--readout", "intervention", "--frames", "5", "--fit-steps", "16", "--num-envs", "1",
               "--calib-bases", "1", "--no-report", "--torch-threads", "1")
    assert decode(d / "decoded_relu3_intervention.mp4")[0] == 5


@pytest.mark.parametrize("case", ["not probed", "no probe", "wrong agent", "not mp4"])
def test_decoded_state_video_bad_input_is_one_error_line(probed, case, tmp_path):
    flags = {"not probed": ["--probe-dir", probed["dir"], "--vars", "127"],
             "no probe": ["--probe-dir", tmp_path / "nothing"],
             "wrong agent": ["--probe-dir", probed["dir"], "--pixel-checkpoint", probed["ram"]],
             "not mp4": ["--probe-dir", probed["dir"], "--out", tmp_path / "video.avi"]}[case]
    proc = run_script(VIDEO, *flags, cwd=tmp_path, check=False)
    assert_clean_error(proc)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium; not in the "
                    "Docker image: on its Ubuntu chromium is a snap, and snaps do not run in a container)")
def test_videos_play_in_a_browser(trained, decoded, tmp_path):
    """The codec is one browsers play (VP9 in MP4): headless Chromium loads a training video and the decoded-state video
    and reports their size and length; an MPEG-4 Part 2 file (OpenCV's other MP4 codec) is the control it refuses."""
    run_dir, _ = trained["pixel", True]
    videos = {"train": trained["dir"] / "videos_pixel" / run_dir.name / "env0-game0.mp4", "decoded": decoded[1],
              "control": tmp_path / "mp4v.mp4"}
    writer = cv2.VideoWriter(str(videos["control"]), cv2.VideoWriter_fourcc(*"mp4v"), 15, (160, 210))
    for k in range(15):
        writer.write(np.full((210, 160, 3), 16 * k, np.uint8))
    writer.release()
    tags = "".join(f"<video id='{k}' src='{p.as_uri()}' muted preload='auto'></video>" for k, p in videos.items())
    page = tmp_path / "page.html"
    script = ("for (const v of document.querySelectorAll('video')) { v.addEventListener('loadeddata', () => { v.dataset.seen = "
              "v.videoWidth + 'x' + v.videoHeight + ' ' + v.duration.toFixed(1); }); v.addEventListener('error', () => { "
              "v.dataset.seen = 'error'; }); }")
    page.write_text(f"<!DOCTYPE html><html><body>{tags}<script>{script}</script></body></html>")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--allow-file-access-from-files",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    seen = dict(re.findall(r"<video id=\"(\w+)\"[^>]*data-seen=\"([^\"]*)\"", dom))
    width, height = screen_size()
    meta = json.loads(decoded[1].with_suffix(".json").read_text())
    assert seen.get("control") == "error", seen  # the check itself can fail
    assert seen.get("train", "").startswith(f"{width}x{height} "), seen
    assert seen.get("decoded") == f"{meta['frame_size'][0]}x{meta['frame_size'][1]} {24 / 15:.1f}", seen
