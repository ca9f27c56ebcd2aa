"""Errors, close codes and the small JSON messages (``x-fal-error``, ``x-fal-message``) of the protocol.

Exceptions::

    ProtocolError            an error the peer is told about as ``x-fal-error``
     ├── ValidationError      VALIDATION_ERROR, names the offending field
     └── Refusal              a connection refused at admission: told, then closed with ``close_code``
"""

from __future__ import annotations

import enum
import json
from typing import Any


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


class CloseCode(enum.IntEnum):
    """Close codes of this protocol: RFC 6455's, and 4000 + the HTTP status a refusal would have."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    STALLED = 4408  # results not read for too long
    TOO_MANY = 4429
    UNAVAILABLE = 4503


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


# The HTTP status of each error when it is told before an HTTP response starts (the JS client's
# ``error.status`` too). A refusal's close code 4xxx says its status itself (4404: 404).
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.APP_UNAVAILABLE: 503,
    ErrorCode.RUNNER_UNAVAILABLE: 503,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.TIMEOUT: 504,
}


def http_status(code: ErrorCode, close_code: int | None = None) -> int:
    if close_code is not None and 4400 <= close_code < 4600:
        return close_code - 4000
    return HTTP_STATUS.get(code, 500)


class Refusal(ProtocolError):
    """A connection refused at admission: told with ``x-fal-error``, then closed with ``close_code``."""

    def __init__(self, code: ErrorCode, reason: str, close_code: CloseCode):
        super().__init__(reason, code=code)
        self.close_code = close_code


META_TYPES = ("x-fal-error", "x-fal-message")


def is_meta(payload: Any) -> bool:
    """An error or a meta message (``x-fal-error``, ``x-fal-message``), not a result."""
    return isinstance(payload, dict) and payload.get("type") in META_TYPES


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


def dropped_message(request_id: Any = None, number: int | None = None) -> str:
    """Told to a gateway (``report_drops=1``) when the buffer displaced an input: usage counts it.
    ``number`` is the input's place among the session's messages (from 1), which the gateway counts too."""
    payload: dict[str, Any] = {"type": "x-fal-message", "action": "dropped"}
    if number is not None:
        payload["input"] = number
    if request_id is not None:
        payload["request_id"] = request_id
    return json.dumps(payload)


def timings_message(seconds: float) -> str:
    return json.dumps({"type": "x-fal-message", "action": "timings", "timing": round(seconds, 6)})
