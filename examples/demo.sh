#!/usr/bin/env bash
# Set up and run the demo: embedded narration -> subtitles + vertical-video captions, through the runner.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -e ".[whisper,tiny-models]"
"$PY" -m bridge run examples/demo/manifest.json "$@"
echo
echo "outputs:"; find examples/demo/work/steps -type f | sort
