"""The image of a result, as bytes or as a Pillow image."""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["result_image", "result_image_bytes"]


def result_image_bytes(result: dict[str, Any], index: int = 0) -> bytes:
    """The encoded image (JPEG, PNG or WebP) of a result, from ``content`` or a data URL."""
    entry = result["images"][index]
    if entry.get("content") is not None:
        return bytes(entry["content"])
    url = entry.get("url", "")
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError("the result's image has neither content nor a data URL")
    return base64.b64decode(url.split(";base64,", 1)[1])


def result_image(result: dict[str, Any], index: int = 0) -> Any:
    """The result's image as a ``PIL.Image.Image`` (Pillow is imported only here)."""
    from PIL import Image

    image = Image.open(io.BytesIO(result_image_bytes(result, index)))
    image.load()
    return image
