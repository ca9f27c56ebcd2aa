"""The apps' HTTP calls as Django views: for session callers (this site's pages), CORS preflights,
and the proxy. Calls with a token or a key are served below Django (``app_calls``); both give the
same answers (``http_apps``)."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from realtime_site.gateway.cors import with_cors
from realtime_site.gateway.http_apps import CallAnswer, CallRequest, answer

__all__ = ["call", "run", "stream"]


def response_of(answered: CallAnswer) -> HttpResponse:
    response: HttpResponse
    if answered.events is not None:
        response = StreamingHttpResponse(answered.events, status=answered.status)
    else:
        response = HttpResponse(answered.body, status=answered.status)
    for name, value in answered.headers.items():
        response[name] = value
    return response


async def call(request: HttpRequest, owner: str, alias: str, mode: str) -> HttpResponse:
    """One call of ``owner/alias`` in ``mode``, from a Django request (the proxy's too)."""
    try:
        body: bytes | None = request.body
    except RequestDataTooBig:
        body = None
    called = CallRequest(request.scope, request.method or "", body, request.auser)  # type: ignore[attr-defined]
    return response_of(await answer(called, owner, alias, mode))


# Authenticated by a token, an API key, or the session from this site's own pages (admission checks
# the Origin), never by a cookie alone: fal's clients send no CSRF token.
@csrf_exempt
@with_cors
async def stream(request: HttpRequest, owner: str, alias: str) -> HttpResponse:
    return await call(request, owner, alias, "stream")


@csrf_exempt
@with_cors
async def run(request: HttpRequest, owner: str, alias: str) -> HttpResponse:
    return await call(request, owner, alias, "run")
