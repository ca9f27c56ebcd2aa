"""The answer to a locked-out login (django-axes' ``AXES_LOCKOUT_CALLABLE``): 429, saying when to retry."""

from __future__ import annotations

import math
from typing import Any

from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

__all__ = ["locked_out"]


def _in_words(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


def locked_out(request: HttpRequest, original_response: HttpResponse | None, credentials: Any = None) -> HttpResponse:
    """Each refused try restarts the cool-off (axes' default), so the wait is a whole cool-off."""
    cool_off = get_cool_off(request)
    seconds = max(1, math.ceil(cool_off.total_seconds())) if cool_off else None
    message = f"Too many failed logins for this username from your address ({settings.AXES_FAILURE_LIMIT} allowed)"
    message += f": try again in {_in_words(seconds)}." if seconds else ": ask an administrator to unlock it."
    if request.headers.get("Accept", "").startswith("application/json"):
        response: HttpResponse = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "accounts/locked_out.html", {"message": message}, status=429)
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
