"""Who may be in a room, and the owner's say over it (sync; the database thread). Anyone logged in
with the link may join an open room, unless the owner made it "invited users only"; a member the
owner removed stays out. Actions that change who is in take effect on live connections through the
room's group (``tell``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from realtime_site.protocol import CloseCode, ErrorCode, Refusal
from realtime_site.rooms.groups import room_group
from realtime_site.rooms.models import MEMBER_COLORS, Room, RoomMember

__all__ = ["admit", "close_room", "invite", "remove_member", "set_invited_only", "tell"]

log = logging.getLogger("realtime_site.rooms")
SEND_TIMEOUT = 5.0


def admit(slug: str, user: AbstractBaseUser) -> tuple[Room, RoomMember]:
    """The room and the user's membership (made at their first visit), or ``Refusal``."""
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        raise Refusal(ErrorCode.FORBIDDEN, "there is no such room", CloseCode.NOT_FOUND)
    if room.closed_at is not None:
        raise Refusal(ErrorCode.FORBIDDEN, "this room was closed", CloseCode.FORBIDDEN)
    member = RoomMember.objects.filter(room=room, user=user).first()
    if member is not None and member.removed_at is not None:
        raise Refusal(ErrorCode.FORBIDDEN, "the owner removed you from this room", CloseCode.FORBIDDEN)
    owner = room.owner_id == user.pk
    if member is None:
        if room.invited_only and not owner:
            raise Refusal(ErrorCode.FORBIDDEN, "this room is for invited users only", CloseCode.FORBIDDEN)
        member = _member(room, user, invited=owner)
    if room.invited_only and not (owner or member.invited):
        raise Refusal(ErrorCode.FORBIDDEN, "this room is for invited users only", CloseCode.FORBIDDEN)
    if member.joined_at is None:
        member.joined_at = timezone.now()
        member.save(update_fields=["joined_at"])
    return room, member


def _member(room: Room, user: AbstractBaseUser, *, invited: bool) -> RoomMember:
    count = RoomMember.objects.filter(room=room).count()
    member, _ = RoomMember.objects.get_or_create(
        room=room, user=user, defaults={"color": MEMBER_COLORS[count % len(MEMBER_COLORS)], "invited": invited}
    )
    return member


def set_invited_only(room: Room, on: bool) -> None:
    """Switching it on keeps those who joined already: they count as invited."""
    if on and not room.invited_only:
        RoomMember.objects.filter(room=room, removed_at__isnull=True, joined_at__isnull=False).update(invited=True)
    room.invited_only = on
    room.save(update_fields=["invited_only"])


def invite(room: Room, username: str) -> str | None:
    """Invite a user by name; the problem when there is one."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        return f"there is no user {username!r}"
    member = _member(room, user, invited=True)
    member.invited, member.removed_at = True, None
    member.save(update_fields=["invited", "removed_at"])
    return None


def remove_member(room: Room, user_id: int) -> bool:
    if user_id == room.owner_id:
        return False
    removed = RoomMember.objects.filter(room=room, user_id=user_id, removed_at__isnull=True).update(
        removed_at=timezone.now(), invited=False
    )
    if removed:
        tell(room.slug, {"type": "room.kick", "user": user_id, "reason": "the owner removed you from this room"})
    return bool(removed)


def close_room(room: Room, by: str) -> None:
    """Close it (once: whoever closes first is named) and tell its live connections and driver."""
    now = timezone.now()
    if Room.objects.filter(pk=room.pk, closed_at__isnull=True).update(closed_at=now, closed_by=by):
        room.closed_at, room.closed_by = now, by
    else:
        room.refresh_from_db(fields=["closed_at", "closed_by"])
    tell(room.slug, {"type": "room.closed", "reason": f"the room was closed by {room.closed_by or by}"})


def tell(slug: str, message: dict[str, Any]) -> None:
    """Send ``message`` to the room's live connections and its driver, from sync code. Never raises:
    with the layer away, the change stands in the database (a member who comes back is refused) and
    the failure is logged."""
    try:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(_send)(layer, room_group(slug), message)
    except Exception as exc:
        log.warning("room %s: could not tell its connections (%s: %.200s)", slug, type(exc).__name__, exc)


async def _send(layer: Any, group: str, message: dict[str, Any]) -> None:
    await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT)
