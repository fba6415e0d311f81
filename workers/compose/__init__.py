"""Compose worker: clips + narration + captions -> one finished H.264/AAC mp4 (9:16 by default).

Run it with `python -m workers.compose --input args.json` (or `--serve` for warm mode).
Importing this package is cheap: PyAV and pysubs2 are imported only when a job checks its inputs or runs;
ffmpeg does the encoding, called with an argv list (never a shell).
"""

__version__ = "1.0.0"

__all__ = ["__version__"]
