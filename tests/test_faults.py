"""Faults a run meets outside the happy path, one test per kind of fault (issue 25), each run end to end:

  * two trainings of the same env, experiment and seed started together: never one run folder for both;
  * an evaluation never replaces another checkpoint's result, and finds an unwritable output before playing;
  * compare_runs.py on event files cut short or corrupted (a real run's, damaged here): warned per run, in the summary;
  * a read-only or missing output folder, and a full disk: one `error:` line, exit 2, nothing already written lost,
    for every script that writes (the full disk is a small tmpfs, mounted where the machine allows it);
  * a write killed midway (SIGKILL) leaves a temp file: the next --resume removes it, and only it.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import ROOT, assert_clean_error, run_script

PIXEL, RAM = "ppo_pixel_breakout.py", "ppo_ram_breakout.py"
ENV_ID = "BreakoutNoFrameskip-v4"
TINY = ["--num-envs", "2", "--num-steps", "32", "--total-timesteps", "512", "--torch-threads", "1"]
STEPS = 512
TRAIN = {PIXEL: [], RAM: ["--ram-bytes", "all", "--env-processes", "1"]}  # the RAM agent without a RAM-variable file
MODELS = {PIXEL: ROOT / "models" / "breakout_pixel_ppo_500k.pt", RAM: ROOT / "models" / "breakout_ram_ppo_500k.pt"}
RAM_VARS = ROOT / "ram_vars" / f"{ENV_ID}.json"
EVAL = ["--eval-episodes", "1", "--eval-num-envs", "1", "--eval-max-frames", "400", "--torch-threads", "1"]
PROBE_TINY = ["--num-base-states", "6", "--samples-per-var", "6", "--top-k", "2", "--rollout-steps", "60",
              "--importance-steps", "32", "--causal-pairs", "8", "--random-directions", "2", "--no-report",
              "--torch-threads", "1"]
VIDEO_TINY = ["--frames", "5", "--fit-steps", "16", "--num-envs", "1", "--calib-bases", "1", "--no-report",
              "--torch-threads", "1"]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files(folder):
    """{relative path: sha256} of every file below folder."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def start(script, *args, cwd):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(path):
    """[(start, length of the data)] of the TFRecord records of an event file (8-byte length, 4-byte CRC, data, CRC)."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 8], "little")
        out.append((pos, n))
        pos += 16 + n
    return out


def run_dirs(runs):
    return sorted(p for p in runs.iterdir() if p.is_dir())


# ---- folders that cannot be written: a read-only tmpfs (root), a folder without write permission (other users),
# a full tmpfs. Mounted folders are unmounted at the end of the test.
@pytest.fixture
def mounts():
    done = []

    def mount(path, options):
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (a full disk cannot be made otherwise)")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"this machine does not allow mounting a tmpfs: {proc.stderr.strip() or proc.returncode}")
        done.append(path)
        return path

    yield mount
    for path in reversed(done):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def make_read_only(folder, mount):
    """Make `folder` (with what is in it) read-only: remounted read-only as root (root writes anything else), else
    without write permission."""
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        return
    keep = folder.with_name(folder.name + ".content")
    shutil.copytree(folder, keep)
    shutil.rmtree(folder)
    mount(folder, "size=64m")
    shutil.copytree(keep, folder, dirs_exist_ok=True)
    if subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow remounting a tmpfs read-only")


def fill(folder, keep_bytes):
    """Fill the tmpfs of `folder` with a filler file until `keep_bytes` (or less) are left free."""
    st = os.statvfs(folder)
    left = st.f_bavail * st.f_frsize - keep_bytes
    with open(folder / "filler", "wb") as f:
        while left > 0:
            try:
                f.write(b"\0" * min(left, 1 << 20))
                f.flush()
            except OSError:
                break
            left -= 1 << 20
    st = os.statvfs(folder)
    assert st.f_bavail * st.f_frsize <= keep_bytes + (1 << 20)


def assert_write_error(proc):
    """One `error:` line on stderr (its last line), exit code 2, no traceback."""
    assert_clean_error(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])


# ---- inputs made once per module
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny run of each training script, and a tiny probe of the shipped 500k agents."""
    d = tmp_path_factory.mktemp("made")
    out = {}
    for script in (PIXEL, RAM):
        runs = d / script[:-3]
        run_script(script, "--env-id", ENV_ID, *TRAIN[script], *TINY, "--save-interval", "100", "--runs-dir", runs, cwd=d)
        (out[script],) = run_dirs(runs)
    run_script("probe_function_vectors.py", "--pixel-checkpoint", MODELS[PIXEL], "--ram-checkpoint", MODELS[RAM],
               "--ram-vars", RAM_VARS, "--out-dir", d / "probe", *PROBE_TINY, cwd=d)
    out["probe"] = d / "probe"
    return out


