"""The oldest supported torch (requirements.txt's minimum, the Docker image's 2.5.1): every script runs on it.
Not part of CI's default run: it needs a venv of its own with that torch (PyPI's wheel brings ~3 GB of CUDA
libraries), named by MPI_OLDEST_TORCH_PYTHON; see docs/docker/smoke_oldest_torch.sh for how to make one."""
import os
import re
import subprocess

import pytest

from conftest import ROOT

PYTHON = os.environ.get("MPI_OLDEST_TORCH_PYTHON")


def required_torch():
    """'torch>=2.5.1' in requirements.txt -> '2.5.1'"""
    m = re.search(r"^torch>=([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert m, "requirements.txt has no torch>= line"
    return m.group(1)


@pytest.mark.skipif(not PYTHON, reason="set MPI_OLDEST_TORCH_PYTHON to a python with the oldest supported torch")
def test_every_script_runs_on_the_oldest_torch(tmp_path):
    version = subprocess.run([PYTHON, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert version.split("+")[0] == required_torch(), f"{PYTHON} has torch {version}, not requirements.txt's minimum"
    proc = subprocess.run(["bash", ROOT / "docs" / "docker" / "smoke_oldest_torch.sh"], capture_output=True, text=True,
                          timeout=1500, env=dict(os.environ, PYTHON=PYTHON, WORK=str(tmp_path / "smoke")))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"torch {version}," in proc.stdout and "smoke: all" in proc.stdout
