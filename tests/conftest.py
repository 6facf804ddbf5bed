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


# The longest test files first. The README's command runs files whole on 2 workers (pytest-xdist --dist loadfile),
# handed out in collection order; a long file collected last (alphabetically: test_slurm, test_sweep, test_video)
# leaves the other worker idle at the end. Longest first is the classic fix (LPT scheduling). Order from the
# --durations of a fresh-clone `.ci/run` on the 2-core CI-like machine, 2026-12-03; files not listed keep their order
# after these. Nothing else changes: the order of the tests inside a file is kept.
SLOW_FILES_FIRST = ["test_probe.py", "test_sweep.py", "test_external_agents.py", "test_bench.py", "test_video.py",
                    "test_extract_ram_vars.py", "test_ppo.py", "test_faults.py", "test_slurm.py", "test_ram_inputs.py",
                    "test_reference_runs.py", "test_cli.py", "test_pipeline.py", "test_probe_ram_vars.py",
                    "test_models.py", "test_compare_runs.py"]


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # a stable sort
