"""API keys: creation (the secret is shown once), parsing of ``Authorization: Key``, checking."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from realtime_site.accounts.models import ApiKey

__all__ = ["KeyRefused", "authenticate_key", "create_api_key", "parse_key_header"]

_KEY = re.compile(r"^Key ([A-Za-z0-9_-]{1,32}):([A-Za-z0-9_-]{1,128})$")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often


class KeyRefused(Exception):
    """The key was malformed, unknown, wrong or revoked; the message says which."""


def _hash(secret: str) -> str:
    # Secrets are 256 random bits, so a fast hash suffices: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(user: AbstractBaseUser, name: str = "") -> tuple[ApiKey, str]:
    """Create a key; returns it and ``key_id:secret``, which is never stored or shown again."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(user=user, key_id=key_id, secret_hash=_hash(secret), name=name)
    return key, f"{key_id}:{secret}"


def parse_key_header(value: str | None) -> tuple[str, str]:
    if not value:
        raise KeyRefused("no API key: send Authorization: Key KEY_ID:KEY_SECRET")
    match = _KEY.match(value.strip())
    if not match:
        raise KeyRefused("malformed Authorization header: expected Key KEY_ID:KEY_SECRET")
    return match[1], match[2]


def authenticate_key(key_id: str, secret: str) -> ApiKey:
    """The active key matching ``key_id:secret`` (sync; touches the database)."""
    # One query: the key, its user and the user's limits (admission reads all three). ``get`` rather
    # than ``first``: the key id is unique, and no ORDER BY to build saves a quarter of the lookup.
    try:
        key = ApiKey.objects.select_related("user", "user__realtime_limits").get(key_id=key_id)
    except ApiKey.DoesNotExist:
        key = None
    if key is None or not hmac.compare_digest(key.secret_hash, _hash(secret)):
        raise KeyRefused("unknown API key or wrong secret")
    if key.revoked_at is not None:
        raise KeyRefused("this API key was revoked")
    if not key.user.is_active:
        raise KeyRefused("the key's user is inactive")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
