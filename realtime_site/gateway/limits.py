"""Per-user limits at the gateway: concurrent connections, frames per minute, a daily frame quota.

State lives in this process, on its event loop (no locks). A user's state outlives their connections:
the minute's window and the day's count survive a reconnect. States with no connection, an empty
window and nothing left to push are pruned lazily at connect: once idle for WINDOW seconds, or, when
the table passes ``max_users``, the idle ones oldest first, so a flood of users cannot grow memory
without bound.

With settings.REDIS_URL the limits hold across gateway processes. A background task (started at the
first connect; each connect wakes it for that user) talks to Redis every SYNC_INTERVAL in one
pipeline: it pushes this process's new frames with INCRBY into one-second keys
``{prefix}:w:{user}:{second}`` (expiring after the window) and the per-day key
``{prefix}:d:{user}:{date}`` (seeded with the database's figure, expiring after two days), publishes
this process's connection count in the hash ``{prefix}:c:{user}`` (one field per process carrying a
deadline, so the connections of a crashed process lapse after ``connection_ttl``), and reads back what
all processes counted. ``frame()`` and ``connect()`` decide from this process's counts plus the last
known counts of the others: the hot path never waits for Redis.

Overshoot: a user spread over several processes can exceed a limit by what the other processes admit
in one sync interval (their frames are seen here at most an interval plus a round trip late). A
process that has not followed a user lately (connected, or seen within ``connection_ttl``) knows
nothing of the others: the frames and connections it admits before its first read of that user (one
round trip after the connect) are decided on its own counts. Redis away: each process enforces its
own counts (logged once), retries with backoff up to MAX_BACKOFF, and pushes what it counted meanwhile
when Redis is back (a round cut off mid-way may then count some frames twice: strict, never lost).
Cost per followed user and round: an MGET of the window's 60 keys, an HGETALL, two commands per new
second and two for the day.

Buckets are wall-clock seconds (``time.time``), shared by the processes: keep their clocks in sync.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django.db.models import Sum
from django.utils import timezone
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime_site.accounts.models import UserLimits
from realtime_site.protocol import ErrorCode

__all__ = ["EffectiveLimits", "UserLimiter", "limiter", "load_limits"]

log = logging.getLogger(__name__)

WINDOW = 60  # seconds, counted in one-second buckets
SYNC_INTERVAL = 0.25  # seconds between rounds with Redis
SYNC_TIMEOUT = 2.0  # one round gives up after this
MAX_BACKOFF = 5.0  # seconds between retries while Redis is away
CONNECTION_TTL = 10.0  # a process's published connection count lapses unless refreshed
DAY_TTL = 2 * 86400
SWEEP_EVERY = 10.0  # seconds between sweeps of idle states
MAX_USERS = 50_000  # past this many states, idle ones are pruned oldest first


@dataclass(frozen=True)
class EffectiveLimits:
    max_connections: int
    frames_per_minute: int
    daily_frame_quota: int | None
    frames_today: int  # recorded in the database when the connection opened


def load_limits(user_id: int) -> EffectiveLimits:
    """The user's limits and today's recorded frames (sync; two small reads)."""
    from realtime_site.usage.models import ConnectionRecord

    row = UserLimits.objects.filter(user_id=user_id).first()

    def pick(name: str, default: int | None) -> int | None:
        value = getattr(row, name, None) if row else None
        return default if value is None else value

    quota = pick("daily_frame_quota", settings.REALTIME_DAILY_FRAME_QUOTA)
    today = 0
    if quota is not None:
        start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
        today = (
            ConnectionRecord.objects.filter(user_id=user_id, started_at__gte=start).aggregate(n=Sum("frames_in"))["n"]
            or 0
        )
    return EffectiveLimits(
        max_connections=pick("max_connections", settings.REALTIME_MAX_CONNECTIONS),
        frames_per_minute=pick("frames_per_minute", settings.REALTIME_FRAMES_PER_MINUTE),
        daily_frame_quota=quota,
        frames_today=today,
    )


def _slide(buckets: collections.deque[list[int]], cutoff: int) -> int:
    """Drop buckets at or before ``cutoff``; returns how many frames left the window."""
    gone = 0
    while buckets and buckets[0][0] <= cutoff:
        gone += buckets.popleft()[1]
    return gone


@dataclass
class _UserState:
    connections: int = 0  # in this process
    # Frames of the last minute in one-second buckets: [second, count], oldest first (at most 60).
    buckets: collections.deque[list[int]] = field(default_factory=collections.deque)
    in_window: int = 0
    # The other processes' frames, as last read from Redis, in the same form.
    others: collections.deque[list[int]] = field(default_factory=collections.deque)
    others_in_window: int = 0
    others_connections: int = 0  # live connections of the other processes, as last read
    others_read_at: float = -math.inf
    day: date | None = None
    frames_today: int = 0  # best knowledge of the user's frames today, every process
    quota: bool = False  # the user has a daily quota: the day's count is shared
    last_seen: float = 0.0
    # Not yet pushed to Redis (shared mode only).
    unsynced: dict[int, int] = field(default_factory=dict)  # second -> frames
    day_unsynced: int = 0
    published: int = 0  # the connection count this process last published
    published_at: float = 0.0
    stale_fields: list[bytes] = field(default_factory=list)  # lapsed processes' fields to delete

    def slide(self, second: int) -> None:
        cutoff = second - WINDOW
        self.in_window -= _slide(self.buckets, cutoff)
        self.others_in_window -= _slide(self.others, cutoff)

    def roll_day(self, today: date, seed: int) -> None:
        """Start a new day's count at ``seed``, or raise today's to ``seed`` (the database's figure)."""
        if self.day != today:
            self.day, self.frames_today, self.day_unsynced = today, seed, 0
        elif seed > self.frames_today:
            self.frames_today = seed

    def published_live(self, now: float, ttl: float) -> bool:
        return self.published > 0 and now - self.published_at < ttl

    def followed(self, now: float, ttl: float) -> bool:
        """Connected here, or seen lately: keep reading the others' counts."""
        return self.connections > 0 or now - self.last_seen < ttl

    def pending(self, now: float, ttl: float) -> bool:
        """Something to tell Redis: counts to push, a published count to withdraw, fields to delete."""
        return bool(self.unsynced or self.day_unsynced or self.stale_fields or self.published_live(now, ttl))


@dataclass
class _Round:
    """One user's part of a pipeline: what was taken from the state, and how many replies to read."""

    user_id: int
    state: _UserState
    second: int
    pushed: dict[int, int]
    day: date | None
    day_pushed: int
    read: bool  # read the others' counts
    publish: int | None  # the connection count written (0: the field deleted), None: untouched
    stale: list[bytes]
    replies: int = 0


class UserLimiter:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = "realtime:limits",
        interval: float = SYNC_INTERVAL,
        connection_ttl: float = CONNECTION_TTL,
        max_users: int = MAX_USERS,
        background: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``redis_url`` None: this process only. ``background`` False: no sync task (call ``sync()``)."""
        self._users: dict[int, _UserState] = {}
        self.redis_url = redis_url
        self.prefix = prefix
        self.interval = interval
        self.connection_ttl = connection_ttl
        self.max_users = max_users
        self.background = background
        self.clock = clock
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}".encode()
        self.shared_up: bool | None = None  # None: Redis not tried yet
        self._last_sweep = clock()
        self._fresh: set[int] = set()  # connected since the last round: read them at once
        self._in_flight: set[int] = set()  # users of the round awaiting Redis: not to be pruned
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._redis: aioredis.Redis | None = None
        self._redis_loop: asyncio.AbstractEventLoop | None = None

    # -- the consumer's calls (on the event loop, never waiting) ---------------------------------

    def connect(self, user_id: int, limits: EffectiveLimits) -> str | None:
        """Take a connection slot; returns the reason when over the limit."""
        now = self.clock()
        self._maybe_sweep(now)
        state = self._users.get(user_id)
        if state is None:
            state = self._users[user_id] = _UserState()
        state.last_seen = now
        state.quota = limits.daily_frame_quota is not None
        state.roll_day(timezone.localdate(), limits.frames_today)
        others = state.others_connections if now - state.others_read_at < self.connection_ttl else 0
        if state.connections + others >= limits.max_connections:
            return f"at most {limits.max_connections} concurrent connections per user"
        state.connections += 1
        if self.redis_url:
            self._fresh.add(user_id)
            self._ensure_task()
        return None

    def disconnect(self, user_id: int) -> None:
        state = self._users.get(user_id)
        if state is None:
            return
        state.connections = max(0, state.connections - 1)
        state.last_seen = self.clock()

    def frame(self, user_id: int, limits: EffectiveLimits, now: float | None = None) -> tuple[ErrorCode, str] | None:
        """Count one frame; returns (code, reason) when it must be refused."""
        state = self._users.get(user_id)
        if state is None:  # only after a connect in practice; counted all the same
            state = self._users[user_id] = _UserState(day=timezone.localdate(), frames_today=limits.frames_today)
        now = self.clock() if now is None else now
        second = int(now)
        state.slide(second)
        if state.in_window + state.others_in_window >= limits.frames_per_minute:
            return ErrorCode.RATE_LIMITED, f"over {limits.frames_per_minute} frames per minute; slow down"
        quota = limits.daily_frame_quota
        if quota is not None:
            state.quota = True
            state.roll_day(timezone.localdate(), 0)
            if state.frames_today >= quota:
                return ErrorCode.QUOTA_EXCEEDED, f"the daily quota of {quota} frames is used up"
        buckets = state.buckets
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])
        state.in_window += 1
        state.frames_today += 1
        state.last_seen = now
        if self.redis_url:
            state.unsynced[second] = state.unsynced.get(second, 0) + 1
            if quota is not None:
                state.day_unsynced += 1
        return None

    # -- memory -----------------------------------------------------------------------------------

    def _maybe_sweep(self, now: float) -> None:
        since = now - self._last_sweep
        if since >= SWEEP_EVERY or (len(self._users) > self.max_users and since >= 1.0):
            self.prune(now)

    def prune(self, now: float | None = None) -> int:
        """Drop idle states (no connection, nothing in the window, nothing to push); returns how many."""
        now = self.clock() if now is None else now
        self._last_sweep = now
        before = len(self._users)
        ttl = self.connection_ttl
        for user_id in [
            uid
            for uid, s in self._users.items()
            if s.connections == 0
            and now - s.last_seen >= WINDOW
            and not s.pending(now, ttl)
            and uid not in self._in_flight
        ]:
            del self._users[user_id]
        excess = len(self._users) - self.max_users
        if excess > 0:  # a flood: forget the idle users seen longest ago, their windows included
            idle = sorted((s.last_seen, uid) for uid, s in self._users.items() if s.connections == 0)
            for _, user_id in idle[:excess]:
                del self._users[user_id]
        return before - len(self._users)

    # -- sharing through Redis --------------------------------------------------------------------

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

    def _queue(self, pipe: Any, user_id: int, state: _UserState, now: float, second: int, *, read: bool) -> _Round:
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

    def _others_connections(self, state: _UserState, fields: dict[bytes, bytes], now: float) -> int:
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


limiter = UserLimiter(settings.REDIS_URL, prefix=settings.REALTIME_LIMITS_PREFIX)
