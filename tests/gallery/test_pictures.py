"""``gallery.pictures``: what may be kept is checked before anything is stored (the format, the one it
claims, bytes, pixels, a whole decode); thumbnails and timelapses. Pure: Pillow only."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from realtime_site.gallery.pictures import MAX_SIDE, THUMBNAIL_SIDE, animated_webp, check_picture, thumbnail
from realtime_site.protocol import ValidationError
from tests.conftest import header_only_png

CAP = 2**20


def encoded(kind: str, size: tuple[int, int] = (64, 48), color: str = "#336699") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, kind)
    return out.getvalue()


@pytest.mark.parametrize(
    ("kind", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_the_three_formats_pass_with_their_own_content_type(kind: str, content_type: str) -> None:
    picture = check_picture(encoded(kind), "result", claimed=content_type, max_bytes=CAP)
    assert (picture.format, picture.content_type, picture.width, picture.height) == (kind, content_type, 64, 48)


def test_a_picture_claiming_another_format_is_refused_by_name() -> None:
    with pytest.raises(ValidationError) as refused:
        check_picture(encoded("JPEG"), "sketch", claimed="image/png", max_bytes=CAP)
    assert refused.value.field == "sketch" and "is a JPEG picture, not the image/png" in str(refused.value)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\x00" * 40, "read"),
        (encoded("GIF"), "must be a JPEG, PNG or WebP"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "read"),
        (encoded("PNG")[:60], "read"),  # truncated
        (header_only_png(MAX_SIDE + 1), "at most"),
        (header_only_png(60_000), "at most"),
    ],
)
def test_what_is_not_a_whole_picture_we_take_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_picture(data, "result", max_bytes=CAP)
    assert problem in str(refused.value)


def test_a_picture_over_the_byte_cap_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(ValidationError, match="over 100 bytes"):
        check_picture(encoded("PNG"), "result", max_bytes=100)


def test_a_thumbnail_is_a_small_jpeg_keeping_the_aspect() -> None:
    picture = check_picture(encoded("PNG", (512, 256)), "result", max_bytes=CAP)
    with Image.open(io.BytesIO(thumbnail(picture))) as small:
        assert small.format == "JPEG" and small.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 2)


def test_a_timelapse_has_every_frame_in_order() -> None:
    colors = ["#ff0000", "#00ff00", "#0000ff", "#ffffff"]
    frames = [check_picture(encoded("JPEG", (64, 64), c), "frame", max_bytes=CAP) for c in colors]
    with Image.open(io.BytesIO(animated_webp(frames, frame_ms=100))) as animation:
        assert animation.format == "WEBP" and animation.n_frames == 4
        firsts = []
        for index in range(4):
            animation.seek(index)
            firsts.append(animation.convert("RGB").getpixel((32, 32)))
    assert [max(range(3), key=lambda i: p[i]) for p in firsts[:3]] == [0, 1, 2]  # red, green, blue, in order
