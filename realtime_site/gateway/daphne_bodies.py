"""HTTP request bodies over the frame cap are refused as they arrive, before daphne keeps them.

daphne (Twisted) holds a whole request body (in memory, or a temporary file past 100 KB) before the
application sees the request, so no view or ASGI middleware can refuse a 1 GB upload in time. This
mend does: a declared ``Content-Length`` over ``REALTIME_MAX_FRAME_BYTES`` is answered 413 at once,
and a chunked body is counted as it arrives and answered 413 once it passes the limit; nothing more
of it is kept and the connection closes. The bodies this site takes are small: an app input (at
most the frame cap), a login form, an admin form.
"""

from __future__ import annotations

import io
import json
from typing import Any

__all__ = ["refuse_bodies_over_the_cap"]


def refuse_bodies_over_the_cap(limit: int) -> None:
    from daphne.http_protocol import WebRequest

    original_got_length = WebRequest.gotLength
    original_chunk = WebRequest.handleContentChunk

    def got_length(self: Any, length: int | None) -> None:
        self.body_seen, self.body_refused = 0, False
        if length is not None and length > limit:
            _refuse(self, limit, f"the request body is {length} bytes; the limit is {limit} bytes")
            return
        original_got_length(self, length)

    def handle_content_chunk(self: Any, data: bytes) -> None:
        if getattr(self, "body_refused", False):
            return
        self.body_seen = getattr(self, "body_seen", 0) + len(data)
        if self.body_seen > limit:
            _refuse(self, limit, f"the request body is over the limit of {limit} bytes")
            return
        original_chunk(self, data)

    WebRequest.gotLength = got_length
    WebRequest.handleContentChunk = handle_content_chunk


def _refuse(request: Any, limit: int, reason: str) -> None:
    """Answer 413 on the raw connection and close it: the request never reaches the application."""
    request.body_refused = True
    request.content = io.BytesIO()  # what was kept of it is let go
    body = json.dumps(
        {"error": "PAYLOAD_TOO_LARGE", "detail": reason, "message": f"PAYLOAD_TOO_LARGE: {reason}"}
    ).encode()
    head = (
        "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    transport = request.channel.transport
    transport.write(head + body)
    transport.loseConnection()
