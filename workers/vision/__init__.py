"""LLaVA scene-check worker: images (+ expected scenes or questions) -> calibrated yes/no scores, captions, answers.

Run it with `python -m workers.vision --input args.json` (or `--serve` for warm mode).
Importing this package is cheap: torch and transformers are imported only when a model loads.
"""

__version__ = "1.0.0"

__all__ = ["__version__"]
