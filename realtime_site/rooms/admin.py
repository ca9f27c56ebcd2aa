"""Admin for rooms: each room and its members, shown and never edited (the canvas, its parameters
and who is in belong to the members and the owner), and closed by staff with the room's members told.

A room is closed through ``membership.close_room`` (the action, or before a delete), so that its live
connections hear of it; nothing here writes the canvas (``base``, ``ops``).
"""

from __future__ import annotations

import base64
import io
import logging
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from realtime_site.accounts.admin import CheckedSelection
from realtime_site.rooms import membership
from realtime_site.rooms.models import Room, RoomMember
from realtime_site.rooms.raster import RoomCanvas

log = logging.getLogger("realtime_site.rooms")
THUMBNAIL = 256  # pixels, the canvas's preview on the room's page
SWATCH = '<span style="display:inline-block;width:1em;height:1em;background:{};vertical-align:middle"></span> {}'


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> tuple[tuple[str, str], ...]:
        return (("open", "open"), ("closed", "closed"))

    def queryset(self, request: HttpRequest, queryset: QuerySet[Room]) -> QuerySet[Room]:
        if self.value() in ("open", "closed"):
            return queryset.filter(closed_at__isnull=self.value() == "open")
        return queryset


class RoomChangeList(ChangeList):
    """The list leaves the canvas in the database: a room's base can be hundreds of kilobytes."""

    def get_queryset(self, request: HttpRequest, exclude_parameters=None) -> QuerySet[Room]:
        return super().get_queryset(request, exclude_parameters).defer("base", "ops", "params")


class RoomMemberInline(admin.TabularInline):
    model = RoomMember
    fields = ("user", "colour", "invited", "joined_at", "removed_at", "frames")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RoomMember]:
        return super().get_queryset(request).select_related("user")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="colour")
    def colour(self, obj: RoomMember) -> str:
        return format_html(SWATCH, obj.color, obj.color)


def _member_count() -> Coalesce:
    """The room's members the owner did not remove, as a subquery (no GROUP BY over the room's columns)."""
    rows = RoomMember.objects.filter(room=OuterRef("pk"), removed_at__isnull=True).order_by().values("room")
    count = Subquery(rows.annotate(n=Count("id")).values("n")[:1], output_field=IntegerField())
    return Coalesce(count, Value(0), output_field=IntegerField())


@admin.register(Room)
class RoomAdmin(CheckedSelection):
    list_display = ("slug", "owner", "app", "status", "member_count", "frames", "created_at", "last_saved")
    list_filter = (StatusFilter, "app")
    list_select_related = ("owner",)
    search_fields = ("slug", "owner__username")
    date_hierarchy = "created_at"
    fields = ("slug", "owner", "app", "status", "invited_only", "params", "canvas", "background", "undoable",
              "version", "frames", "created_at", "saved_at")  # fmt: skip
    readonly_fields = fields
    inlines = (RoomMemberInline,)
    actions = ("close_rooms",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Room]:
        return super().get_queryset(request).annotate(n_members=_member_count())

    def get_changelist(self, request: HttpRequest, **kwargs) -> type[ChangeList]:
        return RoomChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rooms come from the drawing page

    def has_change_permission(self, request: HttpRequest, obj: Room | None = None) -> bool:
        """A room's page only shows it; the list's actions need the change permission."""
        return obj is None and super().has_change_permission(request)

    def delete_model(self, request: HttpRequest, obj: Room) -> None:
        self._close(request, [obj])
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        self._close(request, list(queryset.filter(closed_at__isnull=True)))
        super().delete_queryset(request, queryset)

    @admin.display(ordering="closed_at")
    def status(self, obj: Room) -> str:
        if obj.closed_at is None:
            return "open"
        return f"closed by {obj.closed_by or 'someone'} at {timezone.localtime(obj.closed_at):%Y-%m-%d %H:%M:%S}"

    @admin.display(ordering="n_members", description="members")
    def member_count(self, obj: Room) -> int:
        return obj.n_members

    @admin.display(ordering="saved_at", description="last saved")
    def last_saved(self, obj: Room) -> datetime | None:
        return obj.saved_at

    @admin.display(description="canvas (as stored)")
    def canvas(self, obj: Room) -> str:
        try:
            image = RoomCanvas.of_state(bytes(obj.base) if obj.base else None, obj.background, obj.ops or []).image
            image.thumbnail((THUMBNAIL, THUMBNAIL))
            out = io.BytesIO()
            image.save(out, "PNG")
        except Exception:
            log.exception("room %s: the stored canvas could not be drawn", obj.slug)
            return f"the stored canvas could not be drawn ({len(obj.base or b'')} bytes, {len(obj.ops or [])} ops)"
        data = base64.b64encode(out.getvalue()).decode("ascii")
        return format_html('<img src="data:image/png;base64,{}" alt="the room\'s canvas" width="{}" height="{}">',
                           data, image.width, image.height)  # fmt: skip

    @admin.display(description="undoable ops")
    def undoable(self, obj: Room) -> int:
        return len(obj.ops or [])

    @admin.action(description="Close the selected rooms", permissions=("change",))
    def close_rooms(self, request: HttpRequest, queryset: QuerySet[Room]) -> None:
        selected = queryset.count()
        rooms = list(queryset.filter(closed_at__isnull=True))
        failed = self._close(request, rooms)
        notes = [f"Closed {len(rooms) - failed} room(s) and told their members."] if len(rooms) > failed else []
        if selected > len(rooms):
            notes.append(f"{selected - len(rooms)} room(s) were closed already.")
        if notes:
            self.message_user(request, " ".join(notes))

    def _close(self, request: HttpRequest, rooms: list[Room]) -> int:
        """Close the open ``rooms`` as this staff member; how many whose close did not finish."""
        by, failed = f"staff ({request.user.get_username()})", []
        for room in rooms:
            if room.closed_at is not None:
                continue
            try:
                membership.close_room(room, by=by)
            except Exception:  # the database or the channel layer away
                log.exception("room %s: the close did not finish", room.slug)
                failed.append(room.slug)
        if failed:
            shown = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
            self.message_user(request, f"The close of these rooms did not finish (their members may not have been "
                                       f"told; see the log): {shown}.", messages.ERROR)  # fmt: skip
        return len(failed)
