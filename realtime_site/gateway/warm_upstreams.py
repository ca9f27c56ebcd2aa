"""Runner sessions opened ahead for realtime connections, so a new one need not wait for its upstream
handshake (about 1.5 ms here, most of what a reconnect pays at the gateway).

Once a realtime connection has its first answer, one more session at the same target (app, path and
the options in its query) is opened in the background (``open_ahead``) and kept idle (``UpstreamSessions``:
watched, so one the runner times out or closes is never handed out). The next connection to that
target takes it unused: a realtime session always starts fresh on the runner. At most ``limit`` are
kept by a process, one per runner and target; they count in the runner's load like any session.
"""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.asyncio.client import ClientConnection

from realtime_site.gateway.runners import NoRunner, RunnerPool, RunnerState, get_pool
from realtime_site.gateway.upstreams import Lease, UpstreamSessions
from realtime_site.usage import metrics

__all__ = ["WarmUpstreams", "warm_upstreams"]

log = logging.getLogger("realtime_site.gateway")


class WarmUpstreams:
    def __init__(self, pool: RunnerPool, *, limit: int, max_idle: float) -> None:
        self.pool = pool
        self.limit = limit
        self.kept = UpstreamSessions(pool, per_target=1, max_idle=max_idle)
        self._opening: dict[str, asyncio.Task[None]] = {}  # target -> the session being opened ahead

    async def open(self, app_id: str, target: str, *, avoid: str | None = None) -> tuple[ClientConnection, RunnerState]:
        """A fresh session at ``target``: one opened ahead if there is one, else a new one
        (``RunnerPool.open_session``; raises ``NoRunner``)."""
        lease = await self.kept.take_idle(target, avoid=avoid) if self.limit > 0 else None
        if lease is not None and not self._young_enough(lease, app_id):
            await self.kept.discard(lease)
            lease = None
        if lease is not None:
            metrics.UPSTREAM_OPENS.labels("warm").inc()
            return lease.ws, lease.runner
        metrics.UPSTREAM_OPENS.labels("cold").inc()
        return await self.pool.open_session(app_id, target, avoid=avoid)

    @staticmethod
    def _young_enough(lease: Lease, app_id: str) -> bool:
        """Idle for under half the app's session timeout (as its runner reports it): the runner will
        not time it out under the client's first input."""
        timeout = lease.runner.apps.get(app_id, {}).get("session_timeout")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            return True
        return time.monotonic() - lease.idle_since < timeout / 2

    def open_ahead(self, app_id: str, target: str) -> None:
        """Open the next session at ``target`` in the background (one at a time per target), unless one
        is kept for it already or ``limit`` are kept."""
        if self.limit <= 0 or target in self._opening or self.kept.idle_count() >= self.limit:
            return
        task = asyncio.get_running_loop().create_task(self._open_one(app_id, target))
        self._opening[target] = task
        task.add_done_callback(lambda _: self._opening.pop(target, None))

    async def _open_one(self, app_id: str, target: str) -> None:
        try:
            ws, runner = await self.pool.open_session(app_id, target)
        except NoRunner as exc:  # the connection that asked has its own session, or its own error
            log.debug("no session opened ahead for %s: %s", app_id, exc.reason)
            return
        self.kept.give_back(Lease(ws, runner, target))

    async def close_all(self) -> None:
        for task in list(self._opening.values()):
            task.cancel()
        await self.kept.close_all()


_shared: WarmUpstreams | None = None


def warm_upstreams() -> WarmUpstreams:
    """This process's sessions opened ahead."""
    global _shared
    if _shared is None or _shared.pool is not get_pool():
        from django.conf import settings

        _shared = WarmUpstreams(
            get_pool(), limit=settings.REALTIME_WARM_UPSTREAMS, max_idle=settings.REALTIME_UPSTREAM_IDLE_SECONDS
        )
    return _shared
