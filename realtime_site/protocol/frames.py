"""Frames: one input per WebSocket message, decoded with bounds, and answers encoded the same way."""

from __future__ import annotations

import enum
import json
from typing import Any

import msgpack

from realtime_site.protocol.errors import ValidationError

DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024


def closing_frame_bytes(cap: int) -> int:
    """A frame over ``cap`` is refused with PAYLOAD_TOO_LARGE and the connection lives on; one over
    this (twice the cap) closes it with 1009, which bounds what a connection can make a server hold."""
    return 2 * cap


# Decoding limits: a frame is a flat map with a few small values, so a few hundred containers are
# plenty. Every container costs ~60 bytes of Python objects per byte of input (an 8 MiB frame of
# empty msgpack arrays becomes ~600 MB of lists), so their count is bounded while decoding.
MAX_FRAME_CONTAINERS = 256
MAX_FRAME_KEYS = 64


class Encoding(enum.Enum):
    """How a client's frames are written, and so how its results are written back."""

    MSGPACK = "msgpack"  # binary WebSocket messages holding msgpack
    JSON = "json"  # text WebSocket messages
    JSON_BINARY = "json-binary"  # binary messages holding UTF-8 JSON (fal's JSON codecs send these)

    @property
    def is_json(self) -> bool:
        """JSON has no bytes: images travel as data URLs."""
        return self is not Encoding.MSGPACK


def decode_frame(data: bytes | str) -> tuple[dict[str, Any], Encoding]:
    """Decode one client message: a msgpack map (binary), a JSON object (text), or a JSON object in a
    binary message (one that begins with ``{``, which no msgpack map does).

    Bounded: at most ``MAX_FRAME_CONTAINERS`` arrays and maps, ``MAX_FRAME_KEYS`` entries a map, and
    lengths no larger than the message itself; anything else is a ``ValidationError`` naming ``frame``.
    """
    if isinstance(data, str):
        return _decode_json(data), Encoding.JSON
    if data[:1] == b"{":
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError("frame", f"binary message begins with '{{' but is not UTF-8 JSON ({exc})") from None
        return _decode_json(text, "binary"), Encoding.JSON_BINARY
    return _decode_msgpack(data), Encoding.MSGPACK


def _too_many_containers() -> ValidationError:
    return ValidationError("frame", f"holds more than {MAX_FRAME_CONTAINERS} arrays and maps")


def _decode_json(data: str, kind: str = "text") -> dict[str, Any]:
    # Every container opens with a bracket: counting them (in C) bounds the work before decoding.
    if data.count("[") + data.count("{") > MAX_FRAME_CONTAINERS:
        raise _too_many_containers()
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValidationError("frame", f"{kind} message is not valid JSON ({exc})") from None
    if not isinstance(frame, dict):
        raise ValidationError("frame", f"must be a JSON object, got {type(frame).__name__}")
    return frame


class _ContainerBudget:
    """msgpack hooks that count arrays and maps as they are built and stop a bomb early."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_FRAME_CONTAINERS

    def __call__(self, value: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise _too_many_containers()
        return value


def _decode_msgpack(data: bytes) -> dict[str, Any]:
    if not data or not (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        raise ValidationError(
            "frame", f"must be a msgpack map (it begins with {'byte 0x' + data[:1].hex() if data else 'nothing'})"
        )
    budget = _ContainerBudget()
    try:
        frame = msgpack.unpackb(
            data,
            raw=False,
            list_hook=budget,
            object_hook=budget,
            max_map_len=MAX_FRAME_KEYS,
            max_array_len=MAX_FRAME_CONTAINERS * 4,
            max_ext_len=0,
        )
    except ValidationError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad data
        raise ValidationError("frame", f"binary message is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(frame, dict):
        raise ValidationError("frame", f"must be a msgpack map, got {type(frame).__name__}")
    return frame


def encode_frame(payload: dict[str, Any], encoding: Encoding) -> bytes | str:
    if encoding is Encoding.MSGPACK:
        return msgpack.packb(payload, use_bin_type=True)
    if encoding is Encoding.JSON_BINARY:
        return json.dumps(payload).encode()
    return json.dumps(payload)
