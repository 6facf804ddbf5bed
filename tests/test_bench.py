"""The benchmarks under bench/ run end to end (tiny budgets; their figures are not checked: speed is measured
by running them on a quiet machine, never in a timed test)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_script


def test_bench_throughput_prints_every_setting_and_its_gain():
    proc = run_script("bench/bench_throughput.py", "--num-envs", "2", "--pixel-steps", "1024", "--ram-steps", "1024",
                      "--raw-seconds", "0.5", "--rounds", "1", timeout=900)
    out = proc.stdout
    for line in ("(a) raw AtariVectorEnv", "(b) ppo_pixel_breakout.py training", "(c) raw RAM vector env",
                 "(d) ppo_ram_breakout.py training", "ratios training/raw at the defaults"):
        assert line in out, out
    for setting in ("--precision fp32", "--no-channels-last", "--torch-threads 1", "--env-processes 1"):
        assert re.search(rf"{re.escape(setting)}\s+[\d,]+ SPS .*gain \d+\.\d\dx", out), (setting, out)
    assert out.count("time split of the default") == 2


def gpu_check(**env):
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, **env))


def test_gpu_check_says_what_it_skipped_without_a_gpu():
    proc = gpu_check()
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout and "skipped:" in proc.stdout


def test_gpu_check_cpu_smoke_runs_every_row(tmp_path):
    """GPU_CHECK_CPU=1 runs the same commands on the CPU: every row is ok (the --compile rows skipped), one table."""
    proc = gpu_check(GPU_CHECK_CPU="1", GPU_CHECK_OUT=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [l for l in proc.stdout.splitlines() if re.match(r"(pixel|RAM|probe) ", l)]
    assert len(rows) == 13, proc.stdout
    assert all((" ok " in r) or r.rstrip().endswith("ok") or "skipped (CPU smoke test)" in r for r in rows), proc.stdout
    assert sum("skipped" in r for r in rows) == 3 and "all passed" in proc.stdout


def test_gpu_check_fails_when_a_path_fails(tmp_path):
    """A failing command makes a FAILED row and exit 1 (here: python that cannot import the scripts' packages)."""
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ncase \"$1\" in -c) exec {sys.executable} \"$@\";; esac\nexit 3\n")
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=str(fake), GPU_CHECK_CPU="1",
                                                GPU_CHECK_OUT=str(tmp_path / "out")))
    assert proc.returncode == 1 and "FAILED (exit 3" in proc.stdout, proc.stdout
