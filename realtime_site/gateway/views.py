"""The drawing page and the list of apps it offers."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from realtime_site.gateway.runners import get_pool

FOLLOWS = {"image": "image", "controlnet": "lines (ControlNet)"}  # the app selector's words


async def app_states() -> list[dict[str, Any]]:
    """Every app any runner knows, ready on how many runners, or why not; with what its engine
    reports for the page: the prompt words it understands, the inputs it ignores, whether it shows
    its steps (previews), and what its results can follow (conditioning: the input picture, and
    with a ControlNet the drawing's lines)."""
    pool = get_pool()
    await pool.ready()  # the pool lives on the server's event loop, hence async views
    apps: dict[str, dict[str, Any]] = {}
    for runner in pool.describe():
        for app_id, state in runner["apps"].items():
            entry = apps.setdefault(
                app_id,
                {"id": app_id, "ready_runners": 0, "reasons": [], "vocabulary": [], "ignores": [], "previews": False,
                 "conditioning": []},
            )  # fmt: skip
            if runner["healthy"] and state["state"] == "ready":
                entry["ready_runners"] += 1
                entry["vocabulary"] = _strings(state["details"].get("style_names"))
                entry["ignores"] = _strings(state["details"].get("ignores"))
                entry["previews"] = state["previews"]
                entry["conditioning"] = _strings(state["details"].get("conditioning")) or ["image"]
            elif state["reason"] and state["reason"] not in entry["reasons"]:
                entry["reasons"].append(state["reason"])
    for entry in apps.values():
        entry["follows"] = " + ".join(FOLLOWS.get(c, c) for c in entry["conditioning"])
        entry["available"] = entry["ready_runners"] > 0
        entry["reason"] = None if entry["available"] else ("; ".join(entry["reasons"]) or "no runner is up")
    return sorted(apps.values(), key=lambda a: (not a["available"], a["id"]))


def _strings(value: object) -> list[str]:
    """A runner's list of words, kept only if it is one (a runner is trusted, but not its types)."""
    return [v for v in value if isinstance(v, str)][:64] if isinstance(value, list) else []


@login_required
async def draw(request: HttpRequest) -> HttpResponse:
    context = {"apps": await app_states(), "token_lifetime": settings.REALTIME_TOKEN_MAX_LIFETIME}
    return await sync_to_async(render)(request, "draw.html", context)


async def apps(request: HttpRequest) -> JsonResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"detail": "log in first"}, status=401)
    return JsonResponse({"apps": await app_states()})
