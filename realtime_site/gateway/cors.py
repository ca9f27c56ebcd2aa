"""CORS for the HTTP app endpoints, for browser callers on other sites (fal's ``connectionMode:
"client"`` streams straight from the page). Off by default: ``REALTIME_CORS_ORIGINS`` lists the
origins allowed, matched exactly. Such a caller authenticates with a token in the query, never with
this site's cookie (credentials are not allowed cross-site)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

__all__ = ["cors_headers", "with_cors"]

View = Callable[..., Awaitable[HttpResponse]]
ALLOWED_HEADERS = "accept, authorization, content-type, x-fal-target-url"
PREFLIGHT_MAX_AGE = "600"


def allowed_origin(request: HttpRequest) -> str | None:
    origin = request.headers.get("Origin")
    if not origin or origin not in settings.REALTIME_CORS_ORIGINS:
        return None
    return origin


def cors_headers(origin: str | None) -> dict[str, str]:
    """The headers of an answer to a page of ``origin``: none unless it is an allowed origin."""
    if not origin or origin not in settings.REALTIME_CORS_ORIGINS:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "x-fal-request-id",
        "Vary": "Origin",
    }


def with_cors(view: View) -> View:
    """Answer preflights and mark responses for an allowed origin; other origins get no CORS headers
    (the browser then keeps the response from the page)."""

    @functools.wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        origin = allowed_origin(request)
        if request.method == "OPTIONS":
            response = HttpResponse(status=204 if origin else 403)
            if origin:
                response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
                response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
        else:
            response = await view(request, *args, **kwargs)
        for name, value in cors_headers(origin).items():
            response[name] = value
        return response

    return wrapper
