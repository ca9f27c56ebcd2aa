"""The realtime protocol (shared/PROTOCOL.md): frames, input validation, error codes.

No Django and no I/O: the runner, the gateway and the clients all use these functions, and the
tests drive them without a socket.

Exceptions::

    ProtocolError            an error the peer is told about as ``x-fal-error``
     └── ValidationError      VALIDATION_ERROR, names the offending field
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "NAMED_SIZES",
    "Encoding",
    "ErrorCode",
    "ImageRequest",
    "ProtocolError",
    "ValidationError",
    "close_reason",
    "decode_frame",
    "dropped_message",
    "encode_frame",
    "error_message",
    "parse_app_path",
    "parse_max_buffering",
    "parse_request",
    "result_payload",
    "timings_message",
]

DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_BUFFERING_RANGE = (1, 60)
PROMPT_MAX_CHARS = 2000
SIZE_RANGE = (64, 1024)
SEED_MAX = 2**32 - 1

# fal's named image sizes.
NAMED_SIZES: dict[str, tuple[int, int]] = {
    "square": (512, 512),
    "square_hd": (1024, 1024),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
OUTPUT_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,", re.IGNORECASE)
_APP_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A sub-path such as ``realtime`` or ``stream/v2``: plain ASCII segments, nothing a URL would re-read.
_SUB_PATH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}){0,3}$")
_MAX_BUFFERING = re.compile(r"^[0-9]{1,3}$")  # ASCII digits only: str.isdigit() takes "²" too
# Decoding limits: a frame is a flat map with a few small values, so a few hundred containers are
# plenty. Every container costs ~60 bytes of Python objects per byte of input (an 8 MiB frame of
# empty msgpack arrays becomes ~600 MB of lists), so their count is bounded while decoding.
MAX_FRAME_CONTAINERS = 256
MAX_FRAME_KEYS = 64


class ErrorCode(enum.StrEnum):
    VALIDATION_ERROR = "VALIDATION_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    APP_UNAVAILABLE = "APP_UNAVAILABLE"
    RUNNER_UNAVAILABLE = "RUNNER_UNAVAILABLE"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    TIMEOUT = "TIMEOUT"


class Encoding(enum.Enum):
    """How a client's frames are written, and so how its results are written back."""

    MSGPACK = "msgpack"  # binary WebSocket messages holding msgpack
    JSON = "json"  # text WebSocket messages
    JSON_BINARY = "json-binary"  # binary messages holding UTF-8 JSON (fal's JSON codecs send these)

    @property
    def is_json(self) -> bool:
        """JSON has no bytes: images travel as data URLs."""
        return self is not Encoding.MSGPACK


class ProtocolError(Exception):
    """An error the peer is told about with an ``x-fal-error`` message."""

    code = ErrorCode.INTERNAL_ERROR

    def __init__(self, reason: str, *, code: ErrorCode | None = None, request_id: Any = None):
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code
        self.request_id = request_id

    def message(self) -> str:
        return error_message(self.code, self.reason, self.request_id)


class ValidationError(ProtocolError):
    """A bad input; ``field`` names what was wrong."""

    code = ErrorCode.VALIDATION_ERROR

    def __init__(self, field: str, problem: str, *, request_id: Any = None):
        super().__init__(f"{field}: {problem}", request_id=request_id)
        self.field = field


def error_message(code: ErrorCode, reason: str, request_id: Any = None) -> str:
    payload: dict[str, Any] = {"type": "x-fal-error", "error": code.value, "reason": reason}
    if request_id is not None:
        payload["request_id"] = request_id
    return json.dumps(payload)


MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame, whole characters only (a cut one would be invalid UTF-8)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return text
    return data[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


def dropped_message(request_id: Any = None) -> str:
    """Told to a gateway (``report_drops=1``) when the buffer displaced an input: usage counts it."""
    payload: dict[str, Any] = {"type": "x-fal-message", "action": "dropped"}
    if request_id is not None:
        payload["request_id"] = request_id
    return json.dumps(payload)


def timings_message(seconds: float) -> str:
    return json.dumps({"type": "x-fal-message", "action": "timings", "timing": round(seconds, 6)})


# -- frames -----------------------------------------------------------------------------------


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


# -- app paths --------------------------------------------------------------------------------


def parse_app_path(path: str) -> tuple[str, str]:
    """Split ``/owner/alias/realtime`` (a path without its query) into ``("owner/alias", "realtime")``.

    Strict: ASCII segments of letters, digits, ``_ . -`` only (no space, ``#``, ``%``, ``..``, empty
    segment), so the path can be written into an upstream URL as it is. Raises ``ValueError`` naming
    the problem for anything else.
    """
    shown = path[:80] + ("..." if len(path) > 80 else "")
    parts = path.strip("/").split("/", 2)
    if len(parts) < 3 or not parts[2]:
        raise ValueError(f"path {shown!r} is not /OWNER/ALIAS/realtime")
    owner, alias, sub = parts
    for segment in (owner, alias):
        if not _APP_SEGMENT.match(segment) or ".." in segment:
            raise ValueError(f"path {shown!r}: {segment[:80]!r} is not an app name (letters, digits, _ . -)")
    if not _SUB_PATH.match(sub) or ".." in sub:
        raise ValueError(f"path {shown!r}: {sub[:80]!r} is not a path of the app (letters, digits, _ . -)")
    return f"{owner}/{alias}", sub


def parse_max_buffering(raw: str | None, default: int = 1) -> int:
    """The ``max_buffering`` query value (``default`` when absent); ``ValidationError`` names the problem."""
    if raw is None:
        return default
    low, high = MAX_BUFFERING_RANGE
    if not _MAX_BUFFERING.match(raw) or not low <= int(raw) <= high:
        raise ValidationError("max_buffering", f"must be an integer from {low} to {high}, got {raw[:20]!r}")
    return int(raw)


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One validated input for the image apps."""

    prompt: str
    image: bytes
    width: int
    height: int
    strength: float = 0.5
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    negative_prompt: str = ""
    sync_mode: bool = False
    output_format: str = "jpeg"
    request_id: str | int | None = None


def request_id_of(frame: dict[str, Any]) -> str | int | None:
    """The frame's ``request_id`` when it is one we can echo, else None."""
    rid = frame.get("request_id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None
    if isinstance(rid, str) and (len(rid) > 200 or (not rid.isascii() and not _encodable(rid))):
        return None
    return rid


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_request(frame: dict[str, Any], *, encoding: Encoding) -> ImageRequest:
    """Validate an input frame. Unknown fields are ignored; errors name the field."""
    rid = request_id_of(frame)
    try:
        return _parse(frame, encoding, rid)
    except ValidationError as exc:
        exc.request_id = rid
        raise


def _parse(frame: dict[str, Any], encoding: Encoding, rid: str | int | None) -> ImageRequest:
    if "request_id" in frame and frame["request_id"] is not None and rid is None:
        raise ValidationError("request_id", "must be a string of at most 200 characters or an integer")
    prompt = frame.get("prompt")
    if prompt is None:
        raise ValidationError("prompt", "is required")
    if not isinstance(prompt, str):
        raise ValidationError("prompt", f"must be a string, got {type(prompt).__name__}")
    if not 1 <= len(prompt) <= PROMPT_MAX_CHARS:
        raise ValidationError("prompt", f"must be 1 to {PROMPT_MAX_CHARS} characters, got {len(prompt)}")
    _unicode(prompt, "prompt")
    negative = frame.get("negative_prompt", "")
    if negative is None:
        negative = ""
    if not isinstance(negative, str) or len(negative) > PROMPT_MAX_CHARS:
        raise ValidationError("negative_prompt", f"must be a string of at most {PROMPT_MAX_CHARS} characters")
    _unicode(negative, "negative_prompt")
    width, height = _parse_size(frame)
    output_format = frame.get("output_format", "jpeg")
    if output_format not in OUTPUT_FORMATS:
        raise ValidationError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    sync_mode = frame.get("sync_mode", False)
    if not isinstance(sync_mode, bool):
        raise ValidationError("sync_mode", "must be true or false")
    return ImageRequest(
        prompt=prompt,
        image=_parse_image(frame, encoding),
        width=width,
        height=height,
        strength=_number(frame, "strength", 0.0, 1.0, default=0.5),
        num_inference_steps=_integer(frame, "num_inference_steps", 1, 8),
        guidance_scale=_number(frame, "guidance_scale", 0.0, 20.0, default=None),
        seed=_integer(frame, "seed", 0, SEED_MAX),
        negative_prompt=negative,
        sync_mode=sync_mode,
        output_format=output_format,
        request_id=rid,
    )


def _unicode(text: str, field: str) -> None:
    """JSON's ``\\ud800`` escapes give strings that no encoder takes back (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(field, f"holds an unpaired surrogate at character {exc.start}") from None


def _parse_image(frame: dict[str, Any], encoding: Encoding) -> bytes:
    raw = frame.get("image_bytes")
    if raw is not None:
        if isinstance(raw, (bytes, bytearray, memoryview)):
            if not raw:
                raise ValidationError("image_bytes", "is empty")
            return bytes(raw)
        hint = "; JSON frames carry images in image_url" if encoding.is_json else ""
        raise ValidationError("image_bytes", f"must be binary, got {type(raw).__name__}{hint}")
    url = frame.get("image_url")
    if url is None:
        raise ValidationError("image", "one of image_bytes and image_url is required")
    if not isinstance(url, str):
        raise ValidationError("image_url", f"must be a string, got {type(url).__name__}")
    match = _DATA_URL.match(url)
    if not match:
        raise ValidationError("image_url", "must be a data:image/(png|jpeg|webp);base64, URL")
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("image_url", "is not valid base64") from None
    if not data:
        raise ValidationError("image_url", "holds no image data")
    return data


def _parse_size(frame: dict[str, Any]) -> tuple[int, int]:
    size = frame.get("image_size")
    if size is not None:
        if isinstance(size, str):
            if size not in NAMED_SIZES:
                names = ", ".join(NAMED_SIZES)
                raise ValidationError("image_size", f"unknown size {size!r}; use one of {names} or {{width, height}}")
            return NAMED_SIZES[size]
        if isinstance(size, dict):
            return _dimension(size, "width", "image_size.width"), _dimension(size, "height", "image_size.height")
        raise ValidationError("image_size", "must be a size name or a map with width and height")
    if "width" in frame or "height" in frame:
        return _dimension(frame, "width", "width"), _dimension(frame, "height", "height")
    return 512, 512


def _dimension(source: dict[str, Any], key: str, field: str) -> int:
    low, high = SIZE_RANGE
    value = source.get(key)
    if value is None:
        raise ValidationError(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high or value % 8:
        raise ValidationError(field, f"must be a multiple of 8 from {low} to {high}, got {value}")
    return value


def _number(frame: dict[str, Any], key: str, low: float, high: float, *, default: float | None) -> Any:
    value = frame.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(key, f"must be a number, got {type(value).__name__}")
    if not low <= value <= high:  # also false for NaN
        raise ValidationError(key, f"must be from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _integer(frame: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = frame.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(key, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValidationError(key, f"must be from {low} to {high}, got {value}")
    return value


# -- results ----------------------------------------------------------------------------------


def result_payload(
    request: ImageRequest,
    *,
    image: bytes,
    width: int,
    height: int,
    content_type: str,
    seed: int,
    inference_seconds: float,
    encoding: Encoding,
    step: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The result map. JSON has no bytes, so text frames always get a data URL. A preview (``step`` is
    ``(step, steps)``) is a result marked ``"partial": true``; the final result has no ``partial``."""
    entry: dict[str, Any] = {"width": width, "height": height, "content_type": content_type}
    if request.sync_mode or encoding.is_json:
        entry["url"] = f"data:{content_type};base64,{base64.b64encode(image).decode('ascii')}"
    else:
        entry["content"] = image
    payload: dict[str, Any] = {
        "images": [entry],
        "seed": seed,
        "timings": {"inference": round(inference_seconds, 6)},
    }
    if step is not None:
        payload.update(partial=True, step=step[0], steps=step[1])
    if request.request_id is not None:
        payload["request_id"] = request.request_id
    return payload