def writing_command(script, out, made, tmp_path):
    """(argv, path of the output that a full disk must not harm): the script writing its output into `out`."""
    if script in (PIXEL, RAM):
        return [*TRAIN[script], *TINY, "--runs-dir", out], None
    if script == "extract_ram_vars.py":
        return ["--env-id", ENV_ID, "--total-frames", "2000", "--out-dir", out], out / f"{ENV_ID}.json"
    if script == "probe_function_vectors.py":
        return ["--pixel-checkpoint", MODELS[PIXEL], "--ram-checkpoint", MODELS[RAM], "--ram-vars", RAM_VARS,
                "--out-dir", out, *PROBE_TINY], out / "results.json"
    if script == "probe_report.py":
        return ["--out-dir", out], out / "report.html"
    if script == "probe_video.py":
        return ["--probe-dir", made["probe"], "--out", out / "decoded.mp4", *VIDEO_TINY], out / "decoded.json"
    if script == "compare_runs.py":
        return [made[RAM], "--out-dir", out], out / "summary.md"
    if script == "sweep.py":
        return ["--index-only", "--out-dir", out], out / "index.json"
    raise AssertionError(script)


WRITERS = [PIXEL, RAM, "extract_ram_vars.py", "probe_function_vectors.py", "probe_report.py", "probe_video.py",
           "compare_runs.py", "sweep.py"]


