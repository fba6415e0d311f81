#!/usr/bin/env bash
# The main job on its embedded default: examples/story (5 scenes) becomes a finished 9:16 video.
# Sets up what is missing (the CPU build of torch, the workers' extras, the tiny random-weight models in
# examples/story/.models), then runs examples/story/manifest.json through the runner. Run it again: it resumes
# and does nothing. Extra arguments go to `bridge run` (e.g. --param clip_fps=12, --gpus all, --jobs 1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
for tool in ffmpeg ffprobe; do
  command -v "$tool" >/dev/null || { echo "needs $tool: sudo apt-get install -y ffmpeg" >&2; exit 1; }
done
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0   # CPU build; keep a CUDA one
"$PY" -m pip install -q -e ".[whisper,sdxl,ltx,vision,compose,tiny-models]"
MODELS=examples/story/.models
[ -f "$MODELS/ltx/model_index.json" ] && [ -f "$MODELS/sdxl/model_index.json" ] && [ -f "$MODELS/vision/config.json" ] \
  || "$PY" -m workers.tiny build "$MODELS" --only sdxl,ltx,vision
"$PY" -m bridge run examples/story/manifest.json "$@"
echo
echo "final video: examples/story/work/steps/final/story.mp4"
"$PY" -m bridge report examples/story/work >/dev/null && echo "run report:  examples/story/work/report.html"
