"""API keys, issued realtime tokens, and per-user limits."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """A server-side credential, ``key_id:secret``. Only a hash of the secret is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    key_id = models.CharField(max_length=32, unique=True)
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 of the secret, hex")
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.key_id} ({self.user})"


class IssuedToken(models.Model):
    """A realtime JWT we issued; ``jti`` identifies it for revocation and usage."""

    class Source(models.TextChoices):
        API_KEY = "api_key", "API key (POST /tokens/)"
        SESSION = "session", "browser session"

    jti = models.CharField(max_length=32, primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="realtime_tokens")
    apps = models.JSONField(help_text="app aliases the token allows")
    source = models.CharField(max_length=16, choices=Source.choices)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="tokens")
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "-issued_at"])]

    def __str__(self) -> str:
        return self.jti


class UserLimits(models.Model):
    """Per-user overrides of the gateway's limits; an empty field means the site default."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="realtime_limits"
    )
    max_connections = models.PositiveIntegerField(null=True, blank=True)
    frames_per_minute = models.PositiveIntegerField(null=True, blank=True)
    daily_frame_quota = models.PositiveIntegerField(null=True, blank=True)
    allowed_apps = models.JSONField(
        default=list, blank=True, help_text="app aliases this user may use; empty: every app"
    )

    class Meta:
        verbose_name_plural = "user limits"

    def __str__(self) -> str:
        return f"limits of {self.user}"
