"""Writing a clip: H.264 (libx264) yuv420p mp4 with `+faststart` through PyAV, and a first-frame poster PNG.

Frames arrive as float arrays (F, H, W, 3) in [0, 1], quantised as diffusers' own numpy_to_pil does, so the poster
and the mp4 start from the same pixels the pipeline returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

CODEC, PIX_FMT = "h264", "yuv420p"
MEDIA_TYPE, POSTER_MEDIA_TYPE = "video/mp4", "image/png"


def to_images(frames, size=None) -> list:
    """float frames -> PIL images, fitted to the delivery size (`DeliverySize`) when one is given."""
    from PIL import Image

    from workers.runtime.imaging import fit

    images = [Image.fromarray((frame * 255).round().astype("uint8")) for frame in frames]
    return [fit(image, size) for image in images] if size is not None else images


def encode(images: Iterable, path: Path, fps: int, crf: int, preset: str) -> None:
    """Write `images` (PIL, all one size with even sides) as an H.264 mp4, the moov atom first (`+faststart`)
    so players start before the whole file has arrived."""
    import av

    images = list(images)
    width, height = images[0].size
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
        stream.options = {"crf": str(crf), "preset": preset}
        for image in images:
            frame = av.VideoFrame.from_image(image).reformat(format=PIX_FMT)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder's delayed frames


def save_poster(image, path: Path) -> None:
    image.save(path, format="PNG", optimize=False)
