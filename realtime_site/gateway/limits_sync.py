"""Sharing the per-user limits' counts between gateway processes through Redis (``limits``'s second
half; its docstring says what is shared and how). ``SharedCounts`` is ``UserLimiter``'s base: it
holds the sync task, and the limiter's own state is what it pushes and reads."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime_site.gateway.limits_state import WINDOW, UserState

__all__ = ["CONNECTION_TTL", "SYNC_INTERVAL", "SharedCounts"]

log = logging.getLogger("realtime_site.gateway.limits")

SYNC_INTERVAL = 0.25  # seconds between rounds with Redis
SYNC_TIMEOUT = 2.0  # one round gives up after this
MAX_BACKOFF = 5.0  # seconds between retries while Redis is away
CONNECTION_TTL = 10.0  # a process's published connection count lapses unless refreshed
DAY_TTL = 2 * 86400


@dataclass
class _Round:
    """One user's part of a pipeline: what was taken from the state, and how many replies to read."""

    user_id: int
    state: UserState
    second: int
    pushed: dict[int, int]
    day: date | None
    day_pushed: int
    read: bool  # read the others' counts
    publish: int | None  # the connection count written (0: the field deleted), None: untouched
    stale: list[bytes]
    replies: int = 0


class SharedCounts:
    """The Redis half of ``UserLimiter``: the attributes below are set by its ``__init__``."""

    _users: dict[int, UserState]
    redis_url: str | None
    prefix: str
    interval: float
    connection_ttl: float
    background: bool
    process: bytes
    shared_up: bool | None
    _fresh: set[int]
    _in_flight: set[int]
    _task: asyncio.Task[None] | None
    _wake: asyncio.Event | None
    _redis: aioredis.Redis | None
    _redis_loop: asyncio.AbstractEventLoop | None

    def clock(self) -> float:  # replaced by the limiter's clock
        raise NotImplementedError

    async def start(self) -> None:
        """Start the sync task on this loop (otherwise started by the first connect)."""
        self._ensure_task()

    def _ensure_task(self) -> None:
        if not self.redis_url or not self.background:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="limits-sync")
        if self._fresh:
            assert self._wake is not None
            self._wake.set()

    async def close(self) -> None:
        """Stop the sync task and close the Redis connections (tests, shutdown)."""
        task, self._task = self._task, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._redis = self._redis, None
        if client is not None and self._redis_loop is asyncio.get_running_loop():
            await client.aclose()

    def _client(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._redis is None or self._redis_loop is not loop:
            assert self.redis_url
            self._redis = aioredis.Redis.from_url(
                self.redis_url,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 0),  # the sync loop retries, with its own backoff
            )
            self._redis_loop = loop
        return self._redis

    async def _run(self) -> None:
        assert self._wake is not None
        wake, loop = self._wake, asyncio.get_running_loop()
        delay, due = self.interval, loop.time()
        while True:
            timeout = due - loop.time()
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)
            wake.clear()
            full = loop.time() >= due
            if not full and (self.shared_up is False or not self._fresh):
                continue  # away: new users wait for the next retry
            try:
                ok = await self.sync(None if full else list(self._fresh))
            except Exception:  # never let the task die: the limits fall back to local counts
                log.exception("shared limits: sync round failed")
                ok = False
            if not ok:
                delay = min(max(delay * 2, 0.5), MAX_BACKOFF)
                due = loop.time() + delay
            elif full:
                delay = self.interval
                due = loop.time() + delay

    async def sync(self, user_ids: Iterable[int] | None = None) -> bool:
        """One round with Redis for these users (default: every user connected here or with something
        to push); returns whether Redis answered. Not to be run beside the background task."""
        if not self.redis_url:
            return False
        now = self.clock()
        second = int(now)
        fresh = self._fresh if user_ids is None else self._fresh.intersection(user_ids)
        self._fresh = self._fresh - fresh
        ttl = self.connection_ttl
        rounds: list[_Round] = []
        pipe = self._client().pipeline(transaction=False)
        for user_id in list(self._users) if user_ids is None else user_ids:
            state = self._users.get(user_id)
            if state is None:
                continue
            read = user_id in fresh or state.followed(now, ttl)
            if read or state.pending(now, ttl):
                rounds.append(self._queue(pipe, user_id, state, now, second, read=read))
        if not rounds:
            return True
        self._in_flight = {r.user_id for r in rounds}
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                replies = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            for r in rounds:
                self._restore(r)
            self._went_away(exc)
            return False
        finally:
            self._in_flight = set()
        if self.shared_up is False:
            log.warning("shared limits: Redis is back; limits are shared again")
        self.shared_up = True
        at = 0
        for r in rounds:
            self._apply(r, replies[at : at + r.replies], now)
            at += r.replies
        return True

    def _went_away(self, exc: BaseException) -> None:
        if self.shared_up is not False:
            log.warning(
                "shared limits: Redis unavailable (%s: %s); enforcing this process's counts alone, retrying",
                type(exc).__name__,
                exc,
            )
        self.shared_up = False

    def _key(self, kind: str, user_id: int, suffix: object = None) -> str:
        return f"{self.prefix}:{kind}:{user_id}" + ("" if suffix is None else f":{suffix}")

    def _queue(self, pipe: Any, user_id: int, state: UserState, now: float, second: int, *, read: bool) -> _Round:
        """Queue one user's commands, taking what is to be pushed out of the state."""
        cutoff = second - WINDOW
        pushed = {s: n for s, n in state.unsynced.items() if s > cutoff}
        state.unsynced = {}
        day_pushed, state.day_unsynced = state.day_unsynced, 0
        r = _Round(user_id, state, second, pushed, state.day, day_pushed, read, None, [])
        for s, n in pushed.items():
            key = self._key("w", user_id, s)
            pipe.incrby(key, n)
            pipe.expire(key, WINDOW + 5)
            r.replies += 2
        if r.read:
            pipe.mget([self._key("w", user_id, s) for s in range(cutoff + 1, second + 1)])
            r.replies += 1
        conns = self._key("c", user_id)
        if state.connections > 0 and (
            state.connections != state.published or now - state.published_at >= self.connection_ttl / 3
        ):
            pipe.hset(conns, self.process, f"{state.connections} {now + self.connection_ttl:.3f}")
            pipe.expire(conns, math.ceil(self.connection_ttl))
            r.publish = state.connections
            r.replies += 2
        elif state.connections == 0 and state.published_live(now, self.connection_ttl):
            pipe.hdel(conns, self.process)
            r.publish = 0
            r.replies += 1
        if state.stale_fields:
            r.stale, state.stale_fields = state.stale_fields, []
            pipe.hdel(conns, *r.stale)
            r.replies += 1
        if r.read:
            pipe.hgetall(conns)
            r.replies += 1
        if state.quota and state.day is not None and (r.read or day_pushed):
            key = self._key("d", user_id, state.day.isoformat())
            pipe.set(key, state.frames_today - day_pushed, nx=True, ex=DAY_TTL)  # seeds a missing key
            pipe.incrby(key, day_pushed)
            r.replies += 2
        return r

    def _restore(self, r: _Round) -> None:
        """The round failed: keep its counts to push them next time (never lose a frame)."""
        state = r.state
        for s, n in r.pushed.items():
            state.unsynced[s] = state.unsynced.get(s, 0) + n
        if state.day == r.day:
            state.day_unsynced += r.day_pushed
        state.stale_fields.extend(r.stale)

    def _apply(self, r: _Round, replies: list[Any], now: float) -> None:
        state = r.state
        at = 2 * len(r.pushed)
        if r.read:
            mine = {s: n for s, n in state.buckets}
            others: collections.deque[list[int]] = collections.deque()
            for s, total in zip(range(r.second - WINDOW + 1, r.second + 1), replies[at], strict=True):
                # The total counts this process's pushed frames: all it counted less what is still unpushed.
                n = int(total or 0) - (mine.get(s, 0) - state.unsynced.get(s, 0))
                if n > 0:
                    others.append([s, n])
            state.others, state.others_in_window = others, sum(n for _, n in others)
            at += 1
        if r.publish is not None:
            state.published, state.published_at = r.publish, now
            at += 2 if r.publish else 1
        if r.stale:
            at += 1
        if r.read:
            state.others_connections = self._others_connections(state, replies[at], now)
            state.others_read_at = now
            at += 1
        if at < r.replies and state.day == r.day:  # the day's total, every process
            state.frames_today = max(state.frames_today, int(replies[at + 1]) + state.day_unsynced)

    def _others_connections(self, state: UserState, fields: dict[bytes, bytes], now: float) -> int:
        total = 0
        for name, value in fields.items():
            if name == self.process:
                continue
            try:
                count, deadline = value.split()
                live = float(deadline) > now
            except ValueError:
                count, live = b"0", False
            if live:
                total += int(count)
            else:
                state.stale_fields.append(name)
        return total
