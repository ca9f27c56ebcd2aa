"""The wire contract (docs/protocol.md), in one place: frames and their encodings, input validation,
results, error and close codes, app paths and session parameters.

No Django and no I/O: the runner, the gateway and the clients all use it, and the tests drive it
without a socket. Its modules: ``errors`` (codes, exceptions, the x-fal messages), ``frames``
(decoding with bounds, encoding), ``session`` (app paths, the query), ``images`` (inputs, results).
"""

from realtime_site.protocol.errors import (
    MAX_CLOSE_REASON_BYTES,
    META_TYPES,
    CloseCode,
    ErrorCode,
    ProtocolError,
    Refusal,
    ValidationError,
    close_reason,
    dropped_message,
    error_message,
    is_meta,
    timings_message,
)
from realtime_site.protocol.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_FRAME_CONTAINERS,
    MAX_FRAME_KEYS,
    Encoding,
    closing_frame_bytes,
    decode_frame,
    encode_frame,
)
from realtime_site.protocol.images import (
    NAMED_SIZES,
    OUTPUT_FORMATS,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    SIZE_RANGE,
    ImageRequest,
    parse_request,
    request_id_of,
    result_payload,
)
from realtime_site.protocol.session import (
    MAX_BUFFERING_RANGE,
    AppPath,
    SessionQuery,
    alias_of,
    is_app_id,
    is_sub_path,
    normalise_app_id,
    parse_app_path,
    parse_max_buffering,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MAX_BUFFERING_RANGE",
    "MAX_CLOSE_REASON_BYTES",
    "MAX_FRAME_CONTAINERS",
    "MAX_FRAME_KEYS",
    "META_TYPES",
    "NAMED_SIZES",
    "OUTPUT_FORMATS",
    "PROMPT_MAX_CHARS",
    "SEED_MAX",
    "SIZE_RANGE",
    "AppPath",
    "CloseCode",
    "Encoding",
    "ErrorCode",
    "ImageRequest",
    "ProtocolError",
    "Refusal",
    "SessionQuery",
    "ValidationError",
    "alias_of",
    "close_reason",
    "closing_frame_bytes",
    "decode_frame",
    "dropped_message",
    "encode_frame",
    "error_message",
    "is_app_id",
    "is_meta",
    "is_sub_path",
    "normalise_app_id",
    "parse_app_path",
    "parse_max_buffering",
    "parse_request",
    "request_id_of",
    "result_payload",
    "timings_message",
]
