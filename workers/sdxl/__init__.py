"""SDXL keyframe worker: prompts -> images (diffusers StableDiffusionXLPipeline), one file per prompt.

Run it with `python -m workers.sdxl --input args.json` (or `--serve` for warm mode).
Importing this package is cheap: torch and diffusers are imported only when a model loads.
"""

__version__ = "1.0.0"

__all__ = ["__version__"]
