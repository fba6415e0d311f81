"""Image sizes: what the model generates at (fitting to a delivery size is `workers.runtime.imaging.fit`)."""

from __future__ import annotations

import math

from .contract import ASPECT_BUCKETS, Args

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
