"""Credentials admitted a moment ago, so that a reconnect starts relaying without the database.

A connection with the same credential (the same ``Authorization`` header, token or session cookie)
for the same app as one admitted from the database in the last ``REALTIME_ADMISSION_CACHE_SECONDS``
is admitted from here, in the event loop. The database then confirms it behind the first frames
(the consumer's ``_confirm``): a refusal there closes the connection as admission would have refused
it, and forgets the entry.

Revocation stays immediate: every revocation reaches every gateway process (``admission_feed``),
which forgets the entries of those users, keys and tokens; while a process cannot hear them (its
channel layer away), nothing is served from here. What the entry cannot know is checked on every
hit: a token's expiry and a session's Origin.

Per process, in memory, bounded (``max_entries``, the least recently admitted forgotten first);
entries are keyed by a digest of the credential, never the credential itself.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import jwt

from realtime_site.gateway.admission import Admission, header, origin_allowed, session_query
from realtime_site.gateway.limits import EffectiveLimits
from realtime_site.protocol import AppPath
from realtime_site.usage.models import AuthMethod

__all__ = ["AdmissionCache", "admission_cache", "credential_of", "reset_admission_cache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    admission: Admission  # its session query and sub-path are the first connection's
    limits: EffectiveLimits
    expires: float  # on the cache's clock
    token_valid_until: float | None = None  # a token's exp claim and the leeway, in epoch seconds


def credential_of(scope: dict[str, Any]) -> tuple[str, str] | None:
    """The credential admission would use, as (kind, value): token, key or session; None without one."""
    query = session_query(scope)
    if query.fal_jwt_token is not None:
        return AuthMethod.JWT.value, query.fal_jwt_token
    authorization = header(scope, b"authorization")
    if authorization is not None:
        return AuthMethod.API_KEY.value, authorization
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    return (AuthMethod.SESSION.value, key) if key else None


def _digest(kind: str, credential: str, alias: str) -> str:
    return hashlib.sha256(f"{kind}\0{alias}\0{credential}".encode()).hexdigest()


class AdmissionCache:
    def __init__(self, seconds: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self.max_entries = max_entries
        self.clock = clock
        self.listening = False  # set by the feed while this process hears every revocation
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    @property
    def serving(self) -> bool:
        return self.seconds > 0 and self.listening

    def lookup(self, scope: dict[str, Any], path: AppPath) -> tuple[Admission, EffectiveLimits] | None:
        """The cached admission of this connection's credential for its app, or None (then the
        database decides). Raises ``Refusal`` for what the database would not change: a repeated
        query parameter, an expired or forged token (refused as admission refuses them)."""
        if not self.serving:
            return None
        credential = credential_of(scope)
        if credential is None:
            return None
        kind, value = credential
        key = _digest(kind, value, path.alias)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            del self._entries[key]
            return None
        if kind == AuthMethod.SESSION.value and not origin_allowed(header(scope, b"origin"), scope):
            return None  # the database path refuses it, and says why
        if entry.token_valid_until is not None and time.time() >= entry.token_valid_until:
            return None  # expired: the database path refuses it, and says so
        admission = replace(entry.admission, sub_path=path.sub_path, session=session_query(scope))
        return admission, entry.limits

    def store(self, scope: dict[str, Any], path: AppPath, admission: Admission, limits: EffectiveLimits) -> None:
        """Remember an admission the database just made (or confirmed)."""
        if self.seconds <= 0:
            return
        credential = credential_of(scope)
        if credential is None:
            return
        key = _digest(*credential, path.alias)
        self._entries.pop(key, None)
        kind, value = credential
        valid_until = _token_valid_until(value) if kind == AuthMethod.JWT.value else None
        self._entries[key] = _Entry(admission, limits, self.clock() + self.seconds, valid_until)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def discard(self, scope: dict[str, Any], path: AppPath) -> None:
        """Forget this connection's credential for its app (the database refused it)."""
        credential = credential_of(scope)
        if credential is not None:
            self._entries.pop(_digest(*credential, path.alias), None)

    def forget(self, *, users: Iterable[int] = (), keys: Iterable[int] = (), tokens: Iterable[str] = ()) -> int:
        """Forget every entry of these users, API keys (ids) or tokens (jtis); how many went."""
        users, keys, tokens = set(users), set(keys), set(tokens)
        gone = [
            key
            for key, entry in self._entries.items()
            if entry.admission.user.pk in users
            or entry.admission.api_key_id in keys
            or entry.admission.token_id in tokens
        ]
        for key in gone:
            del self._entries[key]
        return len(gone)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _token_valid_until(token: str) -> float:
    """Until when a token that admission has just checked stays valid (its signature was checked)."""
    from django.conf import settings

    claims = jwt.decode(token, options={"verify_signature": False})
    return float(claims["exp"]) + settings.REALTIME_JWT_LEEWAY


_shared: AdmissionCache | None = None


def admission_cache() -> AdmissionCache:
    """This process's cache."""
    global _shared
    if _shared is None:
        from django.conf import settings

        _shared = AdmissionCache(settings.REALTIME_ADMISSION_CACHE_SECONDS)
    return _shared


def reset_admission_cache() -> None:
    """Forget the cache and the settings it was made with (tests change the settings)."""
    global _shared
    _shared = None
