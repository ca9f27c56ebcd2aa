"""Results for a client that reads slowly: bounded, newest kept, a stalled reader closed.

daphne writes what the consumer sends into Twisted's transport buffer, which has no bound: a
client that never reads its results would make the gateway hold every one of them. Twisted's own
flow control tells when that buffer is over its mark: a push producer registered on the
connection's transport is paused and resumed. While the client is paused, ``ResultOutbox`` keeps at
most ``capacity`` results (the newest; older ones are dropped and counted: latest wins, as in the
runner's buffer) and a few meta messages, and sends them when the client catches up. A client that
stays paused for ``stall_limit`` seconds gets ``on_stall``.

The transport comes from the scope (``lifecycle`` puts daphne's protocol there); without it (another
server, or a test communicator) everything is sent at once, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from zope.interface import implementer

try:
    from twisted.internet.interfaces import IPushProducer
except ImportError:  # pragma: no cover - daphne always brings Twisted
    IPushProducer = None

__all__ = ["SCOPE_KEY", "ResultOutbox"]

log = logging.getLogger("realtime_site.gateway")

SCOPE_KEY = "realtime.daphne_protocol"
META_CAPACITY = 16  # error and meta messages kept for a paused client

Send = Callable[[bytes | str], Awaitable[None]]


class _Producer:
    """Twisted calls these on the event loop's thread (daphne runs Twisted on asyncio)."""

    def __init__(self, outbox: ResultOutbox) -> None:
        self.outbox = outbox

    def pauseProducing(self) -> None:
        self.outbox._pause()

    def resumeProducing(self) -> None:
        self.outbox._resume()

    def stopProducing(self) -> None:
        self.outbox._resume()


if IPushProducer is not None:
    _Producer = implementer(IPushProducer)(_Producer)


class ResultOutbox:
    def __init__(
        self,
        scope: dict[str, Any],
        send: Send,
        *,
        capacity: int,
        stall_limit: float,
        on_drop: Callable[[], None],
        on_stall: Callable[[], Awaitable[None]],
    ) -> None:
        self._send = send
        self._on_drop, self._on_stall = on_drop, on_stall
        self.stall_limit = stall_limit
        self.paused = False
        self.capacity = max(1, capacity)
        self.queue: collections.deque[tuple[bytes | str, bool]] = collections.deque()  # (message, is a result)
        self._results = 0
        self._flusher: asyncio.Task[None] | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._transport = self._register(scope.get(SCOPE_KEY))

    def _register(self, protocol: Any) -> Any:
        """Register on the TCP transport; after daphne's upgrade from HTTP, Twisted's HTTPChannel is
        already the transport's producer and forwards pause and resume to a producer of its own."""
        transport = getattr(protocol, "transport", None)
        for consumer in (transport, getattr(transport, "producer", None)):
            if consumer is None or not hasattr(consumer, "registerProducer"):
                continue
            try:
                consumer.registerProducer(_Producer(self), True)
            except RuntimeError:  # a producer is there already: try the next
                continue
            return consumer
        log.debug("no transport to register with; results are not flow-controlled")
        return None

    @property
    def held(self) -> int:
        return len(self.queue)

    async def result(self, message: bytes | str) -> None:
        """Send a result now, or hold it (the newest ``capacity`` win) while the client is not reading."""
        if not self.paused and not self.queue:
            await self._send(message)
            return
        if self._results >= self.capacity:
            self._drop_oldest(result=True)
            self._on_drop()
        self.queue.append((message, True))
        self._results += 1

    async def preview(self, message: bytes | str) -> None:
        """Send an intermediate image now; a client that is not reading goes without it (its result
        follows), and nothing is counted as dropped."""
        if not self.paused and not self.queue:
            await self._send(message)

    async def message(self, message: bytes | str) -> None:
        """Send an error or meta message now, or hold the newest ``META_CAPACITY`` of them."""
        if not self.paused and not self.queue:
            await self._send(message)
            return
        if len(self.queue) - self._results >= META_CAPACITY:
            self._drop_oldest(result=False)
        self.queue.append((message, False))

    def _drop_oldest(self, *, result: bool) -> None:
        for index, (_, is_result) in enumerate(self.queue):
            if is_result is result:
                del self.queue[index]
                self._results -= result
                return

    def close(self) -> None:
        self.queue.clear()
        self._results = 0
        self._cancel_stall()
        if self._flusher is not None:
            self._flusher.cancel()
        if self._transport is not None:
            with contextlib.suppress(Exception):  # the connection is gone already
                self._transport.unregisterProducer()
            self._transport = None

    # -- flow control -------------------------------------------------------------------------

    def _pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        loop = asyncio.get_running_loop()
        self._stall_timer = loop.call_later(self.stall_limit, self._stalled)

    def _resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self._cancel_stall()
        if self.queue and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _cancel_stall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stalled(self) -> None:
        self._stall_timer = None
        if self.paused:
            asyncio.get_running_loop().create_task(self._on_stall())

    async def _flush(self) -> None:
        """Send what was held, in order, until the client is paused again."""
        while not self.paused and self.queue:
            message, is_result = self.queue.popleft()
            self._results -= is_result
            try:
                await self._send(message)
            except Exception:  # the client is gone: the consumer's disconnect cleans up
                self.queue.clear()
                self._results = 0
                return
