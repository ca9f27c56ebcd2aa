"""Staff actions on live connections, on every gateway process, through the channel layer.

Callable from any sync context: an admin view (a worker thread under daphne, whose loop runs the
send), ``manage.py shell`` (no loop: one is made for the send), or a thread that runs an event loop
(the send is scheduled on it). A channel-layer failure (Redis away) never reaches the caller: it is
logged, and the connections concerned stay open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, get_channel_layer

from realtime_site.gateway.admission_feed import GROUP, forget_message
from realtime_site.gateway.groups import key_group, token_group, user_group
from realtime_site.protocol import CloseCode, ErrorCode

__all__ = [
    "close_groups",
    "close_key_connections",
    "close_revoked",
    "close_token_connections",
    "close_user_connections",
    "forget_everywhere",
]

log = logging.getLogger("realtime_site.gateway")
SEND_TIMEOUT = 5.0  # seconds for one batch of group sends; then the layer counts as away
BATCH = 100  # group sends in flight at once
_scheduled: set[asyncio.Task[None]] = set()  # sends scheduled on a running loop, kept until done


async def _send(layer: BaseChannelLayer, groups: list[str], message: dict[str, Any]) -> None:
    for start in range(0, len(groups), BATCH):
        batch = groups[start : start + BATCH]
        sends = asyncio.gather(*(layer.group_send(group, message) for group in batch), return_exceptions=True)
        for outcome in await asyncio.wait_for(sends, SEND_TIMEOUT):
            if isinstance(outcome, BaseException):
                raise outcome


async def _send_logged(layer: BaseChannelLayer, groups: list[str], message: dict[str, Any]) -> None:
    try:
        await _send(layer, groups, message)
    except Exception as exc:
        _log_failure(groups, exc)


def _log_failure(groups: list[str], exc: BaseException) -> None:
    log.warning(
        "could not close the live connections of %d group(s): channel layer failed (%s: %.200s)",
        len(groups),
        type(exc).__name__,
        exc,
    )


def close_groups(groups: Iterable[str], error: ErrorCode, reason: str, close_code: int) -> None:
    """Tell every connection in ``groups`` why, then close it with ``close_code``; never raises."""
    names = list(dict.fromkeys(groups))
    if not names:
        return
    try:
        layer = get_channel_layer()
    except Exception as exc:  # a misconfigured layer must not break an admin action either
        _log_failure(names, exc)
        return
    if layer is None:
        return
    message = {"type": "realtime.kick", "error": error.value, "reason": reason, "close_code": int(close_code)}
    _deliver(layer, names, message)


def _deliver(layer: BaseChannelLayer, names: list[str], message: dict[str, Any]) -> None:
    """Send ``message`` to the groups ``names`` from this sync or async context; never raises."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        try:
            async_to_sync(_send)(layer, names, message)
        except Exception as exc:
            _log_failure(names, exc)
        return
    task = loop.create_task(_send_logged(layer, names, message))
    _scheduled.add(task)
    task.add_done_callback(_scheduled.discard)


def close_user_connections(
    user_id: int,
    reason: str = "an administrator closed your sessions",
    *,
    error: ErrorCode = ErrorCode.FORBIDDEN,
    close_code: int = CloseCode.FORBIDDEN,
) -> None:
    close_groups([user_group(user_id)], error, reason, close_code)


def close_key_connections(api_key_id: int, reason: str = "this API key was revoked") -> None:
    close_groups([key_group(api_key_id)], ErrorCode.UNAUTHORIZED, reason, CloseCode.UNAUTHORIZED)


def close_token_connections(jti: str, reason: str = "this token was revoked") -> None:
    close_groups([token_group(jti)], ErrorCode.UNAUTHORIZED, reason, CloseCode.UNAUTHORIZED)


def close_revoked(
    sender: Any, *, users: list[int], keys: list[int], tokens: list[str], reason: str, **kwargs: Any
) -> None:
    """``accounts.revocation.credentials_revoked``: close those credentials' connections (4401)."""
    groups = [user_group(u) for u in users] + [key_group(k) for k in keys] + [token_group(t) for t in tokens]
    forget_everywhere(users, keys, tokens)
    close_groups(groups, ErrorCode.UNAUTHORIZED, reason, CloseCode.UNAUTHORIZED)


def forget_everywhere(users: list[int], keys: list[int], tokens: list[str]) -> None:
    """Every gateway process forgets these credentials' cached admissions (``admission_feed``)."""
    if not (users or keys or tokens):
        return
    try:
        layer = get_channel_layer()
    except Exception as exc:
        _log_failure([GROUP], exc)
        return
    if layer is not None:
        _deliver(layer, [GROUP], forget_message(list(users), list(keys), list(tokens)))
