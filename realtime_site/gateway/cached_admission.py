"""Admission through this process's cache, for realtime connections and HTTP calls alike: a
credential admitted a moment ago is admitted from memory, any other by the database (and then
remembered); one admitted from memory is later admitted again in full (``confirm``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from realtime_site.gateway.admission import Admission
from realtime_site.gateway.admission_cache import admission_cache
from realtime_site.gateway.admission_feed import admission_feed
from realtime_site.gateway.limits import EffectiveLimits, limiter
from realtime_site.protocol import AppPath, CloseCode, ErrorCode, Refusal
from realtime_site.usage import metrics

__all__ = ["admit", "confirm"]

FromDatabase = Callable[[], Awaitable[tuple[Admission, EffectiveLimits]]]


async def admit(
    scope: dict[str, Any], path: AppPath, from_database: FromDatabase
) -> tuple[Admission, EffectiveLimits, bool]:
    """The admission and limits, and whether they came from the cache. Raises ``Refusal``."""
    cache = admission_cache()
    admission_feed().follow()
    cached = cache.lookup(scope, path)
    if cached is not None:
        metrics.ADMISSIONS.labels("cache").inc()
        return *cached, True
    admission, limits = await from_database()
    metrics.ADMISSIONS.labels("database").inc()
    if cache.serving:
        cache.store(scope, path, admission, limits)
    return admission, limits, False


async def confirm(scope: dict[str, Any], path: AppPath, user_pk: int, from_database: FromDatabase) -> EffectiveLimits:
    """Admission again in full for what the cache admitted: the fresh limits apply to the user and
    are remembered. A refusal now (or the credential naming another user) forgets the entry and
    raises ``Refusal``."""
    cache = admission_cache()
    try:
        fresh, limits = await from_database()
        if fresh.user.pk != user_pk:
            raise Refusal(ErrorCode.UNAUTHORIZED, "the credential now names another user", CloseCode.UNAUTHORIZED)
    except Refusal:
        cache.discard(scope, path)
        raise
    limiter.refresh(user_pk, limits)
    if cache.serving:
        cache.store(scope, path, fresh, limits)
    return limits
