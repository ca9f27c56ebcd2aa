"""The per-user limiter, without sockets."""

from __future__ import annotations

from realtime_site.gateway.limits import EffectiveLimits, UserLimiter
from realtime_site.protocol import ErrorCode


def limits(**overrides) -> EffectiveLimits:
    base = {"max_connections": 2, "frames_per_minute": 3, "daily_frame_quota": None, "frames_today": 0}
    return EffectiveLimits(**{**base, **overrides})


def test_connections_are_counted_per_user() -> None:
    limiter = UserLimiter()
    assert limiter.connect(1, limits()) is None and limiter.connect(1, limits()) is None
    assert "at most 2" in (limiter.connect(1, limits()) or "")
    assert limiter.connect(2, limits()) is None
    limiter.disconnect(1)
    assert limiter.connect(1, limits()) is None


def test_frames_per_minute_is_a_sliding_window() -> None:
    limiter, lim = UserLimiter(), limits()
    limiter.connect(1, lim)
    assert [limiter.frame(1, lim, now=t) for t in (0.0, 10.0, 20.0)] == [None, None, None]
    refused = limiter.frame(1, lim, now=30.0)
    assert refused is not None and refused[0] is ErrorCode.RATE_LIMITED
    assert limiter.frame(1, lim, now=60.5) is None  # the frame of second 0 left the window
    assert limiter.frame(1, lim, now=61.0) is not None


def test_daily_quota_starts_from_the_recorded_figure() -> None:
    limiter, lim = UserLimiter(), limits(frames_per_minute=100, daily_frame_quota=5, frames_today=3)
    limiter.connect(1, lim)
    assert limiter.frame(1, lim, now=0) is None and limiter.frame(1, lim, now=1) is None
    refused = limiter.frame(1, lim, now=2)
    assert refused is not None and refused[0] is ErrorCode.QUOTA_EXCEEDED
