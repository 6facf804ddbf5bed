"""What of the Dockerfile can be checked without a Docker engine, fast (docs/docker/check_dockerfile.py does
the rest: hadolint, and its RUN steps in a fresh venv)."""
import re

from conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
RUN_STEPS = [s for s in re.split(r"\n(?=[A-Z]+ )", re.sub(r"\\\n", " ", DOCKERFILE)) if s.startswith("RUN ")]


def test_no_step_needs_snap_or_a_display():
    """The image is Ubuntu 22.04, where chromium and firefox are snaps, and snaps do not run in a container."""
    assert RUN_STEPS
    for step in RUN_STEPS:
        assert not re.search(r"\b(snap|snapd|chromium|chromium-browser|firefox|xvfb)\b", step), step


def test_the_image_torch_is_the_oldest_supported():
    """The base image's torch is requirements.txt's minimum: that is the version the smoke test runs on."""
    image = re.search(r"^FROM pytorch/pytorch:(\d+\.\d+\.\d+)-", DOCKERFILE, re.M)
    minimum = re.search(r"^torch>=([\d.]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert image and minimum and image.group(1) == minimum.group(1), (image, minimum)
