"""Every revocation, to every gateway process: what its ``admission_cache`` must forget.

Where the gateway hears ``credentials_revoked`` (``actions.close_revoked``), the revoked users, keys
and tokens go to the channel-layer group ``GROUP`` as well as to their connections' groups. Each
process follows the group with a channel of its own (started by its first realtime connection) and
forgets their cache entries. The cache serves only while its process follows the group: from the
join on, until the layer fails; it is then cleared, and serves again once the group is rejoined.
The group is joined again every ``REJOIN_SECONDS`` (a layer forgets a member after a day).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.layers import get_channel_layer

from realtime_site.gateway.admission_cache import AdmissionCache, admission_cache

__all__ = ["FORGET", "GROUP", "AdmissionFeed", "admission_feed", "forget_message"]

log = logging.getLogger("realtime_site.gateway")
GROUP = "realtime.admissions"
FORGET = "admissions.forget"
REJOIN_SECONDS = 3600.0
MAX_BACKOFF = 10.0


def forget_message(users: list[int], keys: list[int], tokens: list[str]) -> dict[str, Any]:
    return {"type": FORGET, "users": users, "keys": keys, "tokens": tokens}


class AdmissionFeed:
    def __init__(self, cache: AdmissionCache, layer: Any = None) -> None:
        self.cache = cache
        self.layer = layer  # None: the project's default channel layer
        self._task: asyncio.Task[None] | None = None

    def follow(self) -> None:
        """Follow the group from now on (idempotent; on the event loop)."""
        loop = asyncio.get_running_loop()
        if self.cache.seconds <= 0:
            return
        if self._task is not None and not self._task.done() and self._task.get_loop() is loop:
            return
        self.cache.listening = False  # a task of another loop (one that ended) hears nothing
        self._task = loop.create_task(self._follow())

    async def stop(self) -> None:
        self.cache.listening = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _follow(self) -> None:
        layer = self.layer or get_channel_layer()
        if layer is None:
            return  # nothing would reach this process: the cache never serves
        delay = 0.5
        while True:
            try:
                channel = await layer.new_channel()
                await layer.group_add(GROUP, channel)
                self.cache.clear()  # what was stored before may have missed a revocation
                self.cache.listening = True
                delay = 0.5
                await self._while_joined(layer, channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer is away: serve nothing until the group is rejoined
                if self.cache.listening:
                    log.warning("admission cache off: channel layer unavailable (%s)", type(exc).__name__)
                self.cache.listening = False
                self.cache.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
            finally:
                self.cache.listening = False

    async def _while_joined(self, layer: Any, channel: str) -> None:
        """Receive and rejoin until either fails (its error is raised)."""
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._receive(layer, channel)), loop.create_task(self._rejoin(layer, channel))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        for task in done:
            task.result()

    async def _receive(self, layer: Any, channel: str) -> None:
        while True:
            self._apply(await layer.receive(channel))

    async def _rejoin(self, layer: Any, channel: str) -> None:
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            await layer.group_add(GROUP, channel)

    def _apply(self, message: dict[str, Any]) -> None:
        if message.get("type") != FORGET:
            return
        self.cache.forget(
            users=[u for u in message.get("users", []) if isinstance(u, int)],
            keys=[k for k in message.get("keys", []) if isinstance(k, int)],
            tokens=[t for t in message.get("tokens", []) if isinstance(t, str)],
        )


_shared: AdmissionFeed | None = None


def admission_feed() -> AdmissionFeed:
    global _shared
    cache = admission_cache()
    if _shared is None or _shared.cache is not cache:
        _shared = AdmissionFeed(cache)
    return _shared
