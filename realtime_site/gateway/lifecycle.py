"""daphne, mended: shutdown writes usage and closes clients with 1001; protocol errors close cleanly;
the access log writes paths without their query strings (where tokens may be); request bodies over
the frame cap are refused as they arrive (``daphne_bodies``); the consumer can see its transport.

Shutdown: every open connection's usage is written, then clients get 1001.

daphne runs the ASGI app on Twisted's asyncio reactor. A "before shutdown" trigger (Twisted waits
for the Deferred it returns) closes every live connection through its consumer, which writes the
usage record. It also mends daphne 4.2.3's own shutdown trigger, which raises ``KeyError:
'application_instance'`` when a finished HTTP keep-alive connection is still open, and then lets the
process exit with the application tasks abandoned (seen here as a segfault during garbage
collection, with the usage of open connections lost).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pprint
import weakref
from typing import Any, Protocol

from django.conf import settings

from realtime_site.gateway.daphne_bodies import refuse_bodies_over_the_cap
from realtime_site.protocol import close_reason

__all__ = ["close_with_code", "install", "register"]

log = logging.getLogger("realtime_site.gateway")


class Closable(Protocol):
    async def shutdown(self) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False
CLOSE_FLUSH_SECONDS = 0.2


def register(consumer: Closable) -> None:
    _live.add(consumer)


async def close_all() -> None:
    consumers = list(_live)
    if consumers:
        log.info("shutting down: closing %d connections", len(consumers))
    await asyncio.gather(*(c.shutdown() for c in consumers), return_exceptions=True)
    from django.conf import settings

    from realtime_site.usage.recorder import recorder

    await recorder.drain(timeout=settings.USAGE_DRAIN_TIMEOUT)  # bounded; logs what it could not write


def _kill_all_applications(server: Any) -> Any:
    """daphne.server.Server.kill_all_applications (its "before shutdown" trigger), mended: first every
    realtime connection is closed with 1001 and its usage written, while the reactor still runs to
    deliver the close frames; then the applications still running are cancelled, skipping
    connections whose application already ended."""
    from twisted.internet import defer

    waiter = defer.Deferred.fromFuture(asyncio.ensure_future(_close_then_cancel(server)))
    waiter.addErrback(lambda failure: log.error("shutdown: %s", failure.getErrorMessage()))
    return waiter


async def _close_then_cancel(server: Any) -> None:
    await close_all()
    await asyncio.sleep(CLOSE_FLUSH_SECONDS)  # lets the reactor write the close frames out
    pending = []
    for details in list(server.connections.values()):
        instance = details.get("application_instance")
        if instance is not None and not instance.done():
            instance.cancel()
            pending.append(instance)
    await asyncio.gather(*pending, return_exceptions=True)


def install() -> None:
    """Mend daphne (once per process): its shutdown trigger, the scope, protocol-error closes, the
    access log, autobahn's debug formatting, and request bodies over the frame cap."""
    global _installed
    if _installed:
        return
    _installed = True
    import daphne.server

    daphne.server.Server.kill_all_applications = _kill_all_applications
    _pass_protocol_in_scope(daphne.server.Server)
    _close_cleanly_on_protocol_errors()
    _answer_bad_requests_before_closing()
    _drop_unfinished_requests()
    _report_unclean_closes()
    _keep_query_strings_out_of_the_access_log()
    _format_autobahn_debug_lines_only_when_written()
    refuse_bodies_over_the_cap(settings.REALTIME_MAX_FRAME_BYTES)


def _keep_query_strings_out_of_the_access_log() -> None:
    """daphne's access log writes an HTTP request's path with its query string, where a client may put
    a token (``?fal_jwt_token=``): the path alone is written, as on its WebSocket lines."""
    from daphne.access import AccessLogGenerator

    original = AccessLogGenerator.__call__

    def log_without_query(self: Any, protocol: str, action: str, details: dict[str, Any]) -> None:
        path = details.get("path")
        if isinstance(path, str) and "?" in path:
            details = {**details, "path": path.partition("?")[0]}
        original(self, protocol, action, details)

    AccessLogGenerator.__call__ = log_without_query


class _Lazy:
    """``func(*args, **kwargs)`` as text, made when (and only if) a log line is written."""

    __slots__ = ("args", "func", "kwargs")

    def __init__(self, func: Any, *args: Any, **kwargs: Any) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __str__(self) -> str:
        return str(self.func(*self.args, **self.kwargs))


