"""``realtime`` and ``realtime_async``: the same calls as fal's Python client, for our server.

``base_url`` is the gateway's HTTP address (``http://localhost:8000``); the WebSocket address is
derived from it. ``key`` is an API key ``KEY_ID:KEY_SECRET``. Both default to the environment:
``REALTIME_BASE_URL``, then ``REALTIME_KEY`` or ``FAL_KEY``. With ``use_jwt=True`` (the default, as
in fal's client) a short-lived token is fetched from ``POST {base_url}/tokens/`` and the key never
travels on the WebSocket; with ``use_jwt=False`` the key is sent as ``Authorization: Key ...``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import msgpack
from websockets.asyncio.client import ClientConnection as AsyncSocket
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection as SyncSocket
from websockets.sync.client import connect as connect_sync

from realtime_site.protocol import MAX_BUFFERING_RANGE, alias_of, normalise_app_id

__all__ = ["AsyncRealtimeConnection", "RealtimeConnection", "RealtimeError", "realtime", "realtime_async"]

DEFAULT_TOKEN_EXPIRATION = 120
OPEN_TIMEOUT = 30.0

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]


class RealtimeError(Exception):
    """An ``x-fal-error`` from the server, or a connection or token failure (``error`` is the code)."""

    def __init__(self, error: str, reason: str = "", payload: dict[str, Any] | None = None):
        self.error = error
        self.reason = reason
        self.payload = payload or {}
        super().__init__(f"{error}: {reason}" if reason else error)


@dataclass(frozen=True)
class _Target:
    ws_url: str
    http_base: str
    alias: str
    headers: dict[str, str]
    app_id: str = ""  # owner/alias


def _app_path(app: str) -> tuple[str, str | None]:
    """``owner/alias[/path]`` (or ``NUMBER-alias``) to ``("owner/alias", "path" or None)``."""
    parts = normalise_app_id(app).strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(f"invalid app id {app!r}: expected OWNER/ALIAS")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def _resolve(
    app: str, base_url: str | None, key: str | None, path: str, max_buffering: int | None, previews: bool = False
) -> _Target:
    base = (base_url or os.environ.get("REALTIME_BASE_URL") or "").rstrip("/")
    if not base:
        raise ValueError("no server: pass base_url= or set REALTIME_BASE_URL (e.g. http://localhost:8000)")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"base_url {base!r} is not an http(s):// or ws(s):// address")
    secure = parts.scheme in ("https", "wss")
    http_base = f"{'https' if secure else 'http'}://{parts.netloc}{parts.path}"
    app_id, app_path = _app_path(app)
    sub = app_path if app_path is not None else path.strip("/")
    ws_url = f"{'wss' if secure else 'ws'}://{parts.netloc}{parts.path}/{app_id}" + (f"/{sub}" if sub else "")
    query: dict[str, Any] = {}
    if max_buffering is not None:
        low, high = MAX_BUFFERING_RANGE
        if not low <= max_buffering <= high:
            raise ValueError(f"max_buffering must be between {low} and {high} (inclusive)")
        query["max_buffering"] = max_buffering
    if previews:
        query["previews"] = 1
    if query:
        ws_url += "?" + urlencode(query)
    api_key = key or os.environ.get("REALTIME_KEY") or os.environ.get("FAL_KEY")
    if not api_key:
        raise ValueError("no API key: pass key= or set REALTIME_KEY (python manage.py create_api_key USER)")
    return _Target(ws_url, http_base, alias_of(app_id), {"Authorization": f"Key {api_key}"}, app_id)


def _with_token(url: str, token: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({"fal_jwt_token": token})


def _token_request(target: _Target, token_expiration: int) -> dict[str, Any]:
    return {
        "url": f"{target.http_base}/tokens/",
        "json": {"allowed_apps": [target.alias], "token_expiration": token_expiration},
        "headers": target.headers,
    }


def _parse_token(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = body.get("detail") if isinstance(body, dict) else response.text[:200]
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN"}.get(response.status_code, f"HTTP_{response.status_code}")
        raise RealtimeError(code, f"token request refused: {detail}")
    if isinstance(body, dict) and isinstance(body.get("token"), str):
        return body["token"]
    if not isinstance(body, str):
        raise RealtimeError("UNEXPECTED_RESPONSE", "the token endpoint did not answer a token")
    return body


def _fetch_token(target: _Target, token_expiration: int) -> str:
    try:
        return _parse_token(httpx.post(timeout=OPEN_TIMEOUT, **_token_request(target, token_expiration)))
    except httpx.HTTPError as exc:
        raise RealtimeError("CONNECTION_FAILED", f"cannot reach {target.http_base}: {exc}") from None


async def _fetch_token_async(target: _Target, token_expiration: int) -> str:
    try:
        async with httpx.AsyncClient(timeout=OPEN_TIMEOUT) as http:
            return _parse_token(await http.post(**_token_request(target, token_expiration)))
    except httpx.HTTPError as exc:
        raise RealtimeError("CONNECTION_FAILED", f"cannot reach {target.http_base}: {exc}") from None


def _encode(message: dict[str, Any], encoder: Encoder | None) -> bytes:
    return encoder(message) if encoder else msgpack.packb(message, use_bin_type=True)


def _decode_binary(message: bytes) -> Any:
    """msgpack, or JSON when the message begins with ``{`` (the answer to JSON sent in binary frames)."""
    return json.loads(message) if message[:1] == b"{" else msgpack.unpackb(message, raw=False)


def _decode(message: bytes | str, decoder: Decoder | None) -> dict[str, Any] | None:
    """A result, or None for a meta message; raises RealtimeError for an x-fal-error."""
    if isinstance(message, str):
        try:
            payload = json.loads(message)
        except ValueError:
            return {"type": "text", "payload": message}
    else:
        payload = decoder(message) if decoder else _decode_binary(message)
    if isinstance(payload, dict):
        if payload.get("type") == "x-fal-error":
            raise RealtimeError(str(payload.get("error", "UNKNOWN_ERROR")), str(payload.get("reason", "")), payload)
        if payload.get("type") == "x-fal-message":
            return None
    return payload


def _closed(exc: ConnectionClosed) -> RealtimeError:
    return RealtimeError("CONNECTION_CLOSED", str(exc))


def _open_failed(target: _Target, exc: Exception) -> RealtimeError:
    return RealtimeError("CONNECTION_FAILED", f"cannot open {target.ws_url.split('?')[0]}: {exc}")


class RealtimeConnection:
    """A synchronous connection: ``send(dict)``, ``recv()``, iteration over results."""

    def __init__(self, ws: SyncSocket, encode_message: Encoder | None, decode_message: Decoder | None):
        self._ws, self._encode, self._decode = ws, encode_message, decode_message

    def send(self, arguments: dict[str, Any]) -> None:
        try:
            self._ws.send(_encode(arguments, self._encode))
        except ConnectionClosed as exc:
            while self.recv() is not None:  # the server's x-fal-error, if it said why, is raised here
                pass
            raise _closed(exc) from None

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next result; None once the server closed normally."""
        while True:
            try:
                message = self._ws.recv(timeout)
            except ConnectionClosedOK:
                return None
            except ConnectionClosed as exc:
                raise _closed(exc) from None
            decoded = _decode(message, self._decode)
            if decoded is not None:
                return decoded

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (result := self.recv()) is not None:
            yield result

    def close(self) -> None:
        self._ws.close()


class AsyncRealtimeConnection:
    """An asyncio connection: ``await send(dict)``, ``await recv()``, ``async for`` over results."""

    def __init__(self, ws: AsyncSocket, encode_message: Encoder | None, decode_message: Decoder | None):
        self._ws, self._encode, self._decode = ws, encode_message, decode_message

    async def send(self, arguments: dict[str, Any]) -> None:
        try:
            await self._ws.send(_encode(arguments, self._encode))
        except ConnectionClosed as exc:
            while await self.recv() is not None:  # the server's x-fal-error, if it said why, is raised here
                pass
            raise _closed(exc) from None

    async def recv(self) -> dict[str, Any] | None:
        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosedOK:
                return None
            except ConnectionClosed as exc:
                raise _closed(exc) from None
            decoded = _decode(message, self._decode)
            if decoded is not None:
                return decoded

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._results()

    async def _results(self) -> AsyncIterator[dict[str, Any]]:
        while (result := await self.recv()) is not None:
            yield result

    async def close(self) -> None:
        await self._ws.close()


@contextmanager
def realtime(
    app: str,
    *,
    base_url: str | None = None,
    key: str | None = None,
    path: str = "/realtime",
    max_buffering: int | None = None,
    previews: bool = False,
    token_expiration: int = DEFAULT_TOKEN_EXPIRATION,
    use_jwt: bool = True,
    encode_message: Encoder | None = None,
    decode_message: Decoder | None = None,
) -> Iterator[RealtimeConnection]:
    target = _resolve(app, base_url, key, path, max_buffering, previews)
    url, headers = target.ws_url, target.headers
    if use_jwt:
        url, headers = _with_token(url, _fetch_token(target, token_expiration)), {}
    try:
        ws = connect_sync(url, additional_headers=headers, open_timeout=OPEN_TIMEOUT, max_size=None, compression=None)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise _open_failed(target, exc) from None
    with ws:
        yield RealtimeConnection(ws, encode_message, decode_message)


@asynccontextmanager
async def realtime_async(
    app: str,
    *,
    base_url: str | None = None,
    key: str | None = None,
    path: str = "/realtime",
    max_buffering: int | None = None,
    previews: bool = False,
    token_expiration: int = DEFAULT_TOKEN_EXPIRATION,
    use_jwt: bool = True,
    encode_message: Encoder | None = None,
    decode_message: Decoder | None = None,
) -> AsyncIterator[AsyncRealtimeConnection]:
    target = _resolve(app, base_url, key, path, max_buffering, previews)
    url, headers = target.ws_url, target.headers
    if use_jwt:
        url, headers = _with_token(url, await _fetch_token_async(target, token_expiration)), {}
    try:
        ws = await connect_async(
            url, additional_headers=headers, open_timeout=OPEN_TIMEOUT, max_size=None, compression=None
        )
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        raise _open_failed(target, exc) from None
    async with ws:
        yield AsyncRealtimeConnection(ws, encode_message, decode_message)
