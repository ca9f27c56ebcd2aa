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


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_window_survives_a_reconnect() -> None:
    clock = Clock()
    limiter, lim = UserLimiter(clock=clock), limits()
    limiter.connect(1, lim)
    assert [limiter.frame(1, lim) for _ in range(3)] == [None, None, None]
    limiter.disconnect(1)
    clock.now += 30
    assert limiter.connect(1, lim) is None
    refused = limiter.frame(1, lim)
    assert refused is not None and refused[0] is ErrorCode.RATE_LIMITED


def test_window_slides_across_a_reconnect() -> None:
    clock = Clock()
    limiter, lim = UserLimiter(clock=clock), limits()
    limiter.connect(1, lim)
    for _ in range(3):
        assert limiter.frame(1, lim) is None
    limiter.disconnect(1)
    clock.now += 61  # the frames left the window
    limiter.connect(1, lim)
    assert [limiter.frame(1, lim) for _ in range(3)] == [None, None, None]
    assert limiter.frame(1, lim) is not None


def test_daily_count_survives_a_reconnect_with_a_lagging_database_figure() -> None:
    limiter, lim = UserLimiter(clock=Clock()), limits(frames_per_minute=100, daily_frame_quota=5)
    limiter.connect(1, lim)
    assert [limiter.frame(1, lim) for _ in range(3)] == [None, None, None]
    limiter.disconnect(1)
    lagging = limits(frames_per_minute=100, daily_frame_quota=5, frames_today=2)  # recorded 2 of our 3 so far
    limiter.connect(1, lagging)
    assert [limiter.frame(1, lagging) for _ in range(2)] == [None, None]
    refused = limiter.frame(1, lagging)
    assert refused is not None and refused[0] is ErrorCode.QUOTA_EXCEEDED


def test_daily_count_takes_a_higher_database_figure_at_reconnect() -> None:
    limiter = UserLimiter(clock=Clock())
    limiter.connect(1, limits(frames_per_minute=100, daily_frame_quota=5))
    limiter.disconnect(1)
    elsewhere = limits(frames_per_minute=100, daily_frame_quota=5, frames_today=5)  # used up on another gateway
    limiter.connect(1, elsewhere)
    refused = limiter.frame(1, elsewhere)
    assert refused is not None and refused[0] is ErrorCode.QUOTA_EXCEEDED


def test_prune_keeps_a_user_for_the_window_then_drops_them() -> None:
    clock = Clock()
    limiter, lim = UserLimiter(clock=clock), limits()
    for user_id in (1, 2):
        limiter.connect(user_id, lim)
        limiter.frame(user_id, lim)
    limiter.disconnect(1)  # user 2 stays connected
    clock.now += 30
    assert limiter.prune() == 0
    clock.now += 31
    assert limiter.prune() == 1 and list(limiter._users) == [2]


def test_prune_runs_by_itself_at_connect() -> None:
    clock = Clock()
    limiter, lim = UserLimiter(clock=clock), limits()
    limiter.connect(1, lim)
    limiter.disconnect(1)
    clock.now += 120
    limiter.connect(2, lim)
    assert list(limiter._users) == [2]


def test_prune_bounds_a_flood_of_users() -> None:
    clock = Clock()
    limiter, lim = UserLimiter(clock=clock, max_users=100), limits()
    limiter.connect(0, lim)  # connected throughout: never pruned
    largest = 0
    for user_id in range(1, 5001):
        clock.now += 0.1  # 5000 users within 500 s, 600 within any window
        assert limiter.connect(user_id, lim) is None
        limiter.frame(user_id, lim)
        limiter.disconnect(user_id)
        largest = max(largest, len(limiter._users))
    assert largest <= 111
    assert 0 in limiter._users
    assert limiter.frame(0, lim) is None
