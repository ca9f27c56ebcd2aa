"""Staff actions on live connections, on every gateway process, through the channel layer."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from realtime_site.gateway.admission import CloseCode
from realtime_site.gateway.groups import key_group, token_group, user_group
from realtime_site.protocol import ErrorCode

__all__ = ["close_key_connections", "close_token_connections", "close_user_connections"]


def _kick(group: str, error: ErrorCode, reason: str, close_code: int) -> None:
    layer = get_channel_layer()
    if layer is not None:
        message = {"type": "realtime.kick", "error": error.value, "reason": reason, "close_code": close_code}
        async_to_sync(layer.group_send)(group, message)


def close_user_connections(user_id: int, reason: str = "an administrator closed your sessions") -> None:
    _kick(user_group(user_id), ErrorCode.FORBIDDEN, reason, CloseCode.FORBIDDEN)


def close_key_connections(api_key_id: int) -> None:
    _kick(key_group(api_key_id), ErrorCode.UNAUTHORIZED, "this API key was revoked", CloseCode.UNAUTHORIZED)


def close_token_connections(jti: str) -> None:
    _kick(token_group(jti), ErrorCode.UNAUTHORIZED, "this token was revoked", CloseCode.UNAUTHORIZED)
