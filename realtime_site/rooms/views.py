"""The rooms' pages: make a room from the drawing page ("Share"), the room's page, and the owner's
actions on it (docs/rooms.md, "What a user does")."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from realtime_site.protocol import Refusal, ValidationError, data_url_bytes, is_app_id
from realtime_site.rooms import membership
from realtime_site.rooms.driver import DEFAULT_PARAMS
from realtime_site.rooms.models import Room, RoomMember
from realtime_site.rooms.ops import parse_message
from realtime_site.rooms.raster import RoomCanvas, decode_base

__all__ = ["create", "manage", "room_page"]

MAX_PICTURE_BYTES = 4 * 1024 * 1024


@login_required
@require_POST
def create(request: HttpRequest) -> HttpResponse:
    """A room from the drawing page's form: its app, its parameters and its drawing (a data URL)."""
    app = request.POST.get("app", "")
    if not is_app_id(app):
        return _bad("app: name the room's app as owner/alias")
    most = settings.REALTIME_MAX_OPEN_ROOMS
    if Room.objects.filter(owner=request.user, closed_at__isnull=True).count() >= most:
        return _bad(f"you own {most} open rooms, the most one may: close one first", status=429)
    try:
        params = _params(request.POST)
        canvas = _canvas(request.POST.get("picture", ""))
    except ValidationError as exc:
        return _bad(exc.reason)
    state = canvas.state()
    room = Room.objects.create(owner=request.user, app=app, params=params, base=state["base"])
    membership.admit(room.slug, request.user)
    return HttpResponseRedirect(f"/rooms/{room.slug}/")


def _params(form: Any) -> dict[str, Any]:
    params = dict(DEFAULT_PARAMS)
    given: dict[str, Any] = {"t": "params"}
    if form.get("prompt") is not None:
        given["prompt"] = form["prompt"]
    for name in ("strength", "num_inference_steps", "seed", "image_size"):
        if form.get(name):
            try:
                given[name] = float(form[name]) if name == "strength" else int(form[name])
            except ValueError:
                raise ValidationError(name, "must be a number") from None
    if len(given) > 1:
        params.update(parse_message(given).values)  # type: ignore[union-attr]
    return params


def _canvas(picture: str) -> RoomCanvas:
    if not picture:
        return RoomCanvas()
    data = data_url_bytes(picture, "picture")
    if len(data) > MAX_PICTURE_BYTES:
        raise ValidationError("picture", f"is over {MAX_PICTURE_BYTES} bytes")
    try:
        return RoomCanvas(decode_base(data))
    except Exception:
        raise ValidationError("picture", "is not a picture this server can read") from None


def _bad(reason: str, status: int = 400) -> HttpResponse:
    return HttpResponse(f"The room could not be made: {reason}", status=status, content_type="text/plain")


@login_required
def room_page(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        room, member = membership.admit(slug, request.user)
    except Refusal as refusal:
        status = 404 if refusal.close_code == 4404 else 403
        return render(request, "room_refused.html", {"reason": refusal.reason}, status=status)
    owner = room.owner_id == request.user.pk
    members = RoomMember.objects.filter(room=room).select_related("user") if owner else []
    context = {"room": room, "member": member, "owner": owner, "members": members,
               "link": request.build_absolute_uri(f"/rooms/{room.slug}/")}  # fmt: skip
    return render(request, "room.html", context)


@login_required
@require_POST
def manage(request: HttpRequest, slug: str) -> HttpResponse:
    """The owner's actions: ``invited_only`` (on/off), ``invite`` (a username), ``remove`` (a user id),
    ``close``. Answers JSON: ``{"ok": true}`` or ``{"ok": false, "detail": ...}``."""
    room = get_object_or_404(Room, slug=slug)
    if room.owner_id != request.user.pk:
        return JsonResponse({"ok": False, "detail": "only the room's owner may do this"}, status=403)
    action = request.POST.get("action", "")
    if room.closed_at is not None:
        return JsonResponse({"ok": False, "detail": "this room was closed"}, status=409)
    if action == "invited_only":
        membership.set_invited_only(room, request.POST.get("value") == "on")
    elif action == "invite":
        problem = membership.invite(room, request.POST.get("username", "").strip())
        if problem:
            return JsonResponse({"ok": False, "detail": problem}, status=400)
    elif action == "remove":
        try:
            user_id = int(request.POST.get("user", ""))
        except ValueError:
            return JsonResponse({"ok": False, "detail": "user: give the member's user id"}, status=400)
        if not membership.remove_member(room, user_id):
            return JsonResponse({"ok": False, "detail": "no such member (the owner cannot be removed)"}, status=400)
    elif action == "close":
        membership.close_room(room, request.user.get_username())
    else:
        return JsonResponse({"ok": False, "detail": "action: one of invited_only, invite, remove, close"}, status=400)
    return JsonResponse({"ok": True})
