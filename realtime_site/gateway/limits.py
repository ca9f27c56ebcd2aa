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

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from realtime_site.accounts.tokens import limits_of
from realtime_site.gateway.limits_state import WINDOW, UserState
from realtime_site.gateway.limits_sync import CONNECTION_TTL, SYNC_INTERVAL, SharedCounts
from realtime_site.protocol import ErrorCode

__all__ = ["EffectiveLimits", "UserLimiter", "limiter", "load_limits"]

log = logging.getLogger(__name__)

SWEEP_EVERY = 10.0  # seconds between sweeps of idle states
MAX_USERS = 50_000  # past this many states, idle ones are pruned oldest first


@dataclass(frozen=True)
class EffectiveLimits:
    max_connections: int
    frames_per_minute: int
    daily_frame_quota: int | None
    frames_today: int  # recorded in the database when the connection opened


def load_limits(user: Any) -> EffectiveLimits:
    """The user's limits and today's recorded frames (sync; at most two small reads: the limits row
    is read once per user object, and the day's frames only when there is a quota)."""
    from realtime_site.usage.models import ConnectionRecord

    row = limits_of(user)
    user_id = user.pk

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


class UserLimiter(SharedCounts):
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
        self._users: dict[int, UserState] = {}
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
        self._task = None  # the sync task (limits_sync)
        self._wake = None
        self._redis = None
        self._redis_loop = None

    # -- the consumer's calls (on the event loop, never waiting) ---------------------------------

    def connect(self, user_id: int, limits: EffectiveLimits) -> str | None:
        """Take a connection slot; returns the reason when over the limit."""
        now = self.clock()
        self._maybe_sweep(now)
        state = self._users.get(user_id)
        if state is None:
            state = self._users[user_id] = UserState()
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

    def refresh(self, user_id: int, limits: EffectiveLimits) -> None:
        """Limits read again from the database for a connection already counted (its day's figure)."""
        state = self._users.get(user_id)
        if state is not None:
            state.quota = limits.daily_frame_quota is not None
            state.roll_day(timezone.localdate(), limits.frames_today)

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
            state = self._users[user_id] = UserState(day=timezone.localdate(), frames_today=limits.frames_today)
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


limiter = UserLimiter(settings.REDIS_URL, prefix=settings.REALTIME_LIMITS_PREFIX)
