"""What does the vision worker cost over calling transformers directly, cold and warm? (tiny LLaVA, CPU)

Side by side in one run, on the same images, questions and batch size:
  (a) in-process: model and processor already loaded, the yes/no scores computed directly with transformers
  (b) one-shot:   `python -m workers.vision --input args.json` (process start + imports + load + run)
  (c) warm:       the second and later identical requests to one `--serve` process
Goal: c <= 1.10 a (the worker adds image checks, the envelope and progress events, not model time).

    python bench/vision_warm.py [--images 8] [--size 512] [--batch-size 4] [--repeat 5]
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
TEMPLATE = "Does this image show {expected}? Answer the question using a single word or phrase."
SCENES = ("a red fox in snow", "a cat on a chair", "waves at sunset", "a person running in a park")


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"frame_{index:02d}.png"
        Image.fromarray((rng.random((size, size * 9 // 16, 3)) * 255).astype("uint8")).save(path)
        paths.append(path)
    return paths


def in_process(model_dir: Path, images: list[Path], opts) -> float:
    """The same work without the worker: load images, prompts from the chat template, batched forward, ratio."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    yes = [processor.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("Yes", "yes")]
    no = [processor.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("No", "no")]
    times = []
    for _ in range(opts.repeat + 1):  # the first round warms kernels, as the worker's first request does
        t0 = time.perf_counter()
        for start in range(0, len(images), opts.batch_size):
            batch = images[start:start + opts.batch_size]
            pictures = []
            for path in batch:
                with Image.open(path) as image:
                    pictures.append(image.convert("RGB"))
            texts = [processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": TEMPLATE.format(
                    expected=SCENES[(start + i) % len(SCENES)])}]}], add_generation_prompt=True)
                for i in range(len(batch))]
            inputs = processor(images=pictures, text=texts, padding=True, return_tensors="pt")
            with torch.inference_mode():
                logits = model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
            torch.sigmoid(torch.logsumexp(logits[:, yes], -1) - torch.logsumexp(logits[:, no], -1)).tolist()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=512, help="image height in pixels (9:16 frames)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from workers.tiny import build_vision

    tmp = Path(tempfile.mkdtemp(prefix="vision-bench-"))
    model = build_vision(tmp / "vision")
    (tmp / "images").mkdir()
    images = make_images(tmp / "images", opts.images, opts.size)
    a = in_process(model, images, opts)
    args = {"images": [{"path": str(p), "expected": SCENES[i % len(SCENES)]} for i, p in enumerate(images)],
            "model": str(model), "output_dir": str(tmp / "worker"), "batch_size": opts.batch_size}
    b = one_shot("vision", args, tmp, opts.repeat)
    c, answer = warm("vision", args, opts.repeat)
    print_comparison(f"tiny LLaVA, validate {opts.images} images of {opts.size * 9 // 16}x{opts.size}, batch "
                     f"{opts.batch_size}, CPU, median of {opts.repeat}", "in-process transformers", a, b, c,
                     answer["metrics"])


if __name__ == "__main__":
    main()
