"""Who may open a realtime connection, to which app (docs/protocol.md section 4). Runs once at connect.

Credentials, in order: ``fal_jwt_token`` in the query; ``Authorization: Key id:secret``; the Django
session cookie, only from an allowed Origin (no cross-site WebSocket hijacking). A credential that
is present but bad is refused; it never falls through to the next kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.http.request import split_domain_port, validate_host

from realtime_site.accounts.failures import failures
from realtime_site.accounts.keys import KeyRefused, authenticate_key, parse_key_header
from realtime_site.accounts.models import ApiKey, IssuedToken
from realtime_site.accounts.tokens import TokenRefused, app_allowed, check_token
from realtime_site.gateway.limits import EffectiveLimits, load_limits
from realtime_site.protocol import (
    AppPath,
    CloseCode,
    ErrorCode,
    Refusal,
    SessionQuery,
    ValidationError,
    parse_app_path,
)
from realtime_site.usage.models import AuthMethod

__all__ = [
    "Admission",
    "admit",
    "admit_with_limits",
    "app_path_of",
    "has_credentials",
    "header",
    "origin_allowed",
    "revoked_since",
    "session_query",
]


@dataclass(frozen=True)
class Admission:
    user: AbstractBaseUser
    app_id: str
    sub_path: str
    auth_method: str
    session: SessionQuery  # max_buffering (None: the app's default), timings, previews
    api_key_id: int | None = None
    key_id: str = ""  # the API key's public id
    token_id: str | None = None


def app_path_of(scope: dict[str, Any]) -> AppPath:
    """The app id and sub-path, from the path as it was sent (``raw_path``): a percent-encoded
    ``/`` or anything else encoded is refused, never decoded into a different path."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"]
    try:
        return parse_app_path(path)
    except ValueError as exc:
        raise Refusal(ErrorCode.APP_UNAVAILABLE, str(exc), CloseCode.NOT_FOUND) from None


def session_query(scope: dict[str, Any]) -> SessionQuery:
    """The session's query parameters; a repeated one or a bad ``max_buffering`` is refused (4400)."""
    try:
        return SessionQuery.parse(scope.get("query_string", b"").decode("latin-1"))
    except ValidationError as exc:
        raise Refusal(exc.code, exc.reason, CloseCode.BAD_REQUEST) from None


def has_credentials(scope: dict[str, Any]) -> bool:
    """A token or a key is present (then the session is not even looked up)."""
    return b"fal_jwt_token=" in scope.get("query_string", b"") or header(scope, b"authorization") is not None


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """A request header of an ASGI scope, decoded as latin-1; None when absent."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(origin: str | None, scope: dict[str, Any] | None = None) -> bool:
    """The page's Origin, matched exactly (scheme, host and port).

    With ``REALTIME_ALLOWED_ORIGINS`` set, only those origins; otherwise only this site itself: the
    origin of the connection's own ``Host`` (an allowed host), over https when the connection is
    secure (``wss``, or the TLS proxy says so) and http otherwise.
    """
    if not origin or origin == "null":
        return False
    normal = _normal_origin(origin)
    if normal is None:
        return False
    if settings.REALTIME_ALLOWED_ORIGINS:
        return normal in {_normal_origin(o) for o in settings.REALTIME_ALLOWED_ORIGINS}
    host = header(scope or {}, b"host")
    if not host:
        return False
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if _is_secure(scope or {}) else "http"
    return normal == _normal_origin(f"{scheme}://{host}")


def _is_secure(scope: dict[str, Any]) -> bool:
    """wss, or behind the TLS proxy that ``SECURE_PROXY_SSL_HEADER`` trusts (as Django does for HTTP)."""
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not proxy:
        return False
    name, value = proxy
    wanted = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
    given = header(scope, wanted)
    return given is not None and given.split(",")[0].strip() == value


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _normal_origin(origin: str) -> str | None:
    """``scheme://host:port`` in lower case with the port always written; None if it is not an origin."""
    try:
        url = urlsplit(origin.strip())
        port = url.port or _DEFAULT_PORTS.get(url.scheme.lower())
    except ValueError:
        return None
    scheme = url.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not url.hostname or url.path not in ("", "/") or url.query or url.username:
        return None
    return f"{scheme}://{url.hostname.lower()}:{port}"


