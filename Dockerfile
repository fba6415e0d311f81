# storybridge workers + runner on a CUDA 12.6 / cuDNN 9 runtime (what CTranslate2 4.x, i.e. faster-whisper, links
# against). Linted in CI with hadolint (.ci/run); build and run commands are in the README ("Docker").
#
#   docker build -t storybridge .
#   docker run --rm --gpus all -v "$HOME/.cache/huggingface:/models" -v "$PWD/work:/work" storybridge run /work/manifest.json
#
# CPU-only image: --build-arg BASE=python:3.12-slim-bookworm --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
FROM ${BASE}

# The CUDA build of torch that matches the base image, installed before the extras so none can pull another build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ARG UID=10001

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 PYTHONUTF8=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models \
    HF_HUB_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH

# Distribution packages follow the base image's release; exact apt pins rot as the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ffmpeg fonts-dejavu-core ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY bridge ./bridge
COPY workers ./workers
# The project itself, with every worker's extra; its dependencies' ranges are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[all]"

# Workers run as a non-root user (numeric, so any host resolves it). Models live in the HF_HOME volume (mount
# your cache there; offline by default: set HF_HUB_OFFLINE=0 and allow_download in args to fetch), jobs in /work.
RUN useradd --uid "${UID}" --create-home storybridge \
 && mkdir -p /models /work \
 && chown "${UID}:${UID}" /models /work
USER ${UID}
VOLUME ["/models", "/work"]
WORKDIR /work

HEALTHCHECK --interval=60s --timeout=30s --start-period=10s --retries=3 \
    CMD ["python", "-m", "workers.whisper", "--describe"]
ENTRYPOINT ["python", "-m", "bridge"]
CMD ["--help"]
