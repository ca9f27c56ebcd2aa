"""New connections per client address: a token bucket checked before any database work.

A connection costs the gateway a handshake and an admission (credential, limits and app reads in the
database thread, about 10 ms of CPU); a storm of them from one address would starve everyone's
frames of the event loop. Each address may open ``rate`` connections a second on average, with
bursts up to ``burst``; past that a connection is refused (``RATE_LIMITED``, 4429) at the cost of the
handshake alone. Per process, in memory, bounded: at most ``max_addresses`` buckets (the least
recently used one is forgotten first; a forgotten address starts again with a full bucket).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["ConnectRate"]


class ConnectRate:
    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_addresses: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self.max_addresses = max_addresses
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def take(self, address: str) -> float | None:
        """Take one connection for ``address``; None when allowed, else the seconds until one is."""
        if self.rate <= 0:
            return None
        now = self.clock()
        tokens, at = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[address] = (tokens, now)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.rate

    def clear(self) -> None:
        self._buckets.clear()
