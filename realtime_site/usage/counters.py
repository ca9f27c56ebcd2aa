"""``Usage``: one connection's counters, bumped on the event loop by the consumer (no I/O), and the
``ConnectionRecord`` they become when the recorder writes them."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from realtime_site.usage.metrics import empty_buckets
from realtime_site.usage.models import ERROR_KEY_LENGTH, INT_MAX, ConnectionRecord, fit_float, fit_int, fit_text

__all__ = ["Usage"]


def _lengths() -> dict[str, int]:
    return {f.name: f.max_length for f in ConnectionRecord._meta.fields if getattr(f, "max_length", None)}


_LENGTH = _lengths()


@dataclass(eq=False)
class Usage:
    user_id: int
    app: str
    auth_method: str
    mode: str = "realtime"  # usage.models.Mode
    api_key_id: int | None = None
    token_id: str | None = None
    client_address: str = ""
    user_agent: str = ""
    gateway: str = ""
    username: str = ""  # empty: copied from the user's row at the first write, while it exists
    key_id: str = ""  # the API key's public id; empty: copied like the username
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
    set_aside: bool = False  # the database refused the record: no more writes

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
        """The record as the database will take it: texts cut to their columns, numbers in range."""

        def text(name: str) -> str:
            return fit_text(getattr(self, name), _LENGTH[name])

        return ConnectionRecord(
            id=self.id,
            user_id=int(self.user_id),
            username=text("username"),
            app=text("app"),
            auth_method=text("auth_method"),
            mode=text("mode"),
            api_key_id=None if self.api_key_id is None else int(self.api_key_id),
            key_id=text("key_id"),
            token_id=None if self.token_id is None else text("token_id"),
            gateway=text("gateway"),
            runner=text("runner"),
            started_at=self.started_at,
            ended_at=self.ended_at,
            close_code=None if self.close_code is None else fit_int(self.close_code, -INT_MAX - 1, INT_MAX),
            frames_in=fit_int(self.frames_in),
            results_out=fit_int(self.results_out),
            errors={fit_text(k, ERROR_KEY_LENGTH): fit_int(v) for k, v in self.errors.items()},
            frames_dropped=fit_int(self.frames_dropped),
            bytes_in=fit_int(self.bytes_in),
            bytes_out=fit_int(self.bytes_out),
            inference_seconds=round(fit_float(self.inference_seconds), 6),
            latency_buckets=[fit_int(n) for n in self.latency_buckets],
            client_address=text("client_address"),
            user_agent=text("user_agent"),
        )
