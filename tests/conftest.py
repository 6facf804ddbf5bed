"""Shared test helpers: every script is run end-to-end as a subprocess, like CleanRL's tests."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(script, *args, cwd=None, timeout=600, check=True, env_extra=None):
    """Run `python <ROOT>/<script> *args` in `cwd`; return the CompletedProcess (text stdout/stderr).

    With check=True a non-zero exit fails the test and shows the script's output.
    """
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"})
    if env_extra:
        env.update(env_extra)
    cmd = [sys.executable, str(ROOT / script), *[str(a) for a in args]]
    proc = subprocess.run(cmd, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def assert_clean_error(proc, *needles):
    """A bad-input run: non-zero exit, one clear `error:` line on stderr, no traceback."""
    assert proc.returncode != 0, f"expected failure, got 0\n{proc.stdout[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert lines and lines[-1].startswith("error:"), proc.stderr[-3000:]
    for n in needles:
        assert n.lower() in lines[-1].lower(), (n, lines[-1])
