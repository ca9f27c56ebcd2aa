"""Usage counting off the frame path.

Each connection owns a ``Usage``: plain counters that the consumer bumps on the event loop (no I/O).
One writer task per process turns them into ``ConnectionRecord`` rows through the database thread:

- a closing connection's record is written at once; closes that arrive together share one write;
- every ``USAGE_FLUSH_INTERVAL`` seconds, the open connections whose counts changed are written
  with one ``executemany`` (the ORM's ``bulk_update`` builds a CASE per column and cost 70-100 ms of
  held interpreter lock for 100 rows here, stalling every connection's frames);
- a write that fails (the database away) is kept and tried again on the next round; what does not
  fit the bounded backlog is counted and logged, never silently lost.

``close`` shields the write, so a connection cancelled at server shutdown still gets its record,
and ``drain`` waits until everything handed over is written.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from realtime_site.usage.models import AppMinute, ConnectionRecord
from realtime_site.usage.rollups import MinuteStats, Rollups, empty_buckets

__all__ = ["GATEWAY_NAME", "LIVE_GROUP", "Usage", "UsageRecorder", "recorder"]

GATEWAY_NAME = f"{socket.gethostname()}:{os.getpid()}"
LIVE_GROUP = "usage-live"  # the staff dashboard listens here
LIVE_INTERVAL = 2.0  # seconds between rollups sent to the dashboard

log = logging.getLogger("realtime_site.usage")

# Columns that change after a record is created.
_MUTABLE = (
    "runner",
    "ended_at",
    "close_code",
    "frames_in",
    "results_out",
    "errors",
    "frames_dropped",
    "bytes_in",
    "bytes_out",
    "inference_seconds",
    "latency_buckets",
)
BACKLOG_LIMIT = 10_000  # records kept in memory while the database cannot be written


@dataclass(eq=False)
class Usage:
    user_id: int
    app: str
    auth_method: str
    api_key_id: int | None = None
    token_id: str | None = None
    client_address: str = ""
    user_agent: str = ""
    gateway: str = ""
    runner: str = ""
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    started_at: datetime = field(default_factory=timezone.now)
    ended_at: datetime | None = None
    close_code: int | None = None
    frames_in: int = 0
    results_out: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    frames_dropped: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    inference_seconds: float = 0.0
    latency_buckets: list[int] = field(default_factory=empty_buckets)

    def version(self) -> tuple[Any, ...]:
        """Changes whenever a counter does: a record is rewritten only when it differs."""
        return (
            self.frames_in,
            self.results_out,
            self.errors.total(),
            self.frames_dropped,
            self.bytes_out,
            self.runner,
            self.ended_at,
        )

    def snapshot(self) -> ConnectionRecord:
        return ConnectionRecord(
            id=self.id,
            user_id=self.user_id,
            app=self.app,
            auth_method=self.auth_method,
            api_key_id=self.api_key_id,
            token_id=self.token_id,
            gateway=self.gateway,
            runner=self.runner,
            started_at=self.started_at,
            ended_at=self.ended_at,
            close_code=self.close_code,
            frames_in=self.frames_in,
            results_out=self.results_out,
            errors=dict(self.errors),
            frames_dropped=self.frames_dropped,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            inference_seconds=round(self.inference_seconds, 6),
            latency_buckets=list(self.latency_buckets),
            client_address=self.client_address[:100],
            user_agent=self.user_agent[:300],
        )


def write_records(
    new: list[ConnectionRecord], changed: list[ConnectionRecord], minutes: list[dict[str, Any]] = ()
) -> None:
    """Insert ``new``, update ``changed`` and the minute rollups in one transaction (the database thread)."""
    with transaction.atomic():
        for minute in minutes:
            key = {"app": minute["app"], "minute": minute["minute"], "gateway": minute["gateway"]}
            values = {k: minute[k] for k in ("frames_in", "results_out", "errors", "latency_buckets")}
            AppMinute.objects.update_or_create(**key, defaults=values)
        if new:
            ConnectionRecord.objects.bulk_create(new)
        if changed:
            meta = ConnectionRecord._meta
            fields = [meta.get_field(name) for name in _MUTABLE]
            columns = ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in fields)
            pk = meta.pk
            sql = f"UPDATE {connection.ops.quote_name(meta.db_table)} SET {columns} WHERE {pk.column} = %s"
            params = [
                [f.get_db_prep_value(getattr(row, f.attname), connection) for f in fields]
                + [pk.get_db_prep_value(row.pk, connection)]
                for row in changed
            ]
            with connection.cursor() as cursor:
                cursor.executemany(sql, params)


class UsageRecorder:
    def __init__(self) -> None:
        self._open: dict[uuid.UUID, Usage] = {}
        self._written: dict[uuid.UUID, tuple[Any, ...]] = {}  # rows in the database, by last version
        self._closing: list[tuple[Usage, asyncio.Future[None]]] = []
        self._backlog: collections.deque[Usage] = collections.deque()  # closed, not yet written
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self.rollups = Rollups()
        self.lost = 0  # records dropped because the backlog was full

    # -- API for consumers ----------------------------------------------------------------------

    def open(self, usage: Usage) -> None:
        self._open[usage.id] = usage
        self._ensure_writer()

    async def close(self, usage: Usage, close_code: int | None) -> None:
        """Mark the connection ended; returns once its record is written (or kept for a retry)."""
        if usage.ended_at is None:
            usage.ended_at = timezone.now()
            usage.close_code = close_code
        future = self._ensure_writer().create_future()
        self._closing.append((usage, future))
        self._signal()
        await asyncio.shield(future)

    async def flush(self) -> None:
        """Write every open connection now."""
        future = self._ensure_writer().create_future()
        self._flush_waiters.append(future)
        self._signal()
        await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait until every close handed over so far is written (at shutdown)."""
        while self._closing or self._backlog:
            await self.flush()
            if self._backlog:
                await asyncio.sleep(0.5)

    def live(self) -> list[Usage]:
        return list(self._open.values())

    # -- the writer -----------------------------------------------------------------------------

    def _ensure_writer(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done() or self._writer.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._writer = loop.create_task(self._run())
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
        ended = [*self._backlog, *(u for u, _ in closing)]
        batch: dict[uuid.UUID, Usage] = {u.id: u for u in self._backlog}
        batch.update((u.id, u) for u, _ in closing)
        if everything:
            batch.update((u.id, u) for u in self._open.values() if self._written.get(u.id) != u.version())
        self.rollups.tick(list(self._open.values()), ended=[u for u, _ in closing])
        minutes: list[MinuteStats] = self.rollups.changed() if everything or closing else []
        if batch or minutes:
            versions = {uid: u.version() for uid, u in batch.items()}
            rows = [u.snapshot() for u in batch.values()]  # copied on the loop: consistent counts
            new = [r for r in rows if r.id not in self._written]
            changed = [r for r in rows if r.id in self._written]
            try:
                await database_sync_to_async(write_records)(
                    new, changed, [m.as_dict(GATEWAY_NAME, json=False) for m in minutes]
                )
                for stats in minutes:
                    stats.dirty = False
            except Exception:
                log.exception("usage write failed for %d records; keeping them for the next round", len(rows))
                self._keep_for_retry([u for u, _ in closing])
            else:
                self._written.update(versions)
                self._backlog.clear()
                for usage in ended:
                    self._open.pop(usage.id, None)
                    self._written.pop(usage.id, None)
        for _, future in closing:
            if not future.done():
                future.set_result(None)
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _keep_for_retry(self, closed: list[Usage]) -> None:
        for usage in closed:
            self._open.pop(usage.id, None)
            if len(self._backlog) >= BACKLOG_LIMIT:
                dropped = self._backlog.popleft()
                self.lost += 1
                log.error("usage backlog full: dropped the record of connection %s", dropped.id)
            self._backlog.append(usage)


recorder = UsageRecorder()
