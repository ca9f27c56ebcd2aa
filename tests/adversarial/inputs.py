"""Inputs for the cases: good frames, and the crafted bad ones (bombs, broken images, odd encodings)."""

from __future__ import annotations

import base64
import functools
import io
import json
import random
import struct
import zlib
from typing import Any

import msgpack
from PIL import Image

from tests.conftest import drawing, encode
from tests.runner.test_imaging import png_header_only

__all__ = [
    "GOOD",
    "JPEG",
    "client_frame",
    "data_url",
    "frame",
    "good_frame",
    "image_frame",
    "json_frame",
    "msgpack_array_bomb",
    "msgpack_map_bomb",
    "noisy_jpeg",
    "png_chunk",
    "png_header_only",
    "png_truncated_ihdr",
    "saved",
    "zero_png",
]

JPEG = encode(drawing(64, 64))
GOOD: dict[str, Any] = {"prompt": "x", "image_bytes": JPEG, "width": 64, "height": 64}


def frame(**fields: Any) -> bytes:
    """A msgpack frame: the good fields, overridden (a field set to ``...`` is left out)."""
    merged = {k: v for k, v in {**GOOD, **fields}.items() if v is not ...}
    return msgpack.packb(merged, use_bin_type=True)


def good_frame(request_id: Any = "after", **fields: Any) -> bytes:
    return frame(request_id=request_id, **fields)


def image_frame(image: bytes, size: int = 128, **fields: Any) -> bytes:
    """A frame carrying ``image``; size 64 takes echo's pass-through path, 128 makes it decode."""
    return frame(image_bytes=image, width=size, height=size, **fields)


def json_frame(**fields: Any) -> str:
    """A JSON text frame: images go in image_url (a data URL)."""
    merged = {"prompt": "x", "image_url": data_url(JPEG), "width": 64, "height": 64, **fields}
    return json.dumps({k: v for k, v in merged.items() if v is not ...})


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def saved(img: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_truncated_ihdr() -> bytes:
    """The PNG signature and the start of an IHDR chunk: 16 bytes, no dimensions."""
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@functools.cache
def zero_png(side: int = 4096) -> bytes:
    """A real, valid PNG of ``side`` x ``side`` black pixels: tiny on the wire, 48 MiB decoded."""
    return saved(Image.new("RGB", (side, side)), "PNG", optimize=False, compress_level=9)


@functools.cache
def noisy_jpeg(side: int = 384, quality: int = 95) -> bytes:
    """A JPEG of random noise: big for its size (about 200 KB at 384 x 384), echoed as it is."""
    rng = random.Random(side)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    return saved(img, "JPEG", quality=quality)


def msgpack_array_bomb(declared: int = 10_000_000, size: int = 30) -> bytes:
    """An array32 header declaring ``declared`` elements, followed by empty arrays up to ``size`` bytes."""
    return b"\xdd" + struct.pack(">I", declared) + b"\x90" * (size - 5)


def msgpack_map_bomb(declared: int = 10_000_000, size: int = 30) -> bytes:
    """A map32 header declaring ``declared`` pairs of empty maps."""
    return b"\xdf" + struct.pack(">I", declared) + b"\x80" * (size - 5)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One WebSocket frame as a client writes it (RFC 6455 5.2), to break the rules on purpose."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        header = bytes([first, mask_bit | n])
    elif n < 65536:
        header = bytes([first, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = b"\x5a\x17\xc3\x9e"
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