def _format_autobahn_debug_lines_only_when_written() -> None:
    """autobahn formats debug lines that are not written: it pretty-prints every new connection's
    settings (about 5 % of the gateway's time per connection) and styles the names and sizes in every
    chunk it reads or sends (about 3 % per frame). That text is now made only when it is written."""
    import autobahn.twisted.websocket as twisted_websocket
    import autobahn.util
    import autobahn.websocket.protocol as protocol

    for module in (protocol, twisted_websocket):
        for name in ("pformat", "hl", "hltype", "hlval"):
            original = getattr(autobahn.util, name, None) if name != "pformat" else pprint.pformat
            if hasattr(module, name) and original is not None:
                setattr(module, name, functools.partial(_Lazy, original))
    protocol.Timings.__str__ = lambda self: pprint.pformat(self._timings)  # the one caller that wants a str


def close_with_code(scope: dict[str, Any], code: int, reason: str) -> bool:
    """Close with ``code`` and ``reason`` in the close frame. ASGI's websocket.close cannot: daphne drops
    the reason, and autobahn's application API takes only 1000 and 3000-4999 (not 1001, 1009 or 1011),
    so the frame is sent through the protocol itself. False when there is no open protocol."""
    from realtime_site.gateway.backpressure import SCOPE_KEY

    protocol = scope.get(SCOPE_KEY)
    if protocol is None or getattr(protocol, "state", None) != getattr(protocol, "STATE_OPEN", object()):
        return False
    try:
        protocol.sendCloseFrame(code=code, reasonUtf8=close_reason(reason).encode(), isReply=False)
    except Exception:  # the connection is going anyway
        return False
    return True


def _pass_protocol_in_scope(server_class: Any) -> None:
    """Put daphne's WebSocket protocol in the scope, for the consumer's flow control (backpressure)."""
    from realtime_site.gateway.backpressure import SCOPE_KEY

    original = server_class.create_application

    def create_application(self: Any, protocol: Any, scope: dict[str, Any]) -> Any:
        if scope.get("type") == "websocket":
            scope[SCOPE_KEY] = protocol
        return original(self, protocol, scope)

    server_class.create_application = create_application


def _close_cleanly_on_protocol_errors() -> None:
    """autobahn drops the TCP connection on a protocol error (invalid UTF-8 text, a bad frame) unless
    told otherwise: send the close frame (1007, 1002, ...) first, so the client learns why."""
    from daphne.ws_protocol import WebSocketFactory

    original = WebSocketFactory.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # Close frames instead of drops; and 5 s, not 1, for the client's close reply: a busy client
        # that answers late would otherwise get a reset that discards the error and close it had yet
        # to read.
        self.setProtocolOptions(failByDrop=False, closeHandshakeTimeout=5)

    WebSocketFactory.__init__ = __init__


LINGER_SECONDS = 2.0  # how long a refused request's remaining bytes are read and dropped


def _answer_bad_requests_before_closing() -> None:
    """Twisted answers a request it cannot parse (headers over 16 KiB in all, a malformed request
    line) with 400 and closes at once, and a line over 16 KiB gets no answer at all; the client's unread bytes then make
    the kernel reset the connection, and the 400 is lost. Close gently instead: answer, stop
    sending, read and drop what still comes for a moment, then close."""
    from twisted.internet import reactor
    from twisted.web.http import HTTPChannel

    def respond_and_linger(self: Any) -> None:
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.paused = True  # stops LineReceiver's loop over the lines already buffered
        self.dataReceived = lambda data: None  # and what comes later is never parsed
        try:
            self.transport.loseWriteConnection()
        except (AttributeError, NotImplementedError):  # no half-close (TLS): close as Twisted did
            self.loseConnection()
            return
        reactor.callLater(LINGER_SECONDS, self.transport.abortConnection)

    HTTPChannel._respondToBadRequestAndDisconnect = respond_and_linger
    HTTPChannel.lineLengthExceeded = lambda self, line: respond_and_linger(self)  # one line over 16 KiB


REQUEST_HEADER_TIMEOUT = 10.0  # seconds an HTTP connection may sit idle or with its headers unfinished


def _drop_unfinished_requests() -> None:
    """Twisted keeps a connection whose request headers never finish (slowloris) for 60 s; 10 s is
    plenty for a real client. The timer pauses while a request is handled, so upgraded WebSockets
    and long responses are not affected; only idle or unfinished requests are."""
    from daphne.http_protocol import HTTPFactory

    original = HTTPFactory.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.timeOut = REQUEST_HEADER_TIMEOUT

    HTTPFactory.__init__ = __init__


def _report_unclean_closes() -> None:
    """A connection that ended without a closing handshake (the client vanished) is 1006 to the
    application, whatever code autobahn had noted last."""
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.onClose

    def onClose(self: Any, wasClean: bool, code: int | None, reason: str | None) -> None:
        original(self, wasClean, code if wasClean else 1006, reason)

    WebSocketProtocol.onClose = onClose
