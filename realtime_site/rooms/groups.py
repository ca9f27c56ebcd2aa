"""Channel-layer names of a room: its group (every member's connection and its driver are in it)."""

from __future__ import annotations

__all__ = ["room_group"]


def room_group(slug: str) -> str:
    return f"room-{slug}"
