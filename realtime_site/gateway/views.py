"""The signed-in home page: which apps this server has and how to reach them."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from realtime_site.gateway.runners import get_pool


@login_required
async def home(request: HttpRequest) -> HttpResponse:
    pool = get_pool()
    await pool.ready()  # the pool lives on the server's event loop, hence an async view
    apps: dict[str, dict] = {}
    for runner in pool.describe():
        for app_id, state in runner["apps"].items():
            entry = apps.setdefault(app_id, {"id": app_id, "ready": 0, "reasons": set()})
            if runner["healthy"] and state["state"] == "ready":
                entry["ready"] += 1
            elif state["reason"]:
                entry["reasons"].add(state["reason"])
    return await sync_to_async(render)(
        request,
        "home.html",
        {"apps": sorted(apps.values(), key=lambda a: a["id"]), "runners": pool.describe()},
    )
