"""What the offender does, as reusable moves that fill an ``Outcome``: a case is one of these with its
arguments, or a few lines built from them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from tests.adversarial.harness import Harness, Outcome
from tests.adversarial.inputs import client_frame, good_frame
from tests.runner.wsclient import decode, open_ws

__all__ = [
    "Attack",
    "connected",
    "http",
    "raw_session",
    "read_until_closed",
    "refused",
    "sends",
    "staff_http",
    "until_result",
]

ECHO = "/local/echo/realtime"
REPLY_TIMEOUT = 10.0
FIRST_MESSAGE_TIMEOUT = 3.0  # a refusal comes at once; an admitted connection says nothing
Attack = Callable[[Harness], Any]


def _closed(outcome: Outcome, ws: ClientConnection) -> None:
    outcome.close, outcome.close_reason = ws.close_code, ws.close_reason or ""


Headers = dict[str, str] | list[tuple[str, str]]


@contextlib.asynccontextmanager
async def connected(
    h: Harness, path: str = ECHO, *, user: str | None = "attacker", headers: Headers | None = None, **options: Any
) -> AsyncIterator[ClientConnection]:
    """A WebSocket to the gateway with ``user``'s API key and ``headers`` (a list may repeat a name)."""
    extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    all_headers = [*(h.headers(user).items() if user else []), *extra]
    async with await open_ws(h.url(path), additional_headers=all_headers, **options) as ws:
        yield ws


async def read_until_closed(ws: ClientConnection, outcome: Outcome, timeout: float = REPLY_TIMEOUT) -> None:
    """Read (and count) messages until the server closes; a problem if it does not within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                outcome.take(decode(await ws.recv()))
    except ConnectionClosed:
        _closed(outcome, ws)
    except TimeoutError:
        outcome.problems.append(f"the server did not close the connection within {timeout:g} s")


async def until_result(ws: ClientConnection, outcome: Outcome, request_id: Any) -> bool:
    """Read until the result answering ``request_id``; True when it came (others are counted)."""
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            message = decode(await ws.recv())
            if message.get("request_id") == request_id and message.get("type") not in ("x-fal-error", "x-fal-message"):
                return True
            outcome.take(message)


def refused(path: str = ECHO, *, user: str | None = "attacker", headers: Headers | None = None) -> Attack:
    """Connect and say nothing: a refusal is an x-fal-error and a close, at once."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome()
        try:
            async with connected(h, path, user=user, headers=headers) as ws:
                try:
                    first = await asyncio.wait_for(ws.recv(), FIRST_MESSAGE_TIMEOUT)
                except TimeoutError:
                    outcome.problems.append(f"admitted: nothing said within {FIRST_MESSAGE_TIMEOUT:g} s")
                    return outcome
                except ConnectionClosed:
                    _closed(outcome, ws)
                    return outcome
                outcome.take(decode(first))
                await read_until_closed(ws, outcome)
        except InvalidStatus as exc:
            outcome.status = exc.response.status_code
            outcome.body = exc.response.body.decode(errors="replace") if exc.response.body else ""
        except (InvalidHandshake, OSError) as exc:
            outcome.problems.append(f"the handshake failed without an answer: {exc!r}"[:300])
        return outcome

    return attack


Message = bytes | str | list[bytes] | Callable[[], bytes | str]


def sends(
    *messages: Message,
    text: bool | None = None,
    path: str = ECHO,
    user: str = "attacker",
    then_good: bool = True,
    replies: int | None = None,
) -> Attack:
    """Send ``messages`` on an admitted connection and read the answers (one each, unless ``replies``),
    then a good frame: does the connection live on? A callable message is made when the case runs
    (big inputs are not built at collection); a list is sent as the fragments of one message."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=0)
        async with connected(h, path, user=user) as ws:
            try:
                for message in messages:
                    await ws.send(message() if callable(message) else message, text=text)
                    outcome.frames += 1
                for _ in range(len(messages) if replies is None else replies):
                    outcome.take(decode(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT)))
                if then_good:
                    await ws.send(good_frame("after"))
                    outcome.frames += 1
                    outcome.lived = await until_result(ws, outcome, "after")
            except ConnectionClosed:
                _closed(outcome, ws)
                outcome.frames = None  # what reached the gateway is not known
            except TimeoutError:
                outcome.problems.append(f"no answer within {REPLY_TIMEOUT:g} s")
        return outcome

    return attack


def http(method: str, path: str, *, client: str | None = None, **options: Any) -> Attack:
    """One HTTP request (``client``: "staff" or "clerk" for a logged-in admin session)."""

    async def attack(h: Harness) -> Outcome:
        return await asyncio.to_thread(_request, h, method, path, client, options)

    return attack


def staff_http(method: str, path: str, **options: Any) -> Attack:
    return http(method, path, client="staff", **options)


def _request(h: Harness, method: str, path: str, client: str | None, options: dict[str, Any]) -> Outcome:
    options = dict(options)
    headers = {k: (f"Key {h.keys['attacker']}" if v == "KEY" else v) for k, v in options.pop("headers", {}).items()}
    if client is None:
        response = httpx.request(method, h.stack.http + path, headers=headers, timeout=30, **options)
    else:
        session = h.staff if client == "staff" else h.clerk
        response = session.request(method, path, headers=headers, **options)
    return response_outcome(response)


def response_outcome(response: httpx.Response) -> Outcome:
    outcome = Outcome(status=response.status_code, body=response.text[:200_000])
    try:
        data = json.loads(response.content)
    except ValueError:
        pass
    else:
        outcome.detail = str(data.get("detail")) if isinstance(data, dict) else None
    return outcome


def raw_session(headers: list[str], messages: list[bytes] = (), *, path: str = ECHO) -> Attack:
    """A WebSocket spoken by hand, for what client libraries refuse to send (odd header bytes): the
    handshake with the attacker's key and ``headers``, ``messages`` as binary frames (one answer read
    for each), then a clean close. A refused handshake leaves its HTTP status in the outcome."""

    async def attack(h: Harness) -> Outcome:
        outcome = Outcome(frames=len(messages))
        reader, writer = await asyncio.open_connection("127.0.0.1", h.stack.port)
        try:
            request = [
                f"GET {path} HTTP/1.1",
                f"Host: 127.0.0.1:{h.stack.port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
                f"Authorization: Key {h.keys['attacker']}",
                *headers,
            ]
            writer.write("\r\n".join(request).encode("latin-1") + b"\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REPLY_TIMEOUT)
            outcome.status = int(head.split(b" ", 2)[1])
            if outcome.status != 101:
                outcome.frames = None
                return outcome
            for message in messages:
                writer.write(client_frame(0x2, message))
                opcode, payload = await asyncio.wait_for(_server_frame(reader), REPLY_TIMEOUT)
                if opcode == 0x8:
                    outcome.close = int.from_bytes(payload[:2], "big") if payload else 1005
                    return outcome
                outcome.take(decode(payload.decode() if opcode == 0x1 else payload))
            writer.write(client_frame(0x8, (1000).to_bytes(2, "big")))
            while (await asyncio.wait_for(_server_frame(reader), REPLY_TIMEOUT))[0] != 0x8:
                pass
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
            outcome.problems.append(f"the raw session broke off: {exc!r}"[:200])
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return outcome

    return attack


async def _server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked frame from the server: (opcode, payload)."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await reader.readexactly(length)
