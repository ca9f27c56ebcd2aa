"""One user's counts at one gateway process: the minute's frames in one-second buckets, the day's
count, connections, and what the other processes counted as last read from Redis."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from datetime import date

__all__ = ["WINDOW", "UserState"]

WINDOW = 60  # seconds, counted in one-second buckets


def _slide(buckets: collections.deque[list[int]], cutoff: int) -> int:
    """Drop buckets at or before ``cutoff``; returns how many frames left the window."""
    gone = 0
    while buckets and buckets[0][0] <= cutoff:
        gone += buckets.popleft()[1]
    return gone


@dataclass
class UserState:
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
