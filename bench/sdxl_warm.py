"""What does the SDXL worker cost over calling diffusers directly, cold and warm? (tiny model, CPU)

Side by side in one run, on the same prompts, seeds, size and steps:
  (a) in-process: StableDiffusionXLPipeline already loaded, one call per image, PNGs saved
  (b) one-shot:   `python -m workers.sdxl --input args.json` (process start + imports + load + run)
  (c) warm:       the second identical request to one `--serve` process
Goals: c <= 1.10 a, b / c >= 20.

    python bench/sdxl_warm.py [--images 4] [--steps 20] [--repeat 3]
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


def in_process(model: Path, prompts: list[str], steps: int, out: Path, repeat: int) -> float:
    import torch
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(model), local_files_only=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    times = []
    for _ in range(repeat + 1):  # the first call warms kernels, as the worker's first request does
        t0 = time.perf_counter()
        for i, prompt in enumerate(prompts):
            image = pipe(prompt, generator=torch.Generator("cpu").manual_seed(i), num_inference_steps=steps,
                         width=64, height=64).images[0]
            image.save(out / f"direct_{i}.png")
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def worker_args(model: Path, prompts: list[str], steps: int, out: Path) -> dict:
    return {"prompts": [{"prompt": p, "seed": i} for i, p in enumerate(prompts)], "model": str(model),
            "output_dir": str(out), "steps": steps, "width": 64, "height": 64}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from workers.tiny import build_sdxl

    tmp = Path(tempfile.mkdtemp(prefix="sdxl-bench-"))
    model = build_sdxl(tmp / "sdxl")
    prompts = [f"keyframe {i}: a fox crossing a snowy field, cinematic" for i in range(opts.images)]
    (tmp / "direct").mkdir()
    a = in_process(model, prompts, opts.steps, tmp / "direct", opts.repeat)
    args = worker_args(model, prompts, opts.steps, tmp / "worker")
    b = one_shot("sdxl", args, tmp, opts.repeat)
    c, answer = warm("sdxl", args, opts.repeat)
    print_comparison(f"tiny SDXL, {opts.images} images x {opts.steps} steps at 64x64, CPU, median of {opts.repeat}",
                     "in-process pipeline", a, b, c, answer["metrics"])


if __name__ == "__main__":
    main()
