"""Runner sessions kept open for the HTTP endpoints, so a request costs no WebSocket handshake.

A request leases a session for one input and its answers, then gives it back. An idle session is
watched: anything it says while idle (the runner's idle ``TIMEOUT``, a close) or an age over
``max_idle`` seconds retires it, so a lease never starts on a session that is about to end. A
session whose request was abandoned mid-way is closed, not reused: closing it is what tells the
runner to drop the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from realtime_site.gateway.runners import RunnerPool, RunnerState

__all__ = ["Lease", "UpstreamSessions"]

log = logging.getLogger("realtime_site.gateway")


@dataclass(eq=False)
class Lease:
    ws: ClientConnection
    runner: RunnerState
    target: str  # app/path?query, what the session was opened with
    reused: bool = False
    idle_since: float = 0.0
    retired: bool = False
    watcher: asyncio.Task[object] | None = field(default=None, repr=False)


class UpstreamSessions:
    def __init__(self, pool: RunnerPool, *, per_target: int = 8, max_idle: float = 60.0):
        self.pool = pool
        self.per_target = per_target  # idle sessions kept per runner and target
        self.max_idle = max_idle
        self._idle: dict[tuple[str, str], list[Lease]] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    async def lease(self, app_id: str, target: str) -> Lease:
        """An open session at ``target``: an idle one on a healthy runner, else a new one on the
        least-loaded runner (``RunnerPool.open_session``; raises ``NoRunner``)."""
        lease = await self.take_idle(target)
        if lease is not None:
            lease.reused = True
            return lease
        ws, runner = await self.pool.open_session(app_id, target)
        return Lease(ws, runner, target)

    async def take_idle(self, target: str, *, avoid: str | None = None) -> Lease | None:
        """An idle session at ``target`` that is still good, on a runner other than ``avoid`` (None
        when there is none: nothing is opened)."""
        now = time.monotonic()
        for key in [k for k in self._idle if k[1] == target and k[0] != avoid]:
            idle = self._idle[key]
            while idle:
                lease = idle.pop()  # the most recently used: the warmest
                if await self._still_good(lease, now):
                    return lease
                await self._retire(lease)
        return None

    def give_back(self, lease: Lease) -> None:
        """The request is done and the session answered everything it was sent: keep it."""
        key = (lease.runner.url, lease.target)
        idle = self._idle.setdefault(key, [])
        if lease.ws.state is not State.OPEN or not lease.runner.healthy or len(idle) >= self.per_target:
            self._retire_soon(lease)
            return
        lease.idle_since = time.monotonic()
        lease.watcher = asyncio.get_running_loop().create_task(lease.ws.recv())
        lease.watcher.add_done_callback(lambda _: self._drop_if_idle(key, lease))
        idle.append(lease)

    async def discard(self, lease: Lease) -> None:
        """The request ended early (the client left, an error): close the session, never reuse it."""
        await self._retire(lease)

    async def close_all(self) -> None:
        leases = [lease for idle in self._idle.values() for lease in idle]
        self._idle.clear()
        await asyncio.gather(*(self._retire(lease) for lease in leases), *self._retiring, return_exceptions=True)

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def _still_good(self, lease: Lease, now: float) -> bool:
        watcher = lease.watcher
        lease.watcher = None
        if watcher is not None:
            if watcher.done():  # it said something while idle (TIMEOUT, or it closed)
                return False
            watcher.cancel()  # cancelling recv() loses nothing
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        return lease.ws.state is State.OPEN and lease.runner.healthy and now - lease.idle_since < self.max_idle

    def _drop_if_idle(self, key: tuple[str, str], lease: Lease) -> None:
        """The idle session spoke or closed: retire it now (a leased one is handled by its lease)."""
        idle = self._idle.get(key, [])
        if lease in idle and lease.watcher is not None and not lease.watcher.cancelled():
            idle.remove(lease)
            self._retire_soon(lease)

    def _retire_soon(self, lease: Lease) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(lease))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, lease: Lease) -> None:
        if lease.retired:
            return
        lease.retired = True
        if lease.watcher is not None:
            lease.watcher.cancel()
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lease.ws.close(), 2)
        finally:
            lease.runner.local_sessions -= 1  # counted by open_session
