"""One usage record per realtime connection, and per-app minutes for the dashboard.

A record outlives the rows it points to: the user, the API key and the token are kept as plain
columns (their ids, with the username and the key's public ``key_id`` copied in), not foreign keys.
Deleting a token, a key or a user in the middle of a connection can therefore never make the
record's insert or update fail, and deleting a user keeps their usage history: the records stay,
listed under the username they had (the staff summary of users only shows users that still exist).
"""

from __future__ import annotations

import math
import uuid

from django.contrib.auth import get_user_model
from django.db import models

__all__ = ["AppMinute", "AuthMethod", "ConnectionRecord", "UserUsage", "fit_text"]

BIGINT_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
ERROR_KEY_LENGTH = 64  # error codes, the keys of the ``errors`` JSON


class AuthMethod(models.TextChoices):
    JWT = "jwt", "realtime token"
    API_KEY = "api_key", "API key"
    SESSION = "session", "session cookie"


class Mode(models.TextChoices):
    REALTIME = "realtime", "realtime (WebSocket)"
    STREAM = "stream", "stream (HTTP, server-sent events)"
    RUN = "run", "run (HTTP, one result)"
    ROOM = "room", "room (a shared room's frames)"


class ConnectionRecord(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user_id = models.IntegerField(db_index=True, help_text="the user's id; kept when the user is deleted")
    username = models.CharField(max_length=150, blank=True, help_text="the username when the connection was made")
    app = models.CharField(max_length=200, help_text="owner/alias")
    auth_method = models.CharField(max_length=16, choices=AuthMethod.choices)
    mode = models.CharField(
        max_length=8,
        choices=Mode.choices,
        default=Mode.REALTIME,
        help_text="WebSocket or HTTP",
    )
    api_key_id = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="the API key's id")
    key_id = models.CharField(max_length=32, blank=True, help_text="the API key's public id")
    token_id = models.CharField(max_length=32, null=True, blank=True, db_index=True, help_text="the token's jti")
    gateway = models.CharField(max_length=100, blank=True, help_text="host:pid of the gateway process")
    runner = models.CharField(max_length=200, blank=True, help_text="the last runner used")
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    close_code = models.IntegerField(null=True, blank=True)
    frames_in = models.PositiveBigIntegerField(default=0)
    results_out = models.PositiveBigIntegerField(default=0)
    errors = models.JSONField(default=dict, blank=True, help_text="error code -> count")
    frames_dropped = models.PositiveBigIntegerField(default=0, help_text="displaced by newer inputs in the buffer")
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    inference_seconds = models.FloatField(default=0.0)
    latency_buckets = models.JSONField(
        default=list, blank=True, help_text="result latency counts per bucket (see usage.metrics)"
    )
    client_address = models.CharField(max_length=100, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["user_id", "-started_at"]), models.Index(fields=["app", "-started_at"])]
        permissions = [("view_runners", "Can view the runners page")]

    def __str__(self) -> str:
        return f"{self.username or f'user #{self.user_id}'} {self.app} {self.started_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def max_length(cls, name: str) -> int:
        return cls._meta.get_field(name).max_length

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


class AppMinute(models.Model):
    """One app's traffic in one minute through one gateway process: what the dashboard plots."""

    app = models.CharField(max_length=200)
    minute = models.DateTimeField(db_index=True)
    gateway = models.CharField(max_length=100)
    frames_in = models.PositiveBigIntegerField(default=0)
    results_out = models.PositiveBigIntegerField(default=0)
    errors = models.JSONField(default=dict, blank=True)
    latency_buckets = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "minute", "gateway"], name="one_row_per_app_minute")]

    def __str__(self) -> str:
        return f"{self.app} {self.minute:%Y-%m-%d %H:%M} {self.gateway}"


class UserUsage(get_user_model()):
    """The users, seen from their usage (a proxy: no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "user summary"
        verbose_name_plural = "user summaries"


def fit_text(value: object, max_length: int) -> str:
    """``value`` as text any database stores: no NUL, no lone surrogates, at most ``max_length`` characters."""
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:max_length]


def fit_int(value: object, low: int = 0, high: int = BIGINT_MAX) -> int:
    return min(max(int(value), low), high)


def fit_float(value: object) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0
