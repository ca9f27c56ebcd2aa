"""Failures that are not the client's fault, or are, answered as JSON with a clear reason.

A database that is away is a 503 (not a 500 with a traceback), and a body over Django's
``DATA_UPLOAD_MAX_MEMORY_SIZE`` a 413; both with ``detail`` and ``message``, as the token endpoints
and fal's clients expect errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

__all__ = ["ClearFailuresMiddleware"]

log = logging.getLogger("realtime_site")


def _json(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail, "message": detail}, status=status)


class ClearFailuresMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (OperationalError, InterfaceError)):
            log.warning(
                "%s %s: the database is unavailable (%s)", request.method, request.path, type(exception).__name__
            )
            response = _json(503, "the database is unavailable; try again shortly")
            response["Retry-After"] = "5"
            return response
        if isinstance(exception, RequestDataTooBig):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return _json(413, f"the request body is too large (the limit is {limit} bytes)")
        return None
