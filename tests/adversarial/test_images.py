"""Hostile images: truncated headers, decompression bombs, wrong formats, lying data URLs. At size 64
an image takes the echo app's pass-through path (header probe only); at 128 it is decoded. A bad
image gets ``VALIDATION_ERROR`` naming the image and the connection lives on; an image within the
limits is answered. The four assertions are described in ``harness``."""

from __future__ import annotations

import functools
import struct
import zlib

import pytest
from PIL import Image

from tests.adversarial.attacks import sends
from tests.adversarial.harness import Case, Expect, Harness
from tests.adversarial.inputs import (
    JPEG,
    data_url,
    frame,
    image_frame,
    json_frame,
    png_chunk,
    png_header_only,
    png_truncated_ihdr,
    saved,
    zero_png,
)
from tests.conftest import drawing

BAD_IMAGE = Expect(error="VALIDATION_ERROR", reason="image", lives=True, admitted=1)
ANSWERED = Expect(result=True, lives=True, admitted=1)
SMALL = drawing(64, 64)


def png_with(*chunks: bytes, width: int = 64, height: int = 64) -> bytes:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"".join(chunks) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """The test JPEG with its frame header (SOF0) claiming another size."""
    at = JPEG.index(b"\xff\xc0")
    return JPEG[: at + 5] + struct.pack(">HH", height, width) + JPEG[at + 9 :]


@functools.cache
def png_16bit_rgba_zeros(side: int = 4096) -> bytes:
    """A valid 16-bit RGBA PNG of zeros: about 130 KB on the wire, 128 MiB of raw samples."""
    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + side * 8)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


@functools.cache
def ztxt_bomb() -> bytes:
    """A small valid PNG with a compressed text chunk that inflates to 100 MB."""
    pixels = zlib.compress(b"".join(b"\x00" + bytes(64 * 3) for _ in range(64)))
    packer = zlib.compressobj(9)
    megabyte = bytes(2**20)
    text = b"Comment\x00\x00" + b"".join(packer.compress(megabyte) for _ in range(100)) + packer.flush()
    return png_with(png_chunk(b"zTXt", text), png_chunk(b"IDAT", pixels))


def corrupt_idat() -> bytes:
    return png_with(png_chunk(b"IDAT", b"\x78\x9c" + b"\xde\xad\xbe\xef" * 64))


def bad_crc() -> bytes:
    good = saved(SMALL, "PNG")
    at = good.index(b"IDAT") + 4
    return good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :]


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'

CASES = [
    Case("png-signature-and-truncated-ihdr-at-64", sends(image_frame(png_truncated_ihdr(), 64)), BAD_IMAGE),
    Case("png-signature-and-truncated-ihdr-at-128", sends(image_frame(png_truncated_ihdr(), 128)), BAD_IMAGE),
    Case("png-signature-only", sends(image_frame(b"\x89PNG\r\n\x1a\n", 64)), BAD_IMAGE),
    Case("truncated-jpeg-at-64", sends(image_frame(JPEG[:200], 64)), BAD_IMAGE),
    Case("truncated-jpeg-at-128", sends(image_frame(JPEG[:200], 128)), BAD_IMAGE),
    Case("jpeg-start-marker-only", sends(image_frame(b"\xff\xd8\xff", 64)), BAD_IMAGE),
    Case("one-byte-image", sends(image_frame(b"\x89", 64)), BAD_IMAGE),
    Case("png-of-zero-width", sends(image_frame(png_header_only(0, 64), 64)), BAD_IMAGE),
    Case("png-declaring-50000-squared-at-64", sends(image_frame(png_header_only(50_000, 50_000), 64)), BAD_IMAGE),
    Case("png-declaring-50000-squared-at-128", sends(image_frame(png_header_only(50_000, 50_000), 128)), BAD_IMAGE),
    Case("png-of-4097-by-1", sends(image_frame(png_header_only(4097, 1), 128)), BAD_IMAGE),
    Case("jpeg-declaring-65500-squared-at-64", sends(image_frame(jpeg_declaring(65_500, 65_500), 64)), BAD_IMAGE),
    Case("jpeg-declaring-65500-squared-at-128", sends(image_frame(jpeg_declaring(65_500, 65_500), 128)), BAD_IMAGE),
    Case("jpeg-declaring-zero-height", sends(image_frame(jpeg_declaring(64, 0), 64)), BAD_IMAGE),
    Case("png-of-4096-squared-zeros-is-answered", sends(lambda: image_frame(zero_png(), 128)), ANSWERED),
    Case(
        "png-of-4096-squared-16-bit-rgba-zeros-is-answered",
        sends(lambda: image_frame(png_16bit_rgba_zeros(), 128)),
        ANSWERED,
    ),
    Case("png-with-a-100-mb-text-chunk", sends(lambda: image_frame(ztxt_bomb(), 128)), BAD_IMAGE),
    Case("png-with-corrupt-pixel-data", sends(image_frame(corrupt_idat(), 128)), BAD_IMAGE),
    Case("png-with-a-bad-checksum", sends(image_frame(bad_crc(), 128)), BAD_IMAGE),
    Case("zeros-instead-of-an-image", sends(image_frame(bytes(1000), 128)), BAD_IMAGE),
    Case("noise-instead-of-an-image", sends(image_frame(bytes(range(256)) * 900, 128)), BAD_IMAGE),
    Case("gif-image", sends(image_frame(saved(SMALL, "GIF"), 128)), BAD_IMAGE),
    Case("bmp-image", sends(image_frame(saved(SMALL, "BMP"), 128)), BAD_IMAGE),
    Case("tiff-image", sends(image_frame(saved(SMALL, "TIFF"), 128)), BAD_IMAGE),
    Case("ico-image", sends(image_frame(saved(SMALL, "ICO"), 128)), BAD_IMAGE),
    Case("ppm-image", sends(image_frame(saved(SMALL, "PPM"), 128)), BAD_IMAGE),
    Case("pdf-instead-of-an-image", sends(image_frame(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(200), 128)), BAD_IMAGE),
    Case("svg-image-bytes", sends(image_frame(SVG, 128)), BAD_IMAGE),
    Case("svg-data-url", sends(json_frame(image_url=data_url(SVG, "image/svg+xml"))), BAD_IMAGE),
    Case("data-url-with-bad-base64", sends(json_frame(image_url="data:image/jpeg;base64,/9j/4AAQ***")), BAD_IMAGE),
    Case("data-url-with-no-data", sends(json_frame(image_url="data:image/jpeg;base64,")), BAD_IMAGE),
    Case("jpeg-data-url-claiming-png-is-answered", sends(json_frame(image_url=data_url(JPEG, "image/png"))), ANSWERED),
    Case("jpeg-bytes-named-png-output-is-answered", sends(frame(output_format="png")), ANSWERED),
    Case("cmyk-jpeg-is-answered", sends(image_frame(saved(SMALL.convert("CMYK"), "JPEG"), 128)), ANSWERED),
    Case(
        "palette-png-with-transparency-is-answered",
        sends(image_frame(saved(SMALL.convert("P"), "PNG", transparency=0), 128)),
        ANSWERED,
    ),
    Case(
        "one-by-one-png-is-answered",
        sends(image_frame(saved(Image.new("RGB", (1, 1)), "PNG"), 128)),
        ANSWERED,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_image_gets_a_named_error(harness: Harness, case: Case) -> None:
    await harness.check(case)
