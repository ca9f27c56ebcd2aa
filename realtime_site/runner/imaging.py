"""Safe image decoding and encoding for the runner.

Untrusted bytes are checked before any pixel is decoded: only PNG, JPEG and WebP, dimensions and
pixel count bounded (decompression bombs), truncated or corrupt files refused, all as
``ValidationError`` naming ``image``.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from realtime_site.protocol import OUTPUT_FORMATS, ValidationError

__all__ = ["MAX_INPUT_PIXELS", "MAX_INPUT_SIDE", "Probe", "decode_image", "encode_image", "probe_image"]

MAX_INPUT_SIDE = 4096
MAX_INPUT_PIXELS = 4096 * 4096
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
_SAVE_OPTIONS: dict[str, dict] = {
    "jpeg": {"format": "JPEG", "quality": 90},
    "png": {"format": "PNG", "compress_level": 1},
    "webp": {"format": "WEBP", "quality": 85, "method": 0},
}


@dataclass(frozen=True, slots=True)
class Probe:
    format: str  # "png", "jpeg" or "webp"
    width: int
    height: int


def _too_large(size: str) -> ValidationError:
    return ValidationError("image", f"is {size}; each side may be at most {MAX_INPUT_SIDE} pixels")


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(_PIL_FORMATS))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _too_large("too large (a decompression bomb)") from None
    except UnidentifiedImageError:
        raise ValidationError("image", "is not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, ValueError, struct.error) as exc:
        raise ValidationError("image", f"cannot be read ({exc})") from None
    width, height = img.size
    if not (0 < width <= MAX_INPUT_SIDE and 0 < height <= MAX_INPUT_SIDE and width * height <= MAX_INPUT_PIXELS):
        raise _too_large(f"{width}x{height}")
    return img


def probe_image(data: bytes) -> Probe:
    """Read the header only: format and size, with the same limits as ``decode_image``."""
    img = _open(data)
    return Probe(_PIL_FORMATS[img.format], *img.size)


def is_complete(data: bytes, fmt: str) -> bool:
    """A cheap structural check that the file is not cut short (no pixel decoding)."""
    if fmt == "jpeg":
        return data.rstrip(b"\0").endswith(b"\xff\xd9")
    if fmt == "png":
        return data.endswith(b"IEND\xaeB`\x82")
    if fmt == "webp":
        return len(data) >= 12 and struct.unpack("<I", data[4:8])[0] + 8 == len(data)
    return False


def decode_image(data: bytes, width: int, height: int) -> Image.Image:
    """Decode to RGB and fit (cover, centred) to exactly ``width`` x ``height``."""
    img = _open(data)
    if img.format == "JPEG":
        img.draft("RGB", (width, height))  # DCT-domain downscale: decodes less when the input is big
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombWarning):
        raise ValidationError("image", "is truncated or corrupt") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    if img.size != (width, height):
        img = ImageOps.fit(img, (width, height), Image.Resampling.BILINEAR)
    return img


def encode_image(img: Image.Image, fmt: str) -> tuple[bytes, str]:
    """Encode to ``fmt`` (jpeg, png, webp); returns the bytes and their content type."""
    out = io.BytesIO()
    img.save(out, **_SAVE_OPTIONS[fmt])
    return out.getvalue(), OUTPUT_FORMATS[fmt]
