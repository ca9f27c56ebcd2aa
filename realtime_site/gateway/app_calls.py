"""The apps' HTTP calls with a token or a key, served below Django (``POST /{owner}/{alias}/stream``
and ``POST /{owner}/{alias}``).

Django's request handling (the request object, the middleware, the URL resolver, the thread hops
around a response) costs a few milliseconds a call; a call with a bearer credential needs none of
it, as a realtime frame needs none of Channels' dispatch. This ASGI wrapper serves those calls
itself with ``http_apps``, the same code the Django views use, and hands everything else to Django:
other paths and methods, CORS preflights, callers with only the session cookie (Django reads the
session), and a Host that is not allowed (Django answers 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from realtime_site.gateway.admission import has_credentials, header
from realtime_site.gateway.cors import cors_headers
from realtime_site.gateway.http_apps import CallAnswer, CallRequest, answer

__all__ = ["AppCalls"]

ROUTE = re.compile(r"^/(?!(?:admin|accounts|api|gallery|rooms|static|tokens|metrics)/)([^/]+)/([^/]+?)(/stream)?$")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
Scope = dict[str, Any]


class AppCalls:
    def __init__(self, django: Any):
        self.django = django

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        route = _ours(scope)
        if route is None:
            await self.django(scope, receive, send)
            return
        owner, alias, mode = route
        body = await _read_body(receive)
        if body is None:  # the client left before its body arrived
            return
        answered = await answer(CallRequest(scope, "POST", body), owner, alias, mode)
        answered.headers.update(SECURITY_HEADERS)
        answered.headers.update(cors_headers(header(scope, b"origin")))
        await _send(answered, receive, send)


def _ours(scope: Scope) -> tuple[str, str, str] | None:
    """(owner, alias, mode) when this is a call to serve here; None hands it to Django."""
    if scope["type"] != "http" or scope.get("method") != "POST" or not has_credentials(scope):
        return None
    match = ROUTE.match(scope.get("path", ""))
    if match is None:
        return None
    host = header(scope, b"host") or ""
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return match[1], match[2], "stream" if match[3] else "run"


async def _read_body(receive: Any) -> bytes | None:
    """The whole body (daphne has refused one over the frame cap); None if the client left."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send(answered: CallAnswer, receive: Any, send: Any) -> None:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answered.headers.items()]
    await send({"type": "http.response.start", "status": answered.status, "headers": headers})
    if answered.events is None:
        await send({"type": "http.response.body", "body": answered.body})
        return
    streaming = asyncio.ensure_future(_send_events(answered, send))
    watching = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (streaming, watching):
            task.cancel()  # a client gone mid-stream: the events' own cleanup ends the call
        await asyncio.gather(streaming, watching, return_exceptions=True)
    with contextlib.suppress(Exception):
        streaming.result()


async def _send_events(answered: CallAnswer, send: Any) -> None:
    assert answered.events is not None
    try:
        async for chunk in answered.events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await answered.events.aclose()  # type: ignore[attr-defined]


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
