# Runs every script headless: no display, no libGL (opencv-python-headless, matplotlib Agg backend).
#   docker build -t memory-pixel-interp .
#   docker run --rm --gpus all -v "$PWD/runs:/app/runs" memory-pixel-interp \
#       python ppo_pixel_breakout.py --env-id BreakoutNoFrameskip-v4
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 MPLBACKEND=Agg DEBIAN_FRONTEND=noninteractive
# chromium only for the test that renders the probe report
RUN apt-get update && apt-get install -y --no-install-recommends chromium && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
# torch is already in the image, so requirements.txt installs everything else only
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
CMD ["python", "-m", "pytest", "tests", "-q"]
