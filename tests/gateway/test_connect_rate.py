"""The per-address connection bucket, with a clock of our own."""

from __future__ import annotations

from realtime_site.gateway.connect_rate import ConnectRate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_connect_rate_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    rate = ConnectRate(2, 3, clock=clock)
    assert [rate.take("a") for _ in range(3)] == [None, None, None]
    wait = rate.take("a")
    assert wait is not None and 0 < wait <= 0.5
    clock.now += 0.5  # one more token
    assert rate.take("a") is None and rate.take("a") is not None
    assert rate.take("b") is None  # another address has its own bucket


def test_connect_rate_refills_to_the_burst_only() -> None:
    clock = Clock()
    rate = ConnectRate(1, 2, clock=clock)
    rate.take("a")
    clock.now += 1000
    assert [rate.take("a") for _ in range(3)].count(None) == 2


def test_connect_rate_bounds_the_addresses_it_tracks() -> None:
    rate = ConnectRate(1, 1, max_addresses=100, clock=Clock())
    for n in range(10_000):
        rate.take(f"10.0.{n // 256}.{n % 256}")
    assert len(rate._buckets) == 100


def test_connect_rate_zero_is_off() -> None:
    rate = ConnectRate(0, 1, clock=Clock())
    assert all(rate.take("a") is None for _ in range(100))
