"""What does the LTX worker cost over calling diffusers directly, cold and warm? (tiny model, CPU)

Side by side in one run, on the same prompt, seed, size, frames and steps:
  (a) in-process: LTXPipeline already loaded, one call, the clip encoded with PyAV (same encoder settings)
  (b) one-shot:   `python -m workers.ltx --input args.json` (process start + imports + load + run)
  (c) warm:       the second and later identical requests to one `--serve` process
Goal: c <= 1.10 a.

    python bench/ltx_warm.py [--frames 33] [--steps 20] [--size 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from worker_timing import one_shot, print_comparison, warm

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red fox running through fresh snow at dawn, slow tracking shot"
FPS = 24


def in_process(model: Path, opts, out: Path) -> float:
    import torch
    from diffusers import LTXPipeline

    from workers.ltx import video

    pipe = LTXPipeline.from_pretrained(str(model), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    times = []
    for _ in range(opts.repeat + 1):  # the first call warms kernels, as the worker's first request does
        t0 = time.perf_counter()
        frames = pipe(PROMPT, width=opts.size, height=opts.size, num_frames=opts.frames, frame_rate=FPS,
                      num_inference_steps=opts.steps, generator=torch.Generator("cpu").manual_seed(0),
                      output_type="np").frames[0]
        images = video.to_images(frames)
        video.encode(images, out / "direct.mp4", FPS, 18, "medium")
        video.save_poster(images[0], out / "direct_poster.png")
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def worker_args(model: Path, opts, out: Path) -> dict:
    return {"prompt": PROMPT, "model": str(model), "output_dir": str(out), "width": opts.size, "height": opts.size,
            "num_frames": opts.frames, "fps": FPS, "steps": opts.steps, "seed": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from workers.tiny import build_ltx

    tmp = Path(tempfile.mkdtemp(prefix="ltx-bench-"))
    model = build_ltx(tmp / "ltx")
    (tmp / "direct").mkdir()
    a = in_process(model, opts, tmp / "direct")
    args = worker_args(model, opts, tmp / "worker")
    b = one_shot("ltx", args, tmp, opts.repeat)
    c, answer = warm("ltx", args, opts.repeat)
    print_comparison(f"tiny LTX, {opts.frames} frames x {opts.steps} steps at {opts.size}x{opts.size}, CPU, median of {opts.repeat}",
                     "in-process pipeline + encode", a, b, c, answer["metrics"])


if __name__ == "__main__":
    main()
