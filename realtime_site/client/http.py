"""``stream`` and ``run`` (and their async forms): the HTTP calls of an app, as fal's Python client
makes them, for our server.

``stream`` iterates the events of ``POST {base_url}/{app}/stream``: previews (``"partial": True``,
with ``step`` and ``steps``) and then the result. ``run`` returns the one result of
``POST {base_url}/{app}``. Auth as ``realtime``: a short-lived token in the query (``use_jwt=True``)
or the key itself in ``Authorization: Key``. Pictures given as bytes (``image_bytes``, ``image``) are
sent as data URLs, since the body is JSON. Errors raise ``RealtimeError`` with the server's code.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse, connect_sse

from realtime_site.client.connection import (
    DEFAULT_TOKEN_EXPIRATION,
    RealtimeError,
    _fetch_token,
    _fetch_token_async,
    _resolve,
    _Target,
)

__all__ = ["run", "run_async", "stream", "stream_async"]

CONNECT_TIMEOUT = 30.0
_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"RIFF", "image/webp"))


def _json_input(arguments: dict[str, Any]) -> dict[str, Any]:
    """The input as JSON takes it: a picture given as bytes becomes ``image_url``, a data URL."""
    body = dict(arguments)
    for name in ("image_bytes", "image"):
        data = body.get(name)
        if isinstance(data, (bytes, bytearray, memoryview)):
            del body[name]
            data = bytes(data)
            content_type = next((kind for magic, kind in _MAGIC if data.startswith(magic)), "image/png")
            body.setdefault("image_url", f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}")
    return body


def _request(target: _Target, token: str | None, mode: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(url, query, headers) of a call: the token in the query, or the key in the header."""
    url = f"{target.http_base}/{target.app_id}" + ("/stream" if mode == "stream" else "")
    return url, ({"fal_jwt_token": token} if token else {}), ({} if token else dict(target.headers))


def _refused(response: httpx.Response) -> RealtimeError:
    """A non-2xx answer as the error it names (``error``, ``detail``), else its status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return RealtimeError(str(body["error"]), str(body.get("detail", "")), body)
    return RealtimeError(f"HTTP_{response.status_code}", response.text[:200])


def _event(event: Any) -> dict[str, Any]:
    """An event's payload; an ``x-fal-error`` (the stream's last) raises."""
    if isinstance(event, dict) and event.get("type") == "x-fal-error":
        raise RealtimeError(str(event.get("error", "UNKNOWN_ERROR")), str(event.get("reason", "")), event)
    return event


def _timeout(timeout: float | None) -> httpx.Timeout:
    return httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)


def _call_target(app: str, base_url: str | None, key: str | None) -> _Target:
    return _resolve(app, base_url, key, "/realtime", None)


def stream(
    app: str,
    arguments: dict[str, Any],
    *,
    base_url: str | None = None,
    key: str | None = None,
    use_jwt: bool = True,
    token_expiration: int = DEFAULT_TOKEN_EXPIRATION,
    timeout: float | None = None,
) -> Iterator[dict[str, Any]]:
    """The events of one call: each preview as it is made, then the result."""
    target = _call_target(app, base_url, key)
    token = _fetch_token(target, token_expiration) if use_jwt else None
    url, query, headers = _request(target, token, "stream")
    try:
        with (
            httpx.Client(timeout=_timeout(timeout)) as http,
            connect_sse(http, "POST", url, params=query, headers=headers, json=_json_input(arguments)) as events,
        ):
            if events.response.status_code != 200:
                events.response.read()
                raise _refused(events.response)
            for sse in events.iter_sse():
                yield _event(sse.json())
    except httpx.HTTPError as exc:
        raise RealtimeError("CONNECTION_FAILED", f"cannot reach {target.http_base}: {exc}") from None


async def stream_async(
    app: str,
    arguments: dict[str, Any],
    *,
    base_url: str | None = None,
    key: str | None = None,
    use_jwt: bool = True,
    token_expiration: int = DEFAULT_TOKEN_EXPIRATION,
) -> AsyncIterator[dict[str, Any]]:
    target = _call_target(app, base_url, key)
    token = await _fetch_token_async(target, token_expiration) if use_jwt else None
    url, query, headers = _request(target, token, "stream")
    try:
        async with (
            httpx.AsyncClient(timeout=_timeout(None)) as http,  # bound it with asyncio.timeout
            aconnect_sse(http, "POST", url, params=query, headers=headers, json=_json_input(arguments)) as events,
        ):
            if events.response.status_code != 200:
                await events.response.aread()
                raise _refused(events.response)
            async for sse in events.aiter_sse():
                yield _event(sse.json())
    except httpx.HTTPError as exc:
        raise RealtimeError("CONNECTION_FAILED", f"cannot reach {target.http_base}: {exc}") from None


def run(
    app: str,
    arguments: dict[str, Any],
    *,
    base_url: str | None = None,
    key: str | None = None,
    use_jwt: bool = True,
    token_expiration: int = DEFAULT_TOKEN_EXPIRATION,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The result of one call."""
    target = _call_target(app, base_url, key)
    token = _fetch_token(target, token_expiration) if use_jwt else None
    url, query, headers = _request(target, token, "run")
    try:
        response = httpx.post(
            url, params=query, headers=headers, json=_json_input(arguments), timeout=_timeout(timeout)
        )
    except httpx.HTTPError as exc:
        raise RealtimeError("CONNECTION_FAILED", f"cannot reach {target.http_base}: {exc}") from None
    if response.status_code != 200:
        raise _refused(response)
    return response.json()


async def run_async(
    app: str,
    arguments: dict[str, Any],
    *,
    base_url: str | None = None,
    key: str | None = None,
    use_jwt: bool = True,
    token_expiration: int = DEFAULT_TOKEN_EXPIRATION,
) -> dict[str, Any]:
    target = _call_target(app, base_url, key)
    token = await _fetch_token_async(target, token_expiration) if use_jwt else None
    url, query, headers = _request(target, token, "run")
    try:
        async with httpx.AsyncClient(timeout=_timeout(None)) as http:  # bound it with asyncio.timeout
            response = await http.post(url, params=query, headers=headers, json=_json_input(arguments))
    except httpx.HTTPError as exc:
        raise RealtimeError("CONNECTION_FAILED", f"cannot reach {target.http_base}: {exc}") from None
    if response.status_code != 200:
        raise _refused(response)
    return response.json()
