"""Pictures people upload to keep, checked before anything is stored: the format is one we accept
and the one the upload claims, the size is bounded (bytes, then pixels, before decoding), and the
whole picture decodes. Thumbnails and timelapses are made here (Pillow)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from realtime_site.protocol import ValidationError

__all__ = ["Picture", "animated_webp", "check_picture", "thumbnail"]

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_SIDE = 2048
THUMBNAIL_SIDE = 256


@dataclass(frozen=True)
class Picture:
    data: bytes
    format: str  # JPEG, PNG or WEBP
    content_type: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[self.format]


def check_picture(data: bytes, field: str, *, claimed: str | None = None, max_bytes: int) -> Picture:
    """The upload as a checked picture, or ``ValidationError`` naming ``field`` and the problem."""
    if not data:
        raise ValidationError(field, "is empty")
    if len(data) > max_bytes:
        raise ValidationError(field, f"is over {max_bytes} bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = image.format or ""
            if kind not in FORMATS:
                raise ValidationError(field, f"must be a JPEG, PNG or WebP picture, not {kind or 'unknown'}")
            if claimed and claimed.split(";")[0].strip().lower() != FORMATS[kind]:
                raise ValidationError(field, f"is a {kind} picture, not the {claimed} it claims to be")
            width, height = image.size
            if width > MAX_SIDE or height > MAX_SIDE:
                raise ValidationError(field, f"is {width}x{height}; at most {MAX_SIDE} pixels a side")
            image.load()  # the whole picture decodes (a truncated or corrupt one does not)
    except ValidationError:
        raise
    except Image.DecompressionBombError:
        raise ValidationError(field, f"has far too many pixels; at most {MAX_SIDE} pixels a side") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ValidationError(field, "is not a picture this server can read (corrupt or truncated)") from None
    return Picture(data, kind, FORMATS[kind], width, height)


def thumbnail(picture: Picture) -> bytes:
    """A JPEG whose longer side is ``THUMBNAIL_SIDE`` (made once, at save)."""
    with Image.open(io.BytesIO(picture.data)) as image:
        small = ImageOps.exif_transpose(image).convert("RGB")
        small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=85)
        return out.getvalue()


def animated_webp(frames: list[Picture], frame_ms: int) -> bytes:
    """The frames, in order, as one animated WebP (each shown ``frame_ms``), at the first one's size."""
    images = []
    for frame in frames:
        with Image.open(io.BytesIO(frame.data)) as image:
            images.append(image.convert("RGB").resize((frames[0].width, frames[0].height)))
    out = io.BytesIO()
    images[0].save(out, "WEBP", save_all=True, append_images=images[1:], duration=frame_ms, loop=0, quality=80)
    return out.getvalue()
