"""``POST /api/fal/proxy``: the route ``@fal-ai/client``'s ``proxyUrl`` (and fal-swift's proxy) uses,
answered here, never forwarded: this is not an open relay.

The target (``x-fal-target-url``) must be one of fal's own endpoints that this server serves itself:
the token endpoint (``https://rest.fal.ai/tokens/``, ``rest.alpha.fal.ai``, or this host), or an app's
``https://fal.run/{owner}/{alias}/stream`` or ``https://fal.run/{owner}/{alias}`` (streamed as it
comes, not buffered). Every other target is refused. The caller is the logged-in user of this site's
own pages (the Origin is checked), or an API key (``Authorization: Key``: a native app run with
``FAL_KEY`` set sends it).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from realtime_site.accounts import views as accounts
from realtime_site.gateway.http_apps import error_answer
from realtime_site.gateway.http_views import call, response_of
from realtime_site.protocol import ErrorCode

__all__ = ["fal_proxy"]

TOKEN_PATH = "/tokens/"
TOKEN_HOSTS = {"rest.fal.ai", "rest.alpha.fal.ai"}
RUN_HOSTS = {"fal.run"}


def _app_target(path: str) -> tuple[str, str, str] | None:
    """``/owner/alias/stream`` or ``/owner/alias`` as (owner, alias, mode); None for anything else."""
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[2] == "stream":
        return parts[0], parts[1], "stream"
    if len(parts) == 2:
        return parts[0], parts[1], "run"
    return None


@csrf_exempt  # a session caller is checked by its Origin; fal's clients send no CSRF token
async def fal_proxy(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return response_of(error_answer(ErrorCode.VALIDATION_ERROR, f"use POST, not {request.method}", 405))
    keyed = request.headers.get("Authorization") is not None
    if not keyed and not (await request.auser()).is_authenticated:
        return response_of(error_answer(ErrorCode.UNAUTHORIZED, "log in first, or send Authorization: Key", 401))
    target = request.headers.get("x-fal-target-url")
    if not target:
        return response_of(error_answer(ErrorCode.VALIDATION_ERROR, "the x-fal-target-url header is required", 400))
    url = urlsplit(target)
    here = url.netloc.lower() == request.get_host().lower()
    if url.path == TOKEN_PATH and (url.hostname in TOKEN_HOSTS or here):
        if keyed:
            return await sync_to_async(accounts.tokens)(request)
        return await sync_to_async(accounts.token_for_session)(request, await request.auser())
    app = _app_target(url.path)
    if app is not None and (url.hostname in RUN_HOSTS or here):
        return await call(request, *app)  # admitted there: key, or session with this site's Origin
    reason = f"this proxy serves fal's token endpoint and the apps' run and stream endpoints only, not {target[:200]}"
    return response_of(error_answer(ErrorCode.VALIDATION_ERROR, reason, 400))
