"""Revocation that cascades, in one place.

A revoked or deleted key takes every token it minted with it; a revoked or deleted token, and a
deactivated or deleted user, lose their live connections on every gateway process. Once the
database change is committed (so a client that reconnects at once is refused), ``credentials_revoked``
is sent; the gateway listens to it and closes the connections (accounts never import the gateway).

Bulk code revokes with :func:`revoke_keys` / :func:`revoke_tokens` (``QuerySet.update`` sends no
signal); single saves and deletes reach the same functions through ``accounts.signals``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet
from django.dispatch import Signal
from django.utils import timezone

from realtime_site.accounts.models import ApiKey, IssuedToken

__all__ = ["credentials_revoked", "keys_gone", "revoke_keys", "revoke_tokens", "tokens_gone", "user_gone"]

# Sent after the commit, with ``users`` (ids), ``keys`` (API key ids), ``tokens`` (jtis), all lists,
# and ``reason`` (what the client is told): every live connection of any of them must close.
credentials_revoked = Signal()


def revoke_keys(keys: QuerySet[ApiKey]) -> int:
    """Revoke the keys not yet revoked and the tokens they minted; close their connections. Returns
    how many keys were revoked."""
    now = timezone.now()
    with transaction.atomic():
        pks = list(keys.filter(revoked_at__isnull=True).values_list("pk", flat=True))
        ApiKey.objects.filter(pk__in=pks).update(revoked_at=now)
        keys_gone(pks, "revoked", now=now)
    return len(pks)


def revoke_tokens(tokens: QuerySet[IssuedToken]) -> int:
    """Revoke the tokens not yet revoked and close their connections. Returns how many."""
    with transaction.atomic():
        jtis = list(tokens.filter(revoked_at__isnull=True).values_list("jti", flat=True))
        IssuedToken.objects.filter(jti__in=jtis).update(revoked_at=timezone.now())
        tokens_gone(jtis, "revoked")
    return len(jtis)


def keys_gone(pks: Iterable[int], how: str, *, now: datetime | None = None) -> None:
    """The keys were revoked or are being deleted (``how``): revoke what they minted, and close the
    connections of the keys and of those tokens once committed."""
    pks = list(pks)
    if not pks:
        return
    minted = IssuedToken.objects.filter(api_key__in=pks, revoked_at__isnull=True)
    jtis = list(minted.values_list("jti", flat=True))
    IssuedToken.objects.filter(jti__in=jtis).update(revoked_at=now or timezone.now())

    def close() -> None:
        _announce(keys=pks, reason=f"this API key was {how}")
        _announce(tokens=jtis, reason=f"the API key that issued this token was {how}")

    transaction.on_commit(close)


def tokens_gone(jtis: Iterable[str], how: str) -> None:
    """The tokens were revoked or deleted (``how``): close their connections once committed."""
    jtis = list(jtis)
    if jtis:
        transaction.on_commit(lambda: _announce(tokens=jtis, reason=f"this token was {how}"))


def user_gone(user_id: int, how: str) -> None:
    """The user was deactivated or deleted (``how``): close all their sessions once committed."""
    transaction.on_commit(lambda: _announce(users=[user_id], reason=f"your account was {how}"))


def _announce(*, users: Iterable[int] = (), keys: Iterable[int] = (), tokens: Iterable[str] = (), reason: str) -> None:
    users, keys, tokens = list(users), list(keys), list(tokens)
    if users or keys or tokens:
        credentials_revoked.send(sender=ApiKey, users=users, keys=keys, tokens=tokens, reason=reason)
