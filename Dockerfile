# storybridge workers + runner on a CUDA 12 / cuDNN 9 runtime (what CTranslate2 4.x, i.e. faster-whisper, links against).
# Build:  docker build -t storybridge .
# Run:    docker run --gpus all -v $PWD/work:/work -v $HOME/.cache/huggingface:/root/.cache/huggingface \
#           storybridge python -m bridge run /work/manifest.json
# CPU-only image: docker build --build-arg BASE=python:3.11-slim-bookworm --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu .
ARG BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 PYTHONUTF8=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the index that matches the base image, so no extra can pull another build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY workers ./workers
COPY schemas ./schemas
RUN pip install ".[all]"

# Workers run as a non-root user; mount model caches and the workdir.
RUN useradd --create-home storybridge
USER storybridge
CMD ["python", "-m", "bridge", "--help"]
