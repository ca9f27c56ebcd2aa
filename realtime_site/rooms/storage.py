"""A room as stored: loaded when its driver starts, saved while it changes (sync; database thread)."""

from __future__ import annotations

import io
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone
from PIL import Image

from realtime_site.gateway.limits import EffectiveLimits, load_limits
from realtime_site.rooms.models import Room, RoomMember

__all__ = ["limits_of", "load", "store"]


def load(slug: str) -> Room | None:
    return Room.objects.filter(slug=slug).first()


def limits_of(user_id: int) -> EffectiveLimits | None:
    user = get_user_model().objects.filter(pk=user_id, is_active=True).select_related("realtime_limits").first()
    return None if user is None else load_limits(user)


def store(room_id: int, state: dict[str, Any], base: Image.Image | None, params: dict[str, Any], version: int,
          frames: dict[int, int]) -> None:  # fmt: skip
    """The canvas (its base only when it changed: encoded here, off the event loop), the parameters,
    and the frames since the last save."""
    fields: dict[str, Any] = {"ops": state["ops"], "background": state["background"], "params": params,
                              "version": version, "saved_at": timezone.now()}  # fmt: skip
    if base is not None:
        out = io.BytesIO()
        base.save(out, "PNG", compress_level=6)
        fields["base"] = out.getvalue()
    if frames:
        fields["frames"] = F("frames") + sum(frames.values())
    Room.objects.filter(pk=room_id).update(**fields)
    for user, count in frames.items():
        RoomMember.objects.filter(room_id=room_id, user_id=user).update(frames=F("frames") + count)
