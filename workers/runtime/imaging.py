"""Image helpers shared by the image, video and vision workers (Pillow, imported lazily; never torch)."""

from __future__ import annotations

from pathlib import Path

from workers.contract.generation import Fit


def fit(image, size, fit_mode: Fit | None = None):
    """Resize a PIL image to `size` (anything with `width`, `height` and optionally `fit`) with Lanczos.

    `cover`: scale to fill, centre-crop the overflow; `contain`: scale to fit, pad with black; `stretch`: ignore
    the aspect ratio."""
    from PIL import Image

    mode = fit_mode or getattr(size, "fit", "cover")
    target = (size.width, size.height)
    if image.size == target:
        return image
    if mode == "stretch":
        return image.resize(target, Image.Resampling.LANCZOS)
    scale = (max if mode == "cover" else min)(size.width / image.width, size.height / image.height)
    scaled = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(scaled, Image.Resampling.LANCZOS)
    if mode == "cover":
        left, top = (scaled[0] - size.width) // 2, (scaled[1] - size.height) // 2
        return resized.crop((left, top, left + size.width, top + size.height))
    canvas = Image.new("RGB", target, (0, 0, 0))
    canvas.paste(resized, ((size.width - scaled[0]) // 2, (size.height - scaled[1]) // 2))
    return canvas


def image_problem(path: Path) -> str | None:
    """Why `path` is not a usable image, or None. Decodes it fully (Pillow only, no torch)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.convert("RGB").load()
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, truncated data, decompression bombs
        return f"does not decode as an image: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    return None


def load_rgb(path: str | Path):
    """The image at `path` as RGB, turned upright as its EXIF orientation says (phone photos are stored sideways)."""
    from PIL import Image, ImageOps

    with Image.open(Path(path).expanduser()) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def downscale(image, max_side: int):
    """`image` with its long side at most `max_side` pixels (Lanczos, aspect kept); never upscaled."""
    from PIL import Image

    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.LANCZOS)
