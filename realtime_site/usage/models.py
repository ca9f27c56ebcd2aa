"""One usage record per realtime connection."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models


class AuthMethod(models.TextChoices):
    JWT = "jwt", "realtime token"
    API_KEY = "api_key", "API key"
    SESSION = "session", "session cookie"


class ConnectionRecord(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="realtime_connections")
    app = models.CharField(max_length=200, help_text="owner/alias")
    auth_method = models.CharField(max_length=16, choices=AuthMethod.choices)
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="connections"
    )
    token = models.ForeignKey(
        "accounts.IssuedToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="connections"
    )
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
        indexes = [models.Index(fields=["user", "-started_at"]), models.Index(fields=["app", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.user} {self.app} {self.started_at:%Y-%m-%d %H:%M:%S}"

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
