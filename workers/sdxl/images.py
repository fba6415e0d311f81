"""Image files: generation parameters embedded in the file, and the checks for a failed (NaN/black) decode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: PNG text chunk / EXIF field holding the parameters as JSON.
PNG_KEY = "storybridge"
EXIF_IMAGE_DESCRIPTION = 0x010E
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}


def parameters_text(params: dict[str, Any]) -> str:
    # ASCII JSON: EXIF ImageDescription is an ASCII field; \\u escapes keep any prompt intact.
    return json.dumps(params, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def save(image, path: Path, image_format: str, quality: int, params: dict[str, Any]) -> None:
    """Write `image` (PIL) with its generation parameters; byte-identical for identical pixels and parameters."""
    from PIL import Image, PngImagePlugin

    text = parameters_text(params)
    if image_format == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_KEY, text)
        info.add_text("parameters", _a1111_line(params))  # what A1111/ComfyUI-style viewers show
        image.save(path, format="PNG", pnginfo=info, optimize=False)
        return
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = text
    image.save(path, format="WEBP" if image_format == "webp" else "JPEG", quality=quality, exif=exif.tobytes())


def read_parameters(path: Path) -> dict[str, Any]:
    """The parameters embedded by `save` (for tests and for people inspecting a keyframe)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.format == "PNG":
            return json.loads(image.text[PNG_KEY])
        return json.loads(image.getexif()[EXIF_IMAGE_DESCRIPTION])


def _a1111_line(params: dict[str, Any]) -> str:
    negative = f"\nNegative prompt: {params['negative_prompt']}" if params.get("negative_prompt") else ""
    return (f"{params['prompt']}{negative}\nSteps: {params['steps']}, Sampler: {params['scheduler']}, "
            f"CFG scale: {params['guidance_scale']}, Seed: {params['seed']}, Size: {params['width']}x{params['height']}, "
            f"Model: {params['model']}")


def failed_decode(pixels) -> bool:
    """NaN/inf anywhere, or an all-black image: the fp16 VAE overflow, never a real keyframe."""
    import numpy as np

    return not np.isfinite(pixels).all() or float(np.max(pixels)) <= 0.0


def to_pil(pixels):
    """float HWC [0, 1] -> PIL, quantised exactly as diffusers' numpy_to_pil does."""
    from PIL import Image

    return Image.fromarray((pixels * 255).round().astype("uint8"))
