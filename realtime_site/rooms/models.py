"""A room (its canvas as stored, its shared parameters, who owns it, whether it is open) and its
members (their colour, whether they were invited or removed, the frames their changes started)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

__all__ = ["MEMBER_COLORS", "Room", "RoomMember", "new_slug"]

MEMBER_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
                 "#469990", "#800000", "#808000", "#000075")  # fmt: skip


def new_slug() -> str:
    return secrets.token_urlsafe(12)  # 96 random bits: a link nobody guesses


class Room(models.Model):
    slug = models.CharField(max_length=32, unique=True, default=new_slug)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_rooms")
    app = models.CharField(max_length=200, help_text="owner/alias of the app the room drives")
    params = models.JSONField(default=dict, blank=True, help_text="the shared prompt and parameters")
    invited_only = models.BooleanField(default=False, help_text="only invited users may join")
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.CharField(max_length=150, blank=True, help_text="who closed it (the owner or staff)")
    base = models.BinaryField(null=True, blank=True, help_text="the compacted canvas (PNG)")
    background = models.CharField(max_length=7, default="#ffffff")
    ops = models.JSONField(default=list, blank=True, help_text="the undoable ops after the base")
    version = models.PositiveBigIntegerField(default=0, help_text="canvas changes so far")
    frames = models.PositiveBigIntegerField(default=0, help_text="inference frames sent for the room")
    saved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"room {self.slug} of {self.owner}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class RoomMember(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships")
    color = models.CharField(max_length=7)
    invited = models.BooleanField(default=False, help_text="invited by the owner")
    joined_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    frames = models.PositiveBigIntegerField(default=0, help_text="inference frames this member's changes started")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="one_membership_per_user")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.user} in {self.room.slug}"
