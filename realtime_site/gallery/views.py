"""The gallery's pages (docs/gallery.md): keep a result, the grid of one's creations, a creation's page
(Remix, share, delete), and its files, served with the owner check: a private creation is 404 to
everyone but its owner and staff; a public one opens for anyone with its link, logged out too."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from realtime_site.gallery import keeping
from realtime_site.gallery.models import Creation
from realtime_site.gallery.pictures import animated_webp, check_picture, thumbnail
from realtime_site.protocol import ValidationError, is_app_id

__all__ = ["creation_file", "creation_page", "delete", "gallery", "keep", "remix", "share", "timelapse"]

FILES = {"result", "sketch", "thumbnail"}
MAX_FRAMES = 90  # a timelapse's pictures (Django takes at most 100 files a request)
FRAME_MS = (40, 2000)  # how long each picture shows
TIMELAPSE_MAX_SIDE = 1024  # a timelapse's pictures are results, not posters: this bounds its encoding
_encoding: set[int] = set()  # users whose timelapse is being made in this process: one at a time each


def _refused(field: str, problem: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": "VALIDATION_ERROR", "detail": f"{field}: {problem}"}, status=status)


@login_required
@require_POST
async def keep(request: HttpRequest) -> JsonResponse:
    """A result with its sketch and parameters (multipart: ``result``, ``sketch``, the fields). The
    pictures are checked and the thumbnail made in a worker thread, not the database thread that
    admissions and usage records use."""
    upload, sketch_upload = request.FILES.get("result"), request.FILES.get("sketch")
    if upload is None:
        return _refused("result", "send the result picture as a file field named result")
    cap = settings.REALTIME_MAX_FRAME_BYTES

    def checked() -> tuple[Any, Any, bytes]:
        result = check_picture(upload.read(cap + 1), "result", claimed=upload.content_type, max_bytes=cap)
        sketch = None
        if sketch_upload is not None:
            sketch = check_picture(sketch_upload.read(cap + 1), "sketch", claimed=sketch_upload.content_type,
                                   max_bytes=cap)  # fmt: skip
        return result, sketch, thumbnail(result)

    try:
        params = _params(request.POST)
        user = await request.auser()
        if params["room"] and not await database_sync_to_async(_member_of)(params["room"], user):
            return _refused("room", "you are not a member of that room", status=403)
        result, sketch, small = await asyncio.to_thread(checked)
        creation = await database_sync_to_async(keeping.keep)(user, result, sketch, params, small=small)
    except ValidationError as exc:
        return _refused(exc.field, str(exc).split(": ", 1)[-1])
    except keeping.QuotaFull as full:
        return JsonResponse({"error": "QUOTA_EXCEEDED", "detail": str(full)}, status=413)
    return JsonResponse({"id": creation.public_id, "url": f"/gallery/{creation.public_id}/"}, status=201)


@login_required
@require_POST
async def timelapse(request: HttpRequest) -> JsonResponse:
    """The results recorded while drawing (``frame`` files, in order) as one animated WebP, kept. The
    encoding (seconds for many frames) runs in a worker thread."""
    uploads = request.FILES.getlist("frame")
    if not 2 <= len(uploads) <= MAX_FRAMES:
        return _refused("frame", f"send 2 to {MAX_FRAMES} recorded pictures, got {len(uploads)}")
    cap = settings.REALTIME_MAX_FRAME_BYTES

    def animated(frame_ms: int) -> tuple[Any, bytes]:
        frames = [check_picture(u.read(cap + 1), f"frame {i}", claimed=u.content_type, max_bytes=cap)
                  for i, u in enumerate(uploads)]  # fmt: skip
        for i, frame in enumerate(frames):
            if max(frame.width, frame.height) > TIMELAPSE_MAX_SIDE:
                raise ValidationError(f"frame {i}", f"is {frame.width}x{frame.height}; at most {TIMELAPSE_MAX_SIDE}")
        animation = check_picture(animated_webp(frames, frame_ms), "timelapse", max_bytes=4 * cap)
        return animation, thumbnail(frames[-1])

    user = await request.auser()
    if user.pk in _encoding:
        body = {"error": "RATE_LIMITED", "detail": "a timelapse of yours is being made: wait for it"}
        return JsonResponse(body, status=429)
    _encoding.add(user.pk)
    try:
        frame_ms = int(_number(request.POST, "frame_ms", *FRAME_MS, whole=True) or 250)
        params = _params(request.POST)
        animation, small = await asyncio.to_thread(animated, frame_ms)
        store = database_sync_to_async(keeping.keep)
        creation = await store(user, animation, None, params, small=small, kind=Creation.Kind.TIMELAPSE,
                               frames=len(uploads))  # fmt: skip
    except ValidationError as exc:
        return _refused(exc.field, str(exc).split(": ", 1)[-1])
    except keeping.QuotaFull as full:
        return JsonResponse({"error": "QUOTA_EXCEEDED", "detail": str(full)}, status=413)
    finally:
        _encoding.discard(user.pk)
    body = {"id": creation.public_id, "url": f"/gallery/{creation.public_id}/", "frames": len(uploads)}
    return JsonResponse(body, status=201)


def _member_of(slug: str, user: Any) -> bool:
    """Whether ``user`` is in the room (any member may keep the room's result)."""
    from realtime_site.rooms.models import RoomMember

    return RoomMember.objects.filter(room__slug=slug, user=user, removed_at__isnull=True).exists()


def _params(form: Any) -> dict[str, Any]:
    app = form.get("app", "")
    if not is_app_id(app):
        raise ValidationError("app", "name the app as owner/alias")
    prompt = form.get("prompt", "")
    if len(prompt) > 2000:
        raise ValidationError("prompt", "at most 2000 characters")
    return {"app": app, "prompt": prompt, "room": form.get("room", "")[:32],
            "seed": _number(form, "seed", 0, 2**32 - 1, whole=True),
            "strength": _number(form, "strength", 0, 1),
            "steps": _number(form, "num_inference_steps", 1, 50, whole=True),
            "size": _number(form, "image_size", 64, 2048, whole=True)}  # fmt: skip


def _number(form: Any, name: str, low: float, high: float, *, whole: bool = False) -> Any:
    raw = form.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(name, "must be a number") from None
    if not math.isfinite(value) or not low <= value <= high or (whole and value != int(value)):
        raise ValidationError(name, f"must be {'a whole number' if whole else 'a number'} from {low:g} to {high:g}")
    return int(value) if whole else value


def _visible(request: HttpRequest, public_id: str) -> Creation:
    """The creation, if this request may see it: else 404, as if there were none."""
    creation = Creation.objects.filter(public_id=public_id).select_related("owner").first()
    user = request.user
    if creation is None or not (creation.public or creation.owner_id == user.pk or user.is_staff):
        raise Http404("no such creation")
    return creation


def _owned(request: HttpRequest, public_id: str) -> Creation:
    creation = Creation.objects.filter(public_id=public_id, owner_id=request.user.pk).first()
    if creation is None:
        raise Http404("no such creation of yours")
    return creation


@login_required
@require_GET
def gallery(request: HttpRequest) -> HttpResponse:
    creations = Creation.objects.filter(owner=request.user)
    count, used = keeping.usage_of(request.user)
    most_mb = settings.REALTIME_GALLERY_MAX_BYTES // 2**20
    context = {"creations": creations, "count": count, "used_mb": used / 2**20,
               "most": settings.REALTIME_GALLERY_MAX_ITEMS, "most_mb": most_mb}  # fmt: skip
    return render(request, "gallery/grid.html", context)


@require_GET
def creation_page(request: HttpRequest, public_id: str) -> HttpResponse:
    creation = _visible(request, public_id)
    base = request.build_absolute_uri(f"/gallery/{creation.public_id}/")
    context = {"creation": creation, "mine": creation.owner_id == request.user.pk, "link": base,
               "image": f"{base}result"}  # fmt: skip
    return render(request, "gallery/creation.html", context)


@require_GET
def creation_file(request: HttpRequest, public_id: str, what: str) -> FileResponse:
    if what not in FILES:
        raise Http404("no such file")
    creation = _visible(request, public_id)
    file = getattr(creation, what)
    if not file:
        raise Http404("no such file")
    kinds = {"result": creation.result_type, "thumbnail": "image/jpeg"}
    content_type = kinds.get(what) or ("image/png" if file.name.endswith(".png") else "image/jpeg")
    response = FileResponse(file.open("rb"), content_type=content_type)
    response["Cache-Control"] = "public, max-age=3600" if creation.public else "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_GET
def remix(request: HttpRequest, public_id: str) -> JsonResponse:
    """What the drawing page restores: the parameters, and where the sketch is."""
    creation = _visible(request, public_id)
    sketch = f"/gallery/{creation.public_id}/sketch" if creation.sketch else None
    return JsonResponse({"parameters": creation.parameters(), "sketch": sketch})


@login_required
@require_POST
def share(request: HttpRequest, public_id: str) -> JsonResponse:
    creation = _owned(request, public_id)
    creation.public = request.POST.get("public") == "on"
    creation.save(update_fields=["public"])
    link = request.build_absolute_uri(f"/gallery/{creation.public_id}/")
    return JsonResponse({"public": creation.public, "link": link if creation.public else None})


@login_required
@require_POST
def delete(request: HttpRequest, public_id: str) -> HttpResponse:
    keeping.delete(_owned(request, public_id))
    return HttpResponseRedirect("/gallery/")
