"""Whisper subtitle worker: narration audio/video -> word-timed transcript -> SRT/VTT/JSON/TXT.

Run it with `python -m workers.whisper --input args.json` (or `--serve` for warm mode).
Importing this package is cheap: faster-whisper is imported only when a model loads.
"""

__version__ = "1.0.0"

__all__ = ["__version__"]
