"""Failed credential checks (API keys, tokens) per client address, in a sliding window.

An address with ``REALTIME_CREDENTIAL_FAILURES`` failures in the last
``REALTIME_CREDENTIAL_FAILURE_WINDOW`` seconds is refused until the oldest of them leaves the
window, before its credential is even looked at: guessing keys costs a window per few tries.

Counts live in Redis when ``settings.REDIS_URL`` is set, so every gateway process sees the same;
while Redis is away (or without it) they live in this process's memory, which tracks at most
``max_addresses`` addresses (the least recently failing one is forgotten first).

Use::

    wait = failures.blocked(address)  # seconds until it may try again, or None
    ...check the credential; when it is refused: failures.record(address)
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import redis
from django.conf import settings

__all__ = ["CredentialFailures", "failures"]

log = logging.getLogger("realtime_site.accounts")
REDIS_TIMEOUT = 0.5  # seconds: a slow Redis costs a request this much at most
REDIS_RETRY = 5.0  # seconds before Redis is tried again after a failure

# KEYS[1]: a sorted set of failure times. ARGV: window (s), limit. Redis's clock, shared by all processes.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6 "
_RECORD = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])))
return 1
"""
)
_BLOCKED = (
    _NOW
    + """
local limit = tonumber(ARGV[2])
local nth = redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')
if #nth == 0 then return false end
local wait = tonumber(nth[2]) + tonumber(ARGV[1]) - now
if wait <= 0 then return false end
return tostring(wait)
"""
)


class CredentialFailures:
    """Counts per address; every argument left ``None`` is read from settings at each call."""

    def __init__(
        self,
        *,
        limit: int | None = None,
        window: float | None = None,
        max_addresses: int | None = None,
        redis_url: str | None = None,
        prefix: str = "realtime:credential-failures:",
        clock: Callable[[], float] = time.monotonic,
    ):
        self._limit, self._window, self._max, self._redis_url = limit, window, max_addresses, redis_url
        self.prefix, self.clock = prefix, clock
        self._local: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._client_url: str | None = None
        self._redis_down_until = 0.0

    # -- configuration --------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit if self._limit is not None else settings.REALTIME_CREDENTIAL_FAILURES

    @property
    def window(self) -> float:
        return self._window if self._window is not None else settings.REALTIME_CREDENTIAL_FAILURE_WINDOW

    @property
    def max_addresses(self) -> int:
        return self._max if self._max is not None else settings.REALTIME_CREDENTIAL_FAILURE_ADDRESSES

    def describe(self, wait: float) -> str:
        """The refusal, naming the limit and when to come back."""
        return (
            f"too many failed credential checks from your address (the limit is {self.limit} per "
            f"{self.window:g} seconds); try again in {math.ceil(wait)} seconds"
        )

    # -- the API --------------------------------------------------------------------------------

    def blocked(self, address: str) -> float | None:
        """Seconds until ``address`` may present a credential again, or None when it may now."""
        if self.limit <= 0:
            return None
        client = self._redis()
        if client is not None:
            try:
                wait = client.eval(_BLOCKED, 1, self.prefix + address, self.window, self.limit)
            except redis.RedisError as exc:
                self._redis_failed(exc)
            else:
                self._redis_ok()
                return float(wait) if wait else None
        return self._local_blocked(address)

    def record(self, address: str) -> None:
        """One failed credential check from ``address``."""
        if self.limit <= 0:
            return
        client = self._redis()
        if client is not None:
            try:
                client.eval(_RECORD, 1, self.prefix + address, self.window, self.limit, secrets.token_hex(8))
            except redis.RedisError as exc:
                self._redis_failed(exc)
            else:
                self._redis_ok()
                return
        self._local_record(address)

    def clear(self) -> None:
        """Forget this process's counts (tests; Redis's expire by themselves)."""
        with self._lock:
            self._local.clear()

    # -- in memory ------------------------------------------------------------------------------

    def _local_blocked(self, address: str) -> float | None:
        now = self.clock()
        with self._lock:
            times = self._local.get(address)
            if times is None or len(times) < self.limit:
                return None
            wait = times[-self.limit] + self.window - now
        return wait if wait > 0 else None

    def _local_record(self, address: str) -> None:
        now, limit = self.clock(), self.limit
        with self._lock:
            times = self._local.pop(address, None)
            if times is None or times.maxlen != limit:
                times = deque(times or (), maxlen=limit)  # only the last `limit` failures matter
            times.append(now)
            self._local[address] = times  # now the most recent
            while len(self._local) > max(1, self.max_addresses):
                self._local.popitem(last=False)

    # -- Redis ----------------------------------------------------------------------------------

    def _redis(self) -> redis.Redis | None:
        url = self._redis_url or settings.REDIS_URL
        if not url or time.monotonic() < self._redis_down_until:
            return None
        if self._client is None or self._client_url != url:
            self._client = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, health_check_interval=30
            )
            self._client_url = url
        return self._client

    def _redis_failed(self, exc: Exception) -> None:
        if not self._redis_down_until:
            log.warning(
                "credential failures: Redis unavailable (%s); counting in this process for now", type(exc).__name__
            )
        self._redis_down_until = time.monotonic() + REDIS_RETRY

    def _redis_ok(self) -> None:
        if self._redis_down_until:
            self._redis_down_until = 0.0
            log.info("credential failures: Redis is back; counting there again")


failures = CredentialFailures()
