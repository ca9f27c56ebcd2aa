"""Limits shared through the real Redis: two UserLimiter instances stand for two gateway processes."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from realtime_site.gateway.limits import EffectiveLimits, UserLimiter
from realtime_site.protocol import ErrorCode
from tests.faults.proxy import TcpProxy
from tests.gateway.test_limits import Clock, limits

REDIS_DB = 15
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
USER = 7


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    name = f"test-limits:{uuid.uuid4().hex}"
    yield name
    with redis.Redis(db=REDIS_DB) as client:
        keys = list(client.scan_iter(f"{name}:*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
async def make(prefix: str) -> AsyncIterator[Callable[..., UserLimiter]]:
    made: list[UserLimiter] = []

    def factory(url: str = REDIS_URL, **kwargs) -> UserLimiter:
        made.append(UserLimiter(url, prefix=prefix, **{"background": False, **kwargs}))
        return made[-1]

    yield factory
    for limiter in made:
        await limiter.close()


def frames(limiter: UserLimiter, lim: EffectiveLimits, count: int) -> list[ErrorCode | None]:
    return [None if (r := limiter.frame(USER, lim)) is None else r[0] for _ in range(count)]


async def test_shared_window_two_processes_share_one_users_window(make) -> None:
    clock = Clock(time.time())
    a, b = make(clock=clock), make(clock=clock)
    lim = limits(frames_per_minute=5)
    assert a.connect(USER, lim) is None
    assert frames(a, lim, 3) == [None] * 3
    assert await a.sync()
    assert b.connect(USER, lim) is None
    assert await b.sync()
    assert frames(b, lim, 3) == [None, None, ErrorCode.RATE_LIMITED]
    assert await b.sync() and await a.sync()
    assert frames(a, lim, 1) == [ErrorCode.RATE_LIMITED]


async def test_shared_window_still_slides(make) -> None:
    clock = Clock(time.time())
    a, b = make(clock=clock), make(clock=clock)
    lim = limits(frames_per_minute=3)
    a.connect(USER, lim)
    assert frames(a, lim, 3) == [None] * 3
    assert await a.sync()
    b.connect(USER, lim)
    assert await b.sync()
    assert frames(b, lim, 1) == [ErrorCode.RATE_LIMITED]
    clock.now += 61
    assert frames(b, lim, 4) == [None, None, None, ErrorCode.RATE_LIMITED]


async def test_shared_daily_quota_counts_every_process(make) -> None:
    a, b = make(), make()
    lim = limits(frames_per_minute=100, daily_frame_quota=5, frames_today=1)  # the database's figure
    a.connect(USER, lim)
    assert frames(a, lim, 2) == [None, None]
    assert await a.sync()
    b.connect(USER, lim)
    assert await b.sync()
    assert frames(b, lim, 3) == [None, None, ErrorCode.QUOTA_EXCEEDED]
    assert await b.sync() and await a.sync()
    assert frames(a, lim, 1) == [ErrorCode.QUOTA_EXCEEDED]


async def test_shared_connections_count_every_process(make) -> None:
    a, b = make(), make()
    lim = limits(max_connections=2)
    assert a.connect(USER, lim) is None and b.connect(USER, lim) is None
    assert await a.sync() and await b.sync() and await a.sync()
    assert "at most 2" in (a.connect(USER, lim) or "")
    b.disconnect(USER)
    assert await b.sync() and await a.sync()  # b withdrew its count
    assert a.connect(USER, lim) is None


async def test_shared_connections_of_a_dead_process_lapse(make, prefix: str) -> None:
    clock = Clock(time.time())
    a, dead = make(clock=clock), make(clock=clock)
    lim = limits(max_connections=2)
    assert dead.connect(USER, lim) is None
    assert await dead.sync()  # then it dies: never syncs again
    assert a.connect(USER, lim) is None
    assert await a.sync()
    assert "at most 2" in (a.connect(USER, lim) or "")
    clock.now += dead.connection_ttl + 1
    assert await a.sync()
    assert a.connect(USER, lim) is None
    assert await a.sync()  # the dead process's field is deleted
    with redis.Redis(db=REDIS_DB) as client:
        assert client.hkeys(f"{prefix}:c:{USER}") == [a.process]


async def test_shared_redis_away_falls_back_to_local_and_recovers(make, caplog) -> None:
    caplog.set_level(logging.WARNING, "realtime_site.gateway.limits")
    proxy = TcpProxy(6379)
    try:
        a = make(f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}")
        b = make()
        lim = limits(frames_per_minute=4)
        a.connect(USER, lim)
        assert frames(a, lim, 1) == [None]
        assert await a.sync() and a.shared_up
        proxy.cut()
        assert frames(a, lim, 1) == [None]
        assert await a.sync() is False and a.shared_up is False
        assert await a.sync() is False
        assert frames(a, lim, 3) == [None, None, ErrorCode.RATE_LIMITED]  # local counts still hold
        away = [r for r in caplog.records if "Redis unavailable" in r.message]
        assert len(away) == 1 and "this process's counts alone" in away[0].message
        proxy.restore()
        assert await a.sync() and a.shared_up
        assert any("Redis is back" in r.message for r in caplog.records)
        b.connect(USER, lim)
        assert await b.sync()  # sees the frames a counted while Redis was away
        assert frames(b, lim, 1) == [ErrorCode.RATE_LIMITED]
    finally:
        proxy.close()


async def until(done: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Wait for an outcome (a generous deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_shared_background_task_never_stalls_frames_when_redis_is_away(make) -> None:
    limiter = make(f"redis://127.0.0.1:{closed_port()}/{REDIS_DB}", background=True, interval=0.05)
    lim = limits(frames_per_minute=3)
    assert limiter.connect(USER, lim) is None  # starts the sync task
    assert await until(lambda: limiter.shared_up is False)
    assert frames(limiter, lim, 4) == [None, None, None, ErrorCode.RATE_LIMITED]
    assert limiter._task is not None and not limiter._task.done()  # still retrying


async def test_shared_background_task_spreads_counts(make) -> None:
    a, b = make(background=True, interval=0.05), make(background=True, interval=0.05)
    lim = limits(frames_per_minute=5)
    a.connect(USER, lim)
    assert frames(a, lim, 3) == [None] * 3
    b.connect(USER, lim)
    assert await until(lambda: b._users[USER].others_in_window >= 3)
    assert frames(b, lim, 3) == [None, None, ErrorCode.RATE_LIMITED]
