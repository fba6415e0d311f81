"""Clip geometry: the generation size and the frame count LTX can actually make (8k+1)."""

from __future__ import annotations

import math

from .contract import ASPECT_SIZES, DEFAULT_ASPECT, Args

#: LTX's VAE compresses 8 frames into one latent frame, plus the first: valid counts are 8k+1.
FRAME_STEP = 8
DEFAULT_FRAMES = 97
#: Above this LTX is outside what it was trained for (Lightricks' README: "frames below 257").
RECOMMENDED_MAX_FRAMES = 257


def generation_size(args: Args) -> tuple[int, int]:
    """(width, height): explicit, else the aspect's size, else the vertical default."""
    if args.width is not None and args.height is not None:
        return args.width, args.height
    return ASPECT_SIZES[args.aspect or DEFAULT_ASPECT]


def requested_frames(args: Args) -> int:
    if args.num_frames is not None:
        return args.num_frames
    if args.duration_s is not None:
        return max(1, round(args.duration_s * args.fps))
    return DEFAULT_FRAMES


def snap_frames(requested: int) -> int:
    """The nearest 8k+1 (ties go up). LTX itself silently rounds *down* (10 -> 9, 16 -> 9); we snap on purpose
    and say so."""
    return FRAME_STEP * max(0, math.floor((requested - 1) / FRAME_STEP + 0.5)) + 1


def fewer_frames(frames: int) -> int:
    """The out-of-memory `fewer_frames` rung: about half as many, still 8k+1 (97 -> 49 -> 25 -> 9 -> 1)."""
    return FRAME_STEP * (((frames - 1) // FRAME_STEP) // 2) + 1
