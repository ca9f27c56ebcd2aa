"""Safe decoding of untrusted images."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from realtime_site.protocol import ValidationError
from realtime_site.runner.imaging import decode_image, encode_image, is_complete, probe_image, quick_probe
from tests.conftest import drawing, encode


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG claiming a huge size: the shape of a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decode_fits_to_the_requested_size() -> None:
    img = decode_image(encode(drawing(300, 200)), 128, 128)
    assert img.size == (128, 128) and img.mode == "RGB"


def test_transparent_png_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert decode_image(encode(rgba, "PNG"), 64, 64).getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GIF89a" + b"\0" * 20, "not a PNG, JPEG or WebP"),
        (encode(Image.new("RGB", (8, 8)), "BMP"), "not a PNG, JPEG or WebP"),
        (png_header_only(100_000, 100_000), "each side may be at most"),
        (png_header_only(4097, 16), "each side may be at most"),
        (encode(drawing(256, 256))[:3000], "truncated or corrupt"),
        (encode(drawing(64, 64), "PNG")[:-30], "truncated or corrupt"),
    ],
)
def test_bad_images_are_named(data: bytes, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_image(data, 64, 64)
    assert caught.value.field == "image" and problem in caught.value.reason


def test_probe_reads_the_header_only() -> None:
    probe = probe_image(encode(drawing(96, 64), "WEBP"))
    assert (probe.format, probe.width, probe.height) == ("webp", 96, 64)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_is_complete_spots_cut_files(fmt: str) -> None:
    data = encode(drawing(64, 64), fmt)
    assert is_complete(data, fmt.lower())
    assert not is_complete(data[:-10], fmt.lower())


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_encode_round_trip(fmt: str) -> None:
    data, content_type = encode_image(drawing(64, 32), fmt)
    assert content_type == f"image/{fmt}"
    assert Image.open(io.BytesIO(data)).size == (64, 32)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("WEBP", {}), ("WEBP", {"lossless": True})],
)
@pytest.mark.parametrize("size", [(64, 48), (517, 1023)])
def test_quick_probe_agrees_with_pillow(fmt: str, options: dict, size: tuple[int, int]) -> None:
    data = encode(drawing(*size), fmt, **options)
    probe = quick_probe(data)
    assert probe == probe_image(data)


def test_quick_probe_gives_up_on_what_it_cannot_read() -> None:
    rgba = encode(Image.new("RGBA", (40, 30), (1, 2, 3, 4)), "WEBP")  # VP8X with alpha
    assert quick_probe(rgba) == probe_image(rgba)
    for data in (b"", b"\xff\xd8\xff", b"GIF89a....", png_header_only(5000, 10), encode(drawing(64, 64))[:20]):
        assert quick_probe(data) is None
