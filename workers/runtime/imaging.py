"""Fitting an image to a delivery size, shared by the image and video workers (Pillow, imported lazily)."""

from __future__ import annotations

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
