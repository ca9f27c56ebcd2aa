"""How fast one member may send, on their own connection: ops, points, undos and cursor moves each
in a token bucket. Over a rate, the message is dropped (and the member told, at most once a second);
the other members never wait for it."""

from __future__ import annotations

import time
from collections.abc import Callable

from realtime_site.rooms.ops import Cursor, Down, Move, Op, Simple

__all__ = ["MemberRates"]

OPS_PER_SECOND, OPS_BURST = 60.0, 120.0
POINTS_PER_SECOND, POINTS_BURST = 1500.0, 3000.0
CURSORS_PER_SECOND, CURSORS_BURST = 20.0, 20.0
HISTORY_PER_SECOND, HISTORY_BURST = 5.0, 10.0  # undo and redo draw the whole canvas again: fewer of them


class Bucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()

    def take(self, amount: float = 1.0) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


class MemberRates:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.ops = Bucket(OPS_PER_SECOND, OPS_BURST, clock)
        self.points = Bucket(POINTS_PER_SECOND, POINTS_BURST, clock)
        self.cursors = Bucket(CURSORS_PER_SECOND, CURSORS_BURST, clock)
        self.history = Bucket(HISTORY_PER_SECOND, HISTORY_BURST, clock)
        self.told_at = -1.0
        self.dropped = 0

    def refusal(self, op: Op) -> str | None:
        """None: send it. Otherwise it is dropped: the reason, or "" when the member was told lately."""
        if isinstance(op, Cursor):
            return None if self.cursors.take() else ""  # cursors just skip: no error for them
        points = len(op.points) / 2 if isinstance(op, Down | Move) else 0
        history = isinstance(op, Simple) and op.kind in ("undo", "redo")
        if self.ops.take() and (not points or self.points.take(points)) and (not history or self.history.take()):
            return None
        self.dropped += 1
        now = self.clock()
        if now - self.told_at < 1.0:
            return ""
        self.told_at = now
        return (f"over {OPS_PER_SECOND:g} messages, {POINTS_PER_SECOND:g} points or {HISTORY_PER_SECOND:g} undos "
                f"a second; {self.dropped} dropped so far")  # fmt: skip
