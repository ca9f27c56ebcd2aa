"""Channel-layer group names by which staff actions reach live connections on every gateway process."""

from __future__ import annotations

__all__ = ["key_group", "token_group", "user_group"]


def user_group(user_id: int) -> str:
    return f"realtime-user-{user_id}"


def key_group(api_key_id: int) -> str:
    return f"realtime-key-{api_key_id}"


def token_group(jti: str) -> str:
    return f"realtime-token-{jti}"
