"""Image sizes: what the model generates at, and how a generated image is fitted to a delivery size."""

from __future__ import annotations

import math

from .contract import ASPECT_BUCKETS, Args, DeliverySize

#: SDXL's native side; the aspect buckets are defined at this size and scaled to the model's own.
SDXL_NATIVE_SIDE = 1024


def snap_to_8(value: float) -> int:
    return max(8, int(math.floor(value / 8 + 0.5)) * 8)


def generation_size(args: Args, native_side: int) -> tuple[int, int]:
    """(width, height): explicit, else the aspect's bucket scaled to the model, else the model's native square."""
    if args.width is not None and args.height is not None:
        return args.width, args.height
    if args.aspect is not None:
        width, height = ASPECT_BUCKETS[args.aspect]
        scale = native_side / SDXL_NATIVE_SIDE
        return snap_to_8(width * scale), snap_to_8(height * scale)
    return native_side, native_side


def fit(image, size: DeliverySize):
    """Resize a PIL image to the delivery size with Lanczos: cover (fill, centre-crop), contain (fit, pad black),
    or stretch."""
    from PIL import Image

    target = (size.width, size.height)
    if image.size == target:
        return image
    if size.fit == "stretch":
        return image.resize(target, Image.Resampling.LANCZOS)
    scale = (max if size.fit == "cover" else min)(size.width / image.width, size.height / image.height)
    scaled = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(scaled, Image.Resampling.LANCZOS)
    if size.fit == "cover":
        left, top = (scaled[0] - size.width) // 2, (scaled[1] - size.height) // 2
        return resized.crop((left, top, left + size.width, top + size.height))
    canvas = Image.new("RGB", target, (0, 0, 0))
    canvas.paste(resized, ((size.width - scaled[0]) // 2, (size.height - scaled[1]) // 2))
    return canvas
