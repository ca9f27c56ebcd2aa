"""Usage counting off the frame path.

Each connection owns a ``Usage``: plain counters that the consumer bumps on the event loop (no I/O).
One writer task per process turns them into ``ConnectionRecord`` rows through the database thread
(``usage.writer``):

- a closing connection's record is written at once; closes that arrive together share one write;
- every ``USAGE_FLUSH_INTERVAL`` seconds, the open connections whose counts changed are written;
- one bad record never blocks the others: when a round fails, its rows are written one by one, and
  a row the database refuses for its data is *set aside* (kept in a bounded list, ``set_aside``,
  logged once with its id and the error, counted in ``realtime_usage_records_failed_total``);
- while the database is away, closed connections' records wait in a bounded backlog and are tried
  again every round; what does not fit is counted (``lost``, ``realtime_usage_records_lost_total``)
  and logged, never silently lost.

``close`` shields the write, so a connection cancelled at server shutdown still gets its record,
and ``drain`` waits, at most ``USAGE_DRAIN_TIMEOUT`` seconds, until everything handed over is
written; it returns (and logs) how many records it could not write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import os
import socket
import time
import uuid
from collections import Counter
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from realtime_site.usage import metrics
from realtime_site.usage.counters import Usage
from realtime_site.usage.models import ConnectionRecord, fit_text
from realtime_site.usage.rollups import MinuteStats, Rollups
from realtime_site.usage.writer import Outcome, RoundResult, describe, write_round

__all__ = ["GATEWAY_NAME", "LIVE_GROUP", "Usage", "UsageRecorder", "recorder"]

GATEWAY_NAME = f"{socket.gethostname()}:{os.getpid()}"
LIVE_GROUP = "usage-live"  # the staff dashboard listens here
LIVE_INTERVAL = 2.0  # seconds between rollups sent to the dashboard
CLOSE_BATCH_SECONDS = 0.2  # how long the writer waits for more batched closes (HTTP calls) to join a round

log = logging.getLogger("realtime_site.usage")

BACKLOG_LIMIT = 10_000  # closed connections' records kept in memory while the database cannot be written
SET_ASIDE_LIMIT = 1_000  # records the database refused, kept for a person to look at
MAX_RETRIES = 5  # rounds a row may fail while the database answers before it is set aside


class UsageRecorder:
    def __init__(self) -> None:
        self._open: dict[uuid.UUID, Usage] = {}
        self._written: dict[uuid.UUID, tuple[Any, ...]] = {}  # rows in the database, by last version
        self._closing: list[tuple[Usage, asyncio.Future[None]]] = []
        self._backlog: dict[uuid.UUID, Usage] = {}  # closed, not yet written; oldest first
        self._retries: Counter[Any] = Counter()  # failures of a row while the database answered
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._wake: asyncio.Event | None = None
        self._urgent = False  # a close someone waits for is in hand
        self._writer: asyncio.Task[None] | None = None
        self.rollups = Rollups()
        self.lost = 0  # records dropped because the backlog was full
        self._away = False  # the last round found the database away
        self.set_aside: collections.deque[tuple[Usage, str]] = collections.deque(maxlen=SET_ASIDE_LIMIT)

    # -- API for consumers ----------------------------------------------------------------------

    def open(self, usage: Usage) -> None:
        self._open[usage.id] = usage
        self._ensure_writer()

    async def close(self, usage: Usage, close_code: int | None) -> None:
        """Mark the connection ended; returns once its record is written or kept for a retry (or,
        with the database hanging, after ``USAGE_DRAIN_TIMEOUT`` seconds: the record waits all the same)."""
        future = self.close_soon(usage, close_code)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(future), settings.USAGE_DRAIN_TIMEOUT)

    def close_soon(self, usage: Usage, close_code: int | None, *, batched: bool = False) -> asyncio.Future[None]:
        """Mark the connection ended and hand its record to the writer, now, without waiting for it
        (an HTTP call answers first); a shutdown's ``drain`` writes it all the same. ``batched``: the
        writer may wait ``CLOSE_BATCH_SECONDS`` for more closes to write in the same round (many short
        HTTP calls, one commit instead of one each)."""
        if usage.ended_at is None:
            usage.ended_at = timezone.now()
            usage.close_code = close_code
        future = self._ensure_writer().create_future()
        self._closing.append((usage, future))
        if not batched:
            self._urgent = True
        self._signal()
        return future

    async def flush(self) -> None:
        """Write every open connection now."""
        future = self._ensure_writer().create_future()
        self._flush_waiters.append(future)
        self._signal()
        await asyncio.shield(future)

    async def drain(self, timeout: float | None = None) -> int:  # noqa: ASYNC109 (a bound, not a cancel)
        """Write every close handed over so far (at shutdown), for at most ``timeout`` seconds
        (default ``USAGE_DRAIN_TIMEOUT``); returns how many records are still unwritten."""
        limit = settings.USAGE_DRAIN_TIMEOUT if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                await self.flush()  # the open connections' latest counts too
                while self._closing or self._backlog:
                    if self._backlog:
                        await asyncio.sleep(0.5)
                    await self.flush()
        except TimeoutError:
            pass
        unwritten = self.unwritten()
        if unwritten:
            log.error("shutting down: %d usage records could not be written within %g s; lost", unwritten, limit)
        return unwritten

    def unwritten(self) -> int:
        """Records whose latest counts are not in the database."""
        ended = {u.id for u, _ in self._closing if not u.set_aside} | set(self._backlog)
        changed = sum(1 for u in self._open.values() if u.id not in ended and self._written.get(u.id) != u.version())
        return len(ended) + changed

    def backlog(self) -> int:
        return len(self._backlog)

    def live(self) -> list[Usage]:
        return list(self._open.values())

    # -- the writer -----------------------------------------------------------------------------

    def _ensure_writer(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._wake = asyncio.Event()
            # A context of its own: started from an HTTP view it would otherwise inherit that request's
            # thread-sensitive executor (asgiref), which quits when the response is sent.
            self._writer = loop.create_task(self._run(), context=contextvars.Context())
        return loop

    def _signal(self) -> None:
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        last_write = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), LIVE_INTERVAL)
            except TimeoutError:
                self.rollups.tick(list(self._open.values()))
                await self._broadcast()
            self._wake.clear()
            if self._closing and not self._urgent and not self._flush_waiters:
                await asyncio.sleep(CLOSE_BATCH_SECONDS)  # more short calls' closes join this round
            self._urgent = False
            everything = bool(self._flush_waiters) or time.monotonic() - last_write >= settings.USAGE_FLUSH_INTERVAL
            if everything:
                last_write = time.monotonic()
            await self._write_round(everything=everything)

    async def _broadcast(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        active: collections.Counter[str] = collections.Counter(u.app for u in self._open.values())
        message = {
            "type": "usage.live",
            "gateway": GATEWAY_NAME,
            "active": dict(active),
            "minutes": [m.as_dict(GATEWAY_NAME) for m in self.rollups.current()],
        }
        try:
            await layer.group_send(LIVE_GROUP, message)
        except Exception:  # the dashboard is a convenience: never let it stop the recording
            log.warning("could not send live usage to the dashboard", exc_info=True)

    async def _write_round(self, *, everything: bool) -> None:
        closing, self._closing = self._closing, []
        waiters, self._flush_waiters = self._flush_waiters, []
        try:
            await self._write(closing, everything=everything)
        except Exception:  # a bug here must not leave a closing connection waiting forever
            log.exception("usage write round failed")
        finally:
            metrics.USAGE_BACKLOG.set(len(self._backlog))
            for future in [*(f for _, f in closing), *waiters]:
                if not future.done():
                    future.set_result(None)

    async def _write(self, closing: list[tuple[Usage, asyncio.Future[None]]], *, everything: bool) -> None:
        ended = [u for u, _ in closing]
        for usage in ended:
            self._open.pop(usage.id, None)
            if not usage.set_aside:
                self._keep(usage)
        self.rollups.tick(list(self._open.values()), ended=ended)
        batch: dict[uuid.UUID, Usage] = dict(self._backlog)
        if everything:
            batch.update((u.id, u) for u in self._open.values() if self._written.get(u.id) != u.version())
        minutes: list[MinuteStats] = self.rollups.changed() if everything or closing else []
        if not batch and not minutes:
            return
        rows: list[ConnectionRecord] = []
        versions: dict[uuid.UUID, tuple[Any, ...]] = {}
        for usage in batch.values():  # copied on the loop: consistent counts
            try:
                rows.append(usage.snapshot())
            except Exception as exc:
                self._set_aside(usage, describe(exc))
                continue
            versions[usage.id] = usage.version()
        new = [r for r in rows if r.id not in self._written]
        changed = [r for r in rows if r.id in self._written]
        result: RoundResult = await database_sync_to_async(write_round)(
            new, changed, [m.as_dict(GATEWAY_NAME, json=False) for m in minutes]
        )
        for record_id, (outcome, error) in result.rows.items():
            self._settle(batch[record_id], versions[record_id], outcome, error)
        for stats, (outcome, error) in zip(minutes, result.minutes, strict=True):
            self._settle_minute(stats, outcome, error)
        self._report(result, len(rows))

    def _report(self, result: RoundResult, rows: int) -> None:
        """Log the database going away once, and its coming back; rows written one by one each time."""
        outcomes = Counter(outcome for outcome, _ in [*result.rows.values(), *result.minutes])
        away = bool(outcomes) and set(outcomes) == {Outcome.AWAY}
        if away and not self._away:
            error = next(e for _, e in [*result.rows.values(), *result.minutes])
            log.warning("usage: the database is away (%s); records wait in memory meanwhile", error)
        elif self._away and not away:
            log.warning("usage: the database answers again (%d records still wait)", len(self._backlog))
        elif result.one_by_one and not away:
            counts = {outcome.value: n for outcome, n in outcomes.items()}
            log.warning("usage write of %d records failed; written one by one: %s", rows, counts)
        self._away = away

    def _settle(self, usage: Usage, version: tuple[Any, ...], outcome: Outcome, error: str) -> None:
        if outcome is Outcome.WRITTEN:
            self._retries.pop(usage.id, None)
            if self._backlog.pop(usage.id, None) is not None:
                self._written.pop(usage.id, None)  # closed and written: done with it
            else:
                self._written[usage.id] = version
        elif outcome is Outcome.BAD or (outcome is Outcome.RETRY and self._retry(usage.id)):
            self._set_aside(usage, error)

    def _settle_minute(self, stats: MinuteStats, outcome: Outcome, error: str) -> None:
        key = ("minute", stats.app, stats.minute)
        if outcome is Outcome.WRITTEN:
            self._retries.pop(key, None)
            stats.dirty = False
        elif outcome is Outcome.BAD or (outcome is Outcome.RETRY and self._retry(key)):
            stats.dirty = False
            metrics.USAGE_FAILED.labels("minute").inc()
            log.error("usage minute of %r at %s set aside: %s", fit_text(stats.app, 80), stats.minute, error)

    def _retry(self, key: Any) -> bool:
        """Count a failure while the database answers; True when the row has had enough tries."""
        self._retries[key] += 1
        if self._retries[key] < MAX_RETRIES:
            return False
        del self._retries[key]
        return True

    def _keep(self, usage: Usage) -> None:
        """Into the backlog of closed connections, dropping the oldest when it is full."""
        if usage.id not in self._backlog and len(self._backlog) >= BACKLOG_LIMIT:
            dropped = next(iter(self._backlog))
            self._forget(dropped)
            self.lost += 1
            metrics.USAGE_LOST.inc()
            log.error("usage backlog full: dropped the record of connection %s", dropped)
        self._backlog[usage.id] = usage

    def _set_aside(self, usage: Usage, error: str) -> None:
        usage.set_aside = True
        self._forget(usage.id)
        self.set_aside.append((usage, error))
        metrics.USAGE_FAILED.labels("connection").inc()
        log.error(
            "usage record %s (user %s, app %r) set aside, the database refused it: %s",
            usage.id,
            fit_text(usage.user_id, 40),
            fit_text(usage.app, 80),
            error,
        )

    def _forget(self, record_id: uuid.UUID) -> None:
        for table in (self._open, self._backlog, self._written, self._retries):
            table.pop(record_id, None)


recorder = UsageRecorder()
