"""A minimal WebSocket client for the tests: our own, beside the published fal client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect


async def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    return await connect(url, compression=None, max_size=None, open_timeout=30, **kwargs)


def pack(**fields: Any) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def decode(message: bytes | str) -> dict[str, Any]:
    """A text message, or a binary one: msgpack, or JSON when it begins with ``{`` (as the server answers
    JSON sent in binary frames)."""
    if isinstance(message, str) or message[:1] == b"{":
        return json.loads(message)
    return msgpack.unpackb(message, raw=False)


async def recv(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    return decode(await asyncio.wait_for(ws.recv(), timeout))


async def recv_result(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    """The next message that is not an ``x-fal-message`` meta message."""
    while True:
        message = await recv(ws, timeout)
        if message.get("type") != "x-fal-message":
            return message
