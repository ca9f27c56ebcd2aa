"""New connections per client address: a token bucket checked before any database work.

A connection costs the gateway a handshake and an admission (credential, limits and app reads in the
database thread, about 10 ms of CPU); a storm of them from one address would starve everyone's
frames of the event loop. Each address may open ``rate`` connections a second on average, with
bursts up to ``burst``; past that a connection is refused (``RATE_LIMITED``, 4429) at the cost of the
handshake alone. Per process, in memory, bounded: at most ``max_addresses`` buckets (the least
recently used one is forgotten first; a forgotten address starts again with a full bucket).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from realtime_site.protocol import CloseCode, ErrorCode, Refusal

__all__ = ["ConnectRate", "connect_rate", "reset_connect_rate"]


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

    def refusal(self, address: str) -> Refusal | None:
        """``take``, as the refusal a client is told (``RATE_LIMITED``, 4429) when over the rate."""
        wait = self.take(address)
        if wait is None:
            return None
        reason = f"too many new connections from your address (at most {self.rate:g} a second)"
        return Refusal(ErrorCode.RATE_LIMITED, f"{reason}; try again in {math.ceil(wait)} s", CloseCode.TOO_MANY)

    def clear(self) -> None:
        self._buckets.clear()


_shared: ConnectRate | None = None


def connect_rate() -> ConnectRate:
    """This process's buckets, shared by WebSocket connections and HTTP calls."""
    global _shared
    if _shared is None:
        from django.conf import settings

        _shared = ConnectRate(settings.REALTIME_CONNECTS_PER_SECOND, settings.REALTIME_CONNECT_BURST)
    return _shared


def reset_connect_rate() -> None:
    """Forget the buckets and the settings they were made with (tests change the settings)."""
    global _shared
    _shared = None
