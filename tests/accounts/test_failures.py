"""CredentialFailures: the sliding window, its bound, and its sharing through a real Redis."""

from __future__ import annotations

import logging
import socket
import time
import uuid

import pytest

from realtime_site.accounts.failures import CredentialFailures

REDIS_URL = "redis://127.0.0.1:6379/12"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def local(limit: int = 3, window: float = 60, max_addresses: int = 100) -> tuple[CredentialFailures, Clock]:
    clock = Clock()
    counts = CredentialFailures(limit=limit, window=window, max_addresses=max_addresses, clock=clock)
    counts._redis_url = None  # never Redis, whatever the settings say
    return counts, clock


@pytest.fixture(autouse=True)
def no_redis_from_settings(settings) -> None:
    settings.REDIS_URL = None


def test_failures_block_after_the_limit_and_release_as_the_window_slides() -> None:
    counts, clock = local(limit=3, window=60)
    for _ in range(2):
        counts.record("10.0.0.1")
        clock.now += 10
    assert counts.blocked("10.0.0.1") is None  # two failures: still allowed
    counts.record("10.0.0.1")  # the third, at t=20 (the first was at t=0)
    assert counts.blocked("10.0.0.1") == pytest.approx(40)  # until the first leaves the window
    clock.now += 39
    assert counts.blocked("10.0.0.1") == pytest.approx(1)
    clock.now += 2
    assert counts.blocked("10.0.0.1") is None  # one failure left the window: one more try allowed
    counts.record("10.0.0.1")
    assert counts.blocked("10.0.0.1") == pytest.approx(9)  # now at t=61: the second (t=10) holds it to t=70


def test_failures_of_one_address_leave_another_alone() -> None:
    counts, _ = local(limit=2)
    counts.record("10.0.0.1")
    counts.record("10.0.0.1")
    assert counts.blocked("10.0.0.1") is not None
    assert counts.blocked("10.0.0.2") is None


def test_failures_track_a_bounded_number_of_addresses() -> None:
    counts, _ = local(limit=1, max_addresses=3)
    for n in range(10):
        counts.record(f"10.0.0.{n}")
    assert len(counts._local) == 3
    assert counts.blocked("10.0.0.9") is not None  # the most recent are kept
    assert counts.blocked("10.0.0.0") is None  # the oldest were forgotten


def test_failures_limit_of_zero_turns_them_off() -> None:
    counts, _ = local(limit=0)
    for _ in range(5):
        counts.record("10.0.0.1")
    assert counts.blocked("10.0.0.1") is None


def test_failures_message_names_the_limit(settings) -> None:
    settings.REALTIME_CREDENTIAL_FAILURES, settings.REALTIME_CREDENTIAL_FAILURE_WINDOW = 7, 30
    message = CredentialFailures().describe(12.2)
    assert "the limit is 7 per 30 seconds" in message and "try again in 13 seconds" in message


def shared(window: float = 60, limit: int = 3, prefix: str = "") -> CredentialFailures:
    return CredentialFailures(limit=limit, window=window, redis_url=REDIS_URL, prefix=prefix)


def test_failures_are_shared_between_processes_through_redis() -> None:
    prefix = f"test-failures-{uuid.uuid4().hex}:"
    one, other = shared(prefix=prefix), shared(prefix=prefix)  # as in two gateway processes
    for counts in (one, other, one):
        counts.record("10.0.0.1")
    assert other.blocked("10.0.0.1") == pytest.approx(60, abs=5)
    assert one.blocked("10.0.0.1") is not None and one.blocked("10.0.0.2") is None
    assert one._local == {} and other._local == {}  # nothing was counted in memory


def test_failures_in_redis_leave_the_window() -> None:
    counts = shared(window=1, limit=2, prefix=f"test-failures-{uuid.uuid4().hex}:")
    counts.record("10.0.0.1")
    counts.record("10.0.0.1")
    assert counts.blocked("10.0.0.1") is not None
    deadline = time.monotonic() + 30
    while counts.blocked("10.0.0.1") is not None:
        assert time.monotonic() < deadline, "the failures never left a 1-second window"
        time.sleep(0.2)


def test_failures_fall_back_to_memory_while_redis_is_away(caplog) -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    counts = CredentialFailures(limit=2, window=60, redis_url=f"redis://127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING, logger="realtime_site.accounts"):
        counts.record("10.0.0.1")
        counts.record("10.0.0.1")
        assert counts.blocked("10.0.0.1") is not None
    assert counts.blocked("10.0.0.2") is None
    warnings = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per request
