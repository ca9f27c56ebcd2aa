"""Per-app, per-minute traffic of this gateway process, built from the connections' counters.

Every ``tick`` the change of each connection's counters since the last tick is added to the
current minute of its app (no work on the frame path). The minutes go to the database with the
usage records and, as they are, to the staff dashboard over the channel layer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from realtime_site.usage.counters import Usage
from realtime_site.usage.metrics import empty_buckets

__all__ = ["MinuteStats", "Rollups", "empty_buckets"]

KEEP_MINUTES = 3


@dataclass
class MinuteStats:
    app: str
    minute: datetime
    frames_in: int = 0
    results_out: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency_buckets: list[int] = field(default_factory=empty_buckets)
    dirty: bool = True

    def as_dict(self, gateway: str, *, json: bool = True) -> dict[str, Any]:
        return {
            "app": self.app,
            "minute": self.minute.isoformat() if json else self.minute,
            "gateway": gateway,
            "frames_in": self.frames_in,
            "results_out": self.results_out,
            "errors": dict(self.errors),
            "latency_buckets": list(self.latency_buckets),
        }


@dataclass
class _Seen:
    frames_in: int = 0
    results_out: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency_buckets: list[int] = field(default_factory=empty_buckets)


class Rollups:
    def __init__(self) -> None:
        self.minutes: dict[tuple[str, datetime], MinuteStats] = {}
        self._seen: dict[Any, _Seen] = {}

    def tick(self, usages: list[Usage], *, now: datetime | None = None, ended: list[Usage] = ()) -> None:
        minute = (now or timezone.now()).replace(second=0, microsecond=0)
        for usage in [*usages, *ended]:
            seen = self._seen.setdefault(usage.id, _Seen())
            stats = self.minutes.get((usage.app, minute))
            if stats is None:
                stats = self.minutes[(usage.app, minute)] = MinuteStats(usage.app, minute)
            frames, results = usage.frames_in - seen.frames_in, usage.results_out - seen.results_out
            errors = usage.errors - seen.errors
            latency = [now_ - before for now_, before in zip(usage.latency_buckets, seen.latency_buckets, strict=True)]
            if frames or results or errors or any(latency):
                stats.frames_in += frames
                stats.results_out += results
                stats.errors.update(errors)
                stats.latency_buckets = [a + b for a, b in zip(stats.latency_buckets, latency, strict=True)]
                stats.dirty = True
                seen.frames_in, seen.results_out = usage.frames_in, usage.results_out
                seen.errors = Counter(usage.errors)
                seen.latency_buckets = list(usage.latency_buckets)
        for usage in ended:
            self._seen.pop(usage.id, None)
        cutoff = minute - timedelta(minutes=KEEP_MINUTES)
        for key in [k for k, stats in self.minutes.items() if k[1] < cutoff and not stats.dirty]:
            del self.minutes[key]

    def changed(self) -> list[MinuteStats]:
        return [m for m in self.minutes.values() if m.dirty]

    def current(self) -> list[MinuteStats]:
        return list(self.minutes.values())
