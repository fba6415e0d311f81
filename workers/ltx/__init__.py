"""LTX-Video clip worker: prompt (and optionally a first-frame image) -> H.264 mp4 + poster PNG.

Run it with `python -m workers.ltx --input args.json` (or `--serve` for warm mode).
Importing this package is cheap: torch, diffusers and PyAV are imported only when a model loads or a clip is encoded.
"""

__version__ = "1.0.0"

__all__ = ["__version__"]