# ---- run folders are never shared
@pytest.mark.parametrize("script", [PIXEL, RAM])
def test_runs_started_together_never_share_a_folder(script, tmp_path):
    """Two trainings of one env, experiment name and seed, started at once, where every name of the coming minutes is
    taken already: each makes its own folder (the name made unique), the folders there are untouched; a second process
    in a run folder that one holds (the same --resume twice) is refused."""
    runs = tmp_path / "runs"
    prefix = f"{ENV_ID}__{script[:-3]}__1__"
    now = int(time.time())
    for t in range(now - 5, now + 600):
        (runs / f"{prefix}{t}").mkdir(parents=True)
        (runs / f"{prefix}{t}" / "keep").write_text(str(t))
    before = set(run_dirs(runs))
    procs = [start(script, "--env-id", ENV_ID, *TRAIN[script], *TINY, "--runs-dir", runs, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    new = sorted(set(run_dirs(runs)) - before)
    assert len(new) == 2, new
    for d in new:
        assert re.fullmatch(re.escape(prefix) + r"\d+-\d+", d.name), d.name  # the unique suffix after the CleanRL name
        run = json.loads((d / "run.json").read_text())
        assert (run["run_name"], run["status"], run["global_step"]) == (d.name, "finished", STEPS)
        assert len(list(d.glob("events.out.tfevents.*"))) == 1 and not (d / "keep").exists()
    assert all((d / "keep").read_text() == d.name.rsplit("__", 1)[1] for d in before)
    # a folder held by a training process: a second one is refused before it writes anything
    held = new[0]
    content = files(held)
    with open(held / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = run_script(script, "--resume", held / "checkpoint.pt", "--total-timesteps", STEPS + 64, cwd=tmp_path,
                          check=False)
    assert_write_error(proc)
    assert "another process is training in" in proc.stderr
    assert files(held) == content


# ---- evaluation results
@pytest.mark.parametrize("script", [PIXEL, RAM])
def test_evaluation_never_replaces_another_result(script, tmp_path, mounts):
    """Two checkpoints in one folder (models/): the second's default eval.json would replace the first's result, so it
    is refused before any game is played, and --eval-out writes it elsewhere; so is the first's with other actions
    (greedy) or another frame cap, while only the same evaluation run again replaces its own. An unwritable --eval-out is found before any game
    too."""
    models = tmp_path / "models"
    models.mkdir()
    a, b = models / "a.pt", models / "b.pt"
    shutil.copy(MODELS[script], a)
    ckpt = torch.load(a, map_location="cpu", weights_only=True)
    ckpt["global_step"] += 1  # another checkpoint of the run
    torch.save(ckpt, b)
    run_script(script, "--eval-checkpoint", a, *EVAL, cwd=tmp_path)
    first = json.loads((models / "eval.json").read_text())
    assert first["checkpoint"] == str(a.resolve()) and first["episodes"] == 1
    before = files(models)

    proc = run_script(script, "--eval-checkpoint", b, *EVAL, cwd=tmp_path, check=False)
    assert_write_error(proc)
    assert "--eval-out" in proc.stderr and str(a.resolve()) in proc.stderr
    assert "game 1/1" not in proc.stdout  # refused before playing
    assert files(models) == before

    run_script(script, "--eval-checkpoint", b, *EVAL, "--eval-out", tmp_path / "results" / "b.json", cwd=tmp_path)
    second = json.loads((tmp_path / "results" / "b.json").read_text())
    assert second["checkpoint"] == str(b.resolve()) and second["global_step"] == ckpt["global_step"]
    assert files(models) == before
    proc = run_script(script, "--eval-checkpoint", a, *EVAL, "--eval-greedy", cwd=tmp_path, check=False)
    assert_write_error(proc)  # a's result with other actions: kept too
    assert "sampled actions" in proc.stderr and "game 1/1" not in proc.stdout and files(models) == before
    proc = run_script(script, "--eval-checkpoint", a, *EVAL[:-4], "--eval-max-frames", "300", "--torch-threads", "1",
                      cwd=tmp_path, check=False)  # another frame cap: a result of its own, so the first one is kept
    assert_write_error(proc)
    assert "frame cap 400" in proc.stderr and "game 1/1" not in proc.stdout and files(models) == before
    run_script(script, "--eval-checkpoint", a, *EVAL, cwd=tmp_path)  # the same evaluation again replaces its own
    again = json.loads((models / "eval.json").read_text())
    assert again["checkpoint"] == str(a.resolve()) and again["returns"] == first["returns"]

    locked = tmp_path / "locked"
    locked.mkdir()
    make_read_only(locked, mounts)
    for out in (locked / "eval.json", locked / "missing" / "eval.json"):
        proc = run_script(script, "--eval-checkpoint", a, *EVAL, "--eval-out", out, cwd=tmp_path, check=False)
        assert_write_error(proc)
        assert "cannot write the evaluation result" in proc.stderr and "game 1/1" not in proc.stdout
    assert not list(locked.iterdir())


# ---- event files cut short or corrupt
def test_compare_runs_warns_where_events_stop_short_or_are_corrupt(made, tmp_path):
    """A real run trained in two pieces, then damaged as a crash, a full disk or a bad copy damages it: the second
    piece's event file cut in the middle; the first one's with a flipped byte; a third event file of another run in
    the folder (two runs that shared it). Each is warned for its run, in summary.md/json and index.html, and the
    figures say what they cover; the intact copy gets no warning."""
    base = tmp_path / "runs" / "intact"
    shutil.copytree(made[RAM], base)
    run_script(RAM, "--resume", base / "checkpoint.pt", "--total-timesteps", 2 * STEPS, cwd=tmp_path)
    events = sorted(base.glob("events.out.tfevents.*"))
    assert len(events) == 2 and json.loads((base / "run.json").read_text())["global_step"] == 2 * STEPS
    cut, flipped, shared = (tmp_path / "runs" / n for n in ("cut", "flipped", "shared"))
    for d in (cut, flipped, shared):
        shutil.copytree(base, d)
    second = cut / events[1].name
    start, _ = records(second)[len(records(second)) // 2]
    os.truncate(second, start + 20)  # inside the record in the middle
    first = flipped / events[0].name
    start, n = records(first)[len(records(first)) // 2]
    data = bytearray(first.read_bytes())
    data[start + 12 + n // 2] ^= 0xFF  # a byte of its data: its CRC no longer matches
    first.write_bytes(bytes(data))
    shutil.copy(next(made[PIXEL].glob("events.out.tfevents.*")), shared / "events.out.tfevents.9999999999.other.1.0")

    out = tmp_path / "compare"
    proc = run_script("compare_runs.py", tmp_path / "runs", "--out-dir", out, "--smooth", "1")
    summary = json.loads((out / "summary.json").read_text())
    runs = {os.path.basename(r["run_dir"]): r for r in summary["runs"]}
    assert runs["intact"]["coverage"] == {"env_steps_read": 2 * STEPS, "global_step": 2 * STEPS, "complete": True,
                                          "problems": []}
    assert not [w for w in summary["warnings"] if "intact" in w]
    expect = {"cut": ["it ends inside a record", f"run.json records global_step {2 * STEPS:,}"],
              "flipped": ["is corrupt", "piece 1"],
              "shared": ["3 event files for the 2 training piece(s)", "another run may share this folder"]}
    md, page = (out / "summary.md").read_text(), (out / "index.html").read_text()
    for name, needles in expect.items():
        cov = runs[name]["coverage"]
        assert not cov["complete"] and cov["global_step"] == 2 * STEPS
        for needle in needles:
            assert any(needle in p for p in cov["problems"]), (name, needle, cov["problems"])
            assert any(name in w and needle in w for w in summary["warnings"]), (name, needle)
            assert f"warning: {tmp_path / 'runs' / name}" in proc.stderr
            assert needle in md and needle in page
    assert runs["cut"]["env_steps"] < 2 * STEPS == runs["cut"]["coverage"]["global_step"]
    assert runs["flipped"]["env_steps"] == 2 * STEPS  # its last piece is whole: what is lost is in the first
    assert "read only in part: see the warnings" in md and "read only in part: see the warnings" in page  # per run
    assert "3 seed(s) read only in part" in md  # the group of the 4 copies (all seed 1)


# ---- a read-only or missing output folder
@pytest.mark.parametrize("script", WRITERS)
def test_read_only_or_missing_output_folder_is_one_error_line(script, made, tmp_path, mounts):
    """The output folder is read-only, or missing below a read-only folder: one `error:` line, exit 2, what the folder
    held kept."""
    out = tmp_path / "out"
    if script == "probe_report.py":
        shutil.copytree(made["probe"], out)  # the report is written beside the probe's results
    else:
        out.mkdir()
        (out / "old.txt").write_text("written before")
    before = files(out)
    make_read_only(out, mounts)
    for target in (out, out / "missing"):
        if script == "probe_report.py" and target != out:
            continue  # (the report's folder is its input: a missing one is a missing input)
        argv, _ = writing_command(script, target, made, tmp_path)
        proc = run_script(script, *argv, cwd=tmp_path, check=False)
        assert_write_error(proc)
        assert re.search(r"read-only|permission denied|not writable|cannot write", proc.stderr.splitlines()[-1], re.I), \
            proc.stderr[-1000:]
    assert files(out) == before


# ---- a full disk
@pytest.mark.parametrize("script", WRITERS)
def test_full_disk_is_one_error_line_and_keeps_what_was_written(script, made, tmp_path, mounts):
    """The output folder is on a full disk (a tmpfs filled up): one `error:` line, exit 2, every file written before
    unchanged, no temp file left. A training run (resumed there) says so in its run.json, its last checkpoint whole."""
    disk = mounts(tmp_path / "disk", "size=64m")
    if script in (PIXEL, RAM):
        run_dir = disk / made[script].name
        shutil.copytree(made[script], run_dir)
        before = files(run_dir)
        fill(disk, 256 * 1024)  # room for run.json and the events, not for a checkpoint
        proc = run_script(script, "--resume", run_dir / "checkpoint.pt", "--total-timesteps", STEPS + 64, cwd=tmp_path,
                          check=False)
        assert_write_error(proc)
        assert "disk full" in proc.stderr.splitlines()[-1] and "checkpoint.pt" in proc.stderr.splitlines()[-1]
        run = json.loads((run_dir / "run.json").read_text())
        assert run["status"] == "failed: disk full" and "No space left" in run["error"]
        assert digest(run_dir / "checkpoint.pt") == before["checkpoint.pt"]  # the last checkpoint, whole
        assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == STEPS
        assert f"--resume {run_dir / 'checkpoint.pt'}" in proc.stdout  # how to go on
        assert not list(run_dir.glob("*.tmp-*"))
        return
    out = disk / "out"
    if script == "probe_report.py":
        shutil.copytree(made["probe"], out)
    else:
        out.mkdir()
    argv, old = writing_command(script, out, made, tmp_path)
    old.write_text("written before")
    before = files(out)
    fill(disk, 0)
    proc = run_script(script, *argv, cwd=tmp_path, check=False)
    assert_write_error(proc)
    assert re.search(r"no space left|disk full", proc.stderr.splitlines()[-1], re.I), proc.stderr[-1000:]
    assert {k: v for k, v in files(out).items() if k in before} == before
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


# ---- a write killed midway
@pytest.mark.parametrize("script", [PIXEL, RAM])
def test_resume_removes_the_temp_files_of_a_killed_write(script, made, tmp_path):
    """A checkpoint write killed by SIGKILL leaves `checkpoint.pt.tmp-<pid>`: --resume, holding the run folder's lock,
    removes every temp file of this script's own writes, whatever pid names it (a dead one, a live or reused one, 1
    in a container), and keeps every other file (another script's temp file, other files)."""
    run_dir = tmp_path / made[script].name
    shutil.copytree(made[script], run_dir)
    killed = subprocess.Popen(["sleep", "60"])  # a writer killed midway: its pid is gone
    killed.kill()
    killed.wait()
    orphans = [run_dir / f"checkpoint.pt.tmp-{killed.pid}", run_dir / f"run.json.tmp-{killed.pid}",
               run_dir / f"checkpoint.pt.tmp-{os.getpid()}", run_dir / "checkpoint.pt.tmp-1"]
    kept = [run_dir / f"notes.txt.tmp-{killed.pid}", run_dir / "notes.txt", run_dir / "checkpoint.pt.tmp-x"]
    for p in orphans + kept:
        p.write_bytes(b"x" * 1000)
    proc = run_script(script, "--resume", run_dir / "checkpoint.pt", "--total-timesteps", STEPS + 64, cwd=tmp_path)
    assert "removed 4 temp file(s) of a killed write" in proc.stdout
    assert not any(p.exists() for p in orphans)
    assert all(p.read_bytes() == b"x" * 1000 for p in kept)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("script", [PIXEL, RAM])
def test_full_disk_under_the_event_file_is_one_error_line(script, mounts, tmp_path):
    """The disk fills while TensorBoard's writer thread writes the event file: the thread's error reaches the script's
    one `error:` line and exit 2 (the writer's next call raises it), with no thread traceback and no leak report."""
    disk = mounts(tmp_path / "disk", "size=1m")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import {script[:-3]} as m
        def on_error(e):
            print("error: event file: " + m.write_problem(e), file=sys.stderr)
            sys.exit(2)
        writer = m.RunWriter({str(disk / "run")!r}, on_error)
        f = open({str(disk / "filler")!r}, "wb")
        try:
            while True:
                f.write(bytes(65536))
                f.flush()
        except OSError:
            pass
        try:
            f.close()
        except OSError:
            pass
        for step in range(20000):
            writer.add_scalar("charts/x", float(step), step)
        writer.close()
        print("no error")
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert_write_error(proc)
    assert "error: event file: disk full" in proc.stderr and "Exception in thread" not in proc.stderr
