"""The room drivers of this process: one per room this process drives, started when a member of the
room connects here and the process wins the room's lease, and tried again every ``RENEW_SECONDS``
while members are here (so a room whose driver's process died is taken over)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

from channels.layers import get_channel_layer
from django.conf import settings

from realtime_site.gateway import lifecycle
from realtime_site.rooms.driver import RoomDriver
from realtime_site.rooms.election import RENEW_SECONDS, Election

__all__ = ["connected", "disconnected", "driver_of", "stop_all"]

log = logging.getLogger("realtime_site.rooms")

_drivers: dict[str, RoomDriver] = {}
_tasks: dict[str, asyncio.Task[None]] = {}
_here: Counter[str] = Counter()  # this process's connections, per room
_election: Election | None = None
_watch: asyncio.Task[None] | None = None


def _elect() -> Election:
    global _election
    if _election is None:
        _election = Election(settings.REDIS_URL)
    return _election


def driver_of(slug: str) -> RoomDriver | None:
    return _drivers.get(slug)


async def connected(slug: str) -> None:
    global _watch
    _here[slug] += 1
    await _ensure(slug)
    if _watch is None or _watch.done():
        _watch = asyncio.get_running_loop().create_task(_take_over())


def disconnected(slug: str) -> None:
    _here[slug] -= 1
    if _here[slug] <= 0:
        del _here[slug]


async def _ensure(slug: str) -> None:
    if slug in _drivers or not await _elect().acquire(slug):
        return
    if slug in _drivers:  # started by another connection meanwhile
        return
    driver = _drivers[slug] = RoomDriver(slug, get_channel_layer(), _elect())
    task = _tasks[slug] = asyncio.get_running_loop().create_task(driver.run())
    task.add_done_callback(lambda done: _ended(slug, driver, done))


def _ended(slug: str, driver: RoomDriver, task: asyncio.Task[None]) -> None:
    if _drivers.get(slug) is driver:
        del _drivers[slug]
        _tasks.pop(slug, None)
    if not task.cancelled() and task.exception() is not None:
        log.error("room %s: the driver failed", slug, exc_info=task.exception())


async def _take_over() -> None:
    while _here:
        await asyncio.sleep(RENEW_SECONDS)
        for slug in list(_here):
            with contextlib.suppress(Exception):
                await _ensure(slug)


async def stop_all(reason: str = "the server is stopping") -> None:
    for driver in list(_drivers.values()):
        driver.stop(reason)
    await asyncio.gather(*_tasks.values(), return_exceptions=True)


class _Shutdown:
    """At daphne's shutdown (``lifecycle``), every driver here saves its room and lets its lease go."""

    async def shutdown(self) -> None:
        await stop_all()


_shutdown = _Shutdown()
lifecycle.register(_shutdown)
