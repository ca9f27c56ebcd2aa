"""Which gateway process drives a room: exactly one at a time (docs/rooms.md, "One driver per room").

Without ``REDIS_URL`` there is one process, and it drives every room that has members. With it, a
room is driven by the process holding its lease, the Redis key ``{prefix}:{slug}`` set with NX and
a time to live of ``LEASE_SECONDS``, which the holder renews every ``RENEW_SECONDS``. A holder that
dies stops renewing; its lease lapses, and a process with members in the room takes it over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["LEASE_SECONDS", "RENEW_SECONDS", "Election"]

log = logging.getLogger("realtime_site.rooms")

LEASE_SECONDS = 6.0
RENEW_SECONDS = 2.0
# Renew, or give back, only a lease this process holds (another may have taken a lapsed one).
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Election:
    def __init__(self, redis_url: str | None, prefix: str = "realtime:rooms:driver"):
        self.redis_url = redis_url
        self.prefix = prefix
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._redis: aioredis.Redis | None = None

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            assert self.redis_url
            self._redis = aioredis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        return self._redis

    async def acquire(self, slug: str) -> bool:
        """Whether this process now drives ``slug`` (it may already have)."""
        if not self.redis_url:
            return True
        try:
            client = self._client()
            key = f"{self.prefix}:{slug}"
            if await client.set(key, self.me, nx=True, px=int(LEASE_SECONDS * 1000)):
                return True
            return await client.get(key) == self.me.encode()
        except RedisError as exc:
            log.warning("room %s: no lease, Redis is away (%s)", slug, type(exc).__name__)
            return False

    async def renew(self, slug: str) -> bool:
        """Whether this process still drives ``slug``; False when the lease was lost (or Redis is away)."""
        if not self.redis_url:
            return True
        try:
            key = f"{self.prefix}:{slug}"
            return bool(await self._client().eval(_RENEW, 1, key, self.me, int(LEASE_SECONDS * 1000)))
        except RedisError as exc:
            log.warning("room %s: lease not renewed, Redis is away (%s)", slug, type(exc).__name__)
            return False

    async def release(self, slug: str) -> None:
        if not self.redis_url:
            return
        with contextlib.suppress(RedisError):  # else it lapses on its own
            await self._client().eval(_RELEASE, 1, f"{self.prefix}:{slug}", self.me)
