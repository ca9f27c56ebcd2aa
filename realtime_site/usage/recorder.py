"""Usage counting off the frame path.

Each connection owns a ``Usage``: plain counters that the consumer bumps on the event loop (no I/O).
The process-wide ``UsageRecorder`` writes them in batches from the event loop's side through one
database thread: open connections every ``USAGE_FLUSH_INTERVAL`` seconds, a closing connection at
once (its ``close`` waits for the write), and everything still open when the process shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from realtime_site.usage.models import ConnectionRecord

__all__ = ["Usage", "UsageRecorder", "recorder"]

log = logging.getLogger("realtime_site.usage")

_COUNTERS = (
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
)


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
            client_address=self.client_address[:100],
            user_agent=self.user_agent[:300],
        )


class UsageRecorder:
    def __init__(self) -> None:
        self._open: dict[uuid.UUID, Usage] = {}
        self._written: set[uuid.UUID] = set()  # rows that exist in the database
        self._lock: asyncio.Lock | None = None
        self._ticker: asyncio.Task[None] | None = None

    def open(self, usage: Usage) -> None:
        self._open[usage.id] = usage
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def close(self, usage: Usage, close_code: int | None) -> None:
        """Mark the connection ended and wait until its record is written."""
        if usage.ended_at is None:
            usage.ended_at = timezone.now()
            usage.close_code = close_code
        await self.flush([usage])
        self._open.pop(usage.id, None)
        self._written.discard(usage.id)

    async def flush(self, extra: list[Usage] | None = None) -> None:
        """Write every open connection's counts (and ``extra``) in one transaction."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            batch = {u.id: u for u in [*self._open.values(), *(extra or [])]}
            if not batch:
                return
            rows = [u.snapshot() for u in batch.values()]  # copied on the loop: counts are consistent
            await database_sync_to_async(self._write)(rows)

    def _write(self, rows: list[ConnectionRecord]) -> None:
        new = [r for r in rows if r.id not in self._written]
        old = [r for r in rows if r.id in self._written]
        with transaction.atomic():
            if new:
                ConnectionRecord.objects.bulk_create(new)
            if old:
                ConnectionRecord.objects.bulk_update(old, _COUNTERS)
        self._written.update(r.id for r in new)

    async def _tick(self) -> None:
        while self._open:
            await asyncio.sleep(settings.USAGE_FLUSH_INTERVAL)
            try:
                await self.flush()
            except Exception:  # the database may be away for a while; counts stay in memory
                log.exception("usage flush failed; will retry")

    def live(self) -> list[Usage]:
        return list(self._open.values())

    def stats(self) -> dict[str, Any]:
        return {"open_connections": len(self._open)}


recorder = UsageRecorder()