def _unauthorized(reason: str) -> Refusal:
    return Refusal(ErrorCode.UNAUTHORIZED, reason, CloseCode.UNAUTHORIZED)


def _forbidden(reason: str) -> Refusal:
    return Refusal(ErrorCode.FORBIDDEN, reason, CloseCode.FORBIDDEN)


def admit(scope: dict[str, Any], session_user: AbstractBaseUser | None, path: AppPath | None = None) -> Admission:
    """Admit or refuse (sync: runs in the database thread; at most a few indexed reads). ``path``: the
    app and path when they are not the request's own (an HTTP call names the app in its route)."""
    path = path or app_path_of(scope)
    app_id, alias = path.app_id, path.alias
    query = session_query(scope)
    common = {"app_id": app_id, "sub_path": path.sub_path, "session": query}
    token = query.fal_jwt_token
    authorization = header(scope, b"authorization")
    address = str((scope.get("client") or ("",))[0])  # the proxy's client with daphne's --proxy-headers
    if token is not None or authorization is not None:
        wait = failures.blocked(address)
        if wait is not None:  # refused before the credential is even looked at
            raise Refusal(ErrorCode.RATE_LIMITED, failures.describe(wait), CloseCode.TOO_MANY)
    if token is not None:
        try:
            grant, record = check_token(token, alias)
        except TokenRefused as exc:
            if not exc.forbidden:  # a valid token for another app guesses nothing
                failures.record(address)
            raise (_forbidden(exc.reason) if exc.forbidden else _unauthorized(exc.reason)) from None
        return Admission(record.user, auth_method=AuthMethod.JWT, token_id=grant.jti, **common)
    if authorization is not None:
        try:
            key = authenticate_key(*parse_key_header(authorization))
        except KeyRefused as exc:
            failures.record(address)
            raise _unauthorized(str(exc)) from None
        if not app_allowed(key.user, alias):
            raise _forbidden(f"not allowed to use app {app_id!r}")
        return Admission(key.user, auth_method=AuthMethod.API_KEY, api_key_id=key.pk, key_id=key.key_id, **common)
    if session_user is not None:
        origin = header(scope, b"origin")
        if not origin_allowed(origin, scope):
            raise _forbidden(f"a session may only connect from this site's pages, not from origin {origin!r}")
        if not app_allowed(session_user, alias):
            raise _forbidden(f"not allowed to use app {app_id!r}")
        return Admission(session_user, auth_method=AuthMethod.SESSION, **common)
    raise _unauthorized("no credentials: send fal_jwt_token, an Authorization: Key header, or log in")


def admit_with_limits(
    scope: dict[str, Any], session_user: AbstractBaseUser | None, path: AppPath | None = None
) -> tuple[Admission, EffectiveLimits]:
    """Admission and the user's limits in one trip to the database thread."""
    admission = admit(scope, session_user, path)
    return admission, load_limits(admission.user)


def revoked_since(admission: Admission) -> str | None:
    """Why the credential admitted a moment ago no longer holds, or None (sync; one small read).

    Asked once more after the connection has joined its staff groups: a revocation committed
    between the first check and the join sent its close to groups this connection was not in yet.
    """
    from django.contrib.auth import get_user_model

    if not get_user_model().objects.filter(pk=admission.user.pk, is_active=True).exists():
        return "the user was deactivated or deleted"
    keys = ApiKey.objects.filter(pk=admission.api_key_id, revoked_at__isnull=True)
    if admission.api_key_id is not None and not keys.exists():
        return "this API key was revoked"
    if admission.token_id is not None:
        live = IssuedToken.objects.filter(jti=admission.token_id, revoked_at__isnull=True).exclude(
            api_key__revoked_at__isnull=False
        )
        if not live.exists():
            return "this token was revoked"
    return None
