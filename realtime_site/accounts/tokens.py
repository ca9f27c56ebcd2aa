"""Realtime tokens (docs/protocol.md section 4): short-lived HS256 JWTs naming the app aliases they allow.

Claims: ``sub`` (user id), ``apps`` (aliases), ``iat``, ``nbf``, ``exp``, ``jti``, ``iss``. Every
issued token is recorded (``IssuedToken``) so it can be revoked by ``jti``; a token we have no
record of is refused even when its signature is right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from realtime_site.accounts.models import ApiKey, IssuedToken, UserLimits

__all__ = [
    "ALIAS",
    "TokenRefused",
    "app_allowed",
    "check_token",
    "decode_token",
    "issue_token",
    "token_lifetime",
]

ISSUER = "realtime-site"
ALGORITHM = "HS256"
ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_APPS_PER_TOKEN = 20


class TokenRefused(Exception):
    """The token cannot be used; ``reason`` says why, ``forbidden`` for a valid token for another app."""

    def __init__(self, reason: str, *, forbidden: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.forbidden = forbidden


@dataclass(frozen=True)
class TokenGrant:
    jti: str
    user_id: int  # the ``sub`` claim; check_token requires it to be the user of the token's record
    apps: tuple[str, ...]


def signing_key() -> str:
    if settings.REALTIME_JWT_SECRET:
        return settings.REALTIME_JWT_SECRET
    return hmac.new(settings.SECRET_KEY.encode(), b"realtime-jwt-signing-key", hashlib.sha256).hexdigest()


def token_lifetime(requested: Any) -> int:
    """The requested lifetime in seconds, capped by REALTIME_TOKEN_MAX_LIFETIME; ValueError names problems."""
    cap = settings.REALTIME_TOKEN_MAX_LIFETIME
    if requested is None:
        return cap
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ValueError("token_expiration must be a positive integer (seconds)")
    return min(requested, cap)


def limits_of(user: AbstractBaseUser) -> UserLimits | None:
    """The user's limits row, or None: read once per user object (``select_related`` may have)."""
    try:
        return user.realtime_limits  # type: ignore[attr-defined]
    except UserLimits.DoesNotExist:
        return None


def app_allowed(user: AbstractBaseUser, alias: str) -> bool:
    limits = limits_of(user)
    return not limits or not limits.allowed_apps or alias in limits.allowed_apps


def issue_token(user: AbstractBaseUser, apps: list[str], lifetime: int, *, api_key: ApiKey | None = None) -> str:
    """Sign and record a token (sync; one database write)."""
    now = timezone.now()
    jti = secrets.token_hex(16)
    expires = now + timedelta(seconds=lifetime)
    IssuedToken.objects.create(
        jti=jti,
        user=user,
        apps=apps,
        source=IssuedToken.Source.API_KEY if api_key else IssuedToken.Source.SESSION,
        api_key=api_key,
        issued_at=now,
        expires_at=expires,
    )
    claims = {
        "sub": str(user.pk),
        "apps": apps,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": jti,
        "iss": ISSUER,
    }
    return jwt.encode(claims, signing_key(), algorithm=ALGORITHM)


def decode_token(token: str) -> TokenGrant:
    """Check signature, algorithm, issuer and times (no database)."""
    try:
        claims = jwt.decode(
            token,
            signing_key(),
            algorithms=[ALGORITHM],  # never "none", never what the header asks for
            issuer=ISSUER,
            leeway=settings.REALTIME_JWT_LEEWAY,
            options={"require": ["sub", "apps", "exp", "iat", "nbf", "jti", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("token expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenRefused("token not yet valid") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("token signature is invalid") from None
    except jwt.InvalidAlgorithmError:
        raise TokenRefused("token algorithm is not allowed") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused(f"token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRefused(f"token is invalid ({type(exc).__name__})") from None
    apps = claims["apps"]
    if not isinstance(apps, list) or not all(isinstance(a, str) for a in apps):
        raise TokenRefused("token's apps claim is not a list of app names")
    try:
        user_id = int(claims["sub"])
    except (TypeError, ValueError):
        raise TokenRefused("token's sub claim is not a user id") from None
    return TokenGrant(jti=str(claims["jti"]), user_id=user_id, apps=tuple(apps))


def check_token(token: str, alias: str) -> tuple[TokenGrant, IssuedToken]:
    """Decode, then check the app, the token's record and its minting key (sync; one read: record, user,
    limits, key)."""
    grant = decode_token(token)
    if alias not in grant.apps:
        raise TokenRefused(f"token does not allow app {alias!r} (it allows: {', '.join(grant.apps)})", forbidden=True)
    try:  # the user's limits with it: admission reads them next
        record = IssuedToken.objects.select_related("user", "user__realtime_limits", "api_key").get(jti=grant.jti)
    except IssuedToken.DoesNotExist:
        raise TokenRefused("token was not issued by this server") from None
    if record.revoked_at is not None:
        raise TokenRefused("token was revoked")
    if record.user_id != grant.user_id:  # signed by us, yet naming another user than its record
        raise TokenRefused("token's sub claim does not match the token it names")
    # A key takes its tokens with it, even where the cascade has not reached (a bulk update, a race).
    if record.source == IssuedToken.Source.API_KEY and record.api_key is None:
        raise TokenRefused("the API key that issued this token was deleted")
    if record.api_key is not None and record.api_key.revoked_at is not None:
        raise TokenRefused("the API key that issued this token was revoked")
    if not record.user.is_active:
        raise TokenRefused("the token's user is inactive")
    return grant, record
