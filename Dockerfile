# Runs every script headless: no display, no libGL (opencv-python-headless, matplotlib Agg backend).
#   docker build -t memory-pixel-interp .
#   docker run --rm --gpus all -v "$PWD/runs:/app/runs" memory-pixel-interp \
#       python ppo_pixel_breakout.py --env-id BreakoutNoFrameskip-v4
# The base is Ubuntu 22.04 with Python 3.11 and torch 2.5.1 (+cu124) in /opt/conda, as pip sees them.
# What of this file was checked, and how: docs/docker.md; rerun with `python3 docs/docker/check_dockerfile.py`.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 MPLBACKEND=Agg DEBIAN_FRONTEND=noninteractive
# g++ only: torch.compile (--compile) compiles C++ on the CPU and Triton's launcher on CUDA at run time, and the
# runtime image has no compiler. No browser: Ubuntu's chromium and firefox are snaps, which do not run in a
# container, so the test that renders the probe report in Chromium skips here (and says why).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
# torch is already in the image and satisfies requirements.txt, so pip installs everything else only;
# the last command fails the build if pip replaced the image's torch after all.
RUN TORCH_BEFORE="$(python -c 'import torch; print(torch.__version__)')" \
 && pip install --no-cache-dir -r requirements.txt \
 && python -c "import sys, torch; sys.exit(None if torch.__version__ == '${TORCH_BEFORE}' else 'pip replaced torch')"
COPY . .
CMD ["python", "-m", "pytest", "tests", "-q"]
