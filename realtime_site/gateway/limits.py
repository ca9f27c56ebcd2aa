"""Per-user limits at the gateway: concurrent connections, frames per minute, a daily frame quota.

State lives in this process (one event loop, no locks needed); the limits themselves come from the
settings and a user's ``UserLimits`` row, read at connect. With several gateway processes each
enforces the limits for its own connections.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from datetime import date

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from realtime_site.accounts.models import UserLimits
from realtime_site.protocol import ErrorCode

__all__ = ["EffectiveLimits", "UserLimiter", "limiter", "load_limits"]

WINDOW = 60  # seconds, counted in one-second buckets


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


@dataclass
class _UserState:
    connections: int = 0
    # Frames of the last minute in one-second buckets: [second, count], oldest first (at most 60).
    buckets: collections.deque[list[int]] = field(default_factory=collections.deque)
    in_window: int = 0
    day: date | None = None
    frames_today: int = 0  # the database's figure when the user's first connection here opened, plus ours


class UserLimiter:
    def __init__(self) -> None:
        self._users: dict[int, _UserState] = {}

    def connect(self, user_id: int, limits: EffectiveLimits) -> str | None:
        """Take a connection slot; returns the reason when over the limit."""
        state = self._users.get(user_id)
        if state is None:
            state = self._users[user_id] = _UserState(day=timezone.localdate(), frames_today=limits.frames_today)
        if state.connections >= limits.max_connections:
            if state.connections == 0:
                del self._users[user_id]
            return f"at most {limits.max_connections} concurrent connections per user"
        state.connections += 1
        return None

    def disconnect(self, user_id: int) -> None:
        state = self._users.get(user_id)
        if state is None:
            return
        state.connections -= 1
        if state.connections <= 0:
            del self._users[user_id]

    def frame(self, user_id: int, limits: EffectiveLimits, now: float | None = None) -> tuple[ErrorCode, str] | None:
        """Count one frame; returns (code, reason) when it must be refused."""
        state = self._users[user_id]
        second = int(time.monotonic() if now is None else now)
        buckets = state.buckets
        while buckets and buckets[0][0] <= second - WINDOW:
            state.in_window -= buckets.popleft()[1]
        if state.in_window >= limits.frames_per_minute:
            return ErrorCode.RATE_LIMITED, f"over {limits.frames_per_minute} frames per minute; slow down"
        quota = limits.daily_frame_quota
        if quota is not None and state.day != (today := timezone.localdate()):
            state.day, state.frames_today = today, 0
        if quota is not None and state.frames_today >= quota:
            return ErrorCode.QUOTA_EXCEEDED, f"the daily quota of {quota} frames is used up"
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])
        state.in_window += 1
        state.frames_today += 1
        return None


limiter = UserLimiter()
