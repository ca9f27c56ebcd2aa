"""Token endpoints (docs/protocol.md section 4): ``POST /tokens/``, ``GET /api/fal/token``, and the
proxy's token requests (``gateway.proxy``)."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from realtime_site.accounts.failures import failures
from realtime_site.accounts.keys import KeyRefused, authenticate_key, parse_key_header
from realtime_site.accounts.models import ApiKey
from realtime_site.accounts.tokens import ALIAS, MAX_APPS_PER_TOKEN, app_allowed, issue_token, token_lifetime
from realtime_site.protocol import parse_app_path


def _error(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


class BadRequest(Exception):
    pass


def _token_request(body: bytes) -> tuple[list[str], int]:
    """Parse fal's token request body: ``{"allowed_apps": [...], "token_expiration": 120}``."""
    try:
        data: Any = json.loads(body or b"{}")
    except ValueError:
        raise BadRequest("body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("body is nested too deeply (a token request is one flat JSON object)") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    apps = data.get("allowed_apps")
    if not isinstance(apps, list) or not 1 <= len(apps) <= MAX_APPS_PER_TOKEN:
        raise BadRequest(f"allowed_apps must be a list of 1 to {MAX_APPS_PER_TOKEN} app aliases")
    apps = [_alias(app) for app in apps]
    if not all(apps):
        raise BadRequest("allowed_apps holds something that is not an app alias")
    try:
        lifetime = token_lifetime(data.get("token_expiration"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return apps, lifetime


def _alias(app: object) -> str | None:
    """An alias as it is, or the alias of ``owner/alias`` or ``owner/alias/path`` (fal's JS client
    asks its token provider for ``owner/alias/stream``); None for anything else."""
    if not isinstance(app, str):
        return None
    if ALIAS.match(app):
        return app
    try:
        return parse_app_path(app if app.count("/") >= 2 else f"{app}/realtime").alias
    except ValueError:
        return None


def _issue_for(user: AbstractBaseUser, body: bytes, api_key: ApiKey | None) -> JsonResponse:
    try:
        apps, lifetime = _token_request(body)
    except BadRequest as exc:
        return _error(400, str(exc))
    refused = [alias for alias in apps if not app_allowed(user, alias)]
    if refused:
        return _error(403, f"not allowed to use: {', '.join(refused)}")
    # fal's clients parse the answer as a bare JSON string.
    return JsonResponse(issue_token(user, apps, lifetime, api_key=api_key), safe=False)


@csrf_exempt  # authenticated by the API key header, not by a cookie
@require_POST
def tokens(request: HttpRequest) -> JsonResponse:
    address = request.META.get("REMOTE_ADDR") or ""  # the proxy's client with daphne's --proxy-headers
    wait = failures.blocked(address)
    if wait is not None:  # refused before the key is even looked at
        response = _error(429, failures.describe(wait))
        response["Retry-After"] = str(math.ceil(wait))
        return response
    header = request.headers.get("Authorization")
    try:
        key = authenticate_key(*parse_key_header(header))
    except KeyRefused as exc:
        if header is not None:  # a key was presented and refused; a forgotten header guesses nothing
            failures.record(address)
        return _error(401, str(exc))
    return _issue_for(key.user, request.body, key)


@require_GET
def fal_token(request: HttpRequest) -> JsonResponse:
    if not request.user.is_authenticated:
        return _error(401, "log in first")
    app = request.GET.get("app")
    if not app:
        return _error(400, "the app query parameter is required, e.g. ?app=local/stylize")
    try:
        path = parse_app_path(app if app.count("/") >= 2 else f"{app}/realtime")
    except ValueError as exc:
        return _error(400, f"app: {exc}")
    app_id, alias = path.app_id, path.alias
    if not app_allowed(request.user, alias):
        return _error(403, f"not allowed to use {app_id}")
    lifetime = token_lifetime(None)
    return JsonResponse({"token": issue_token(request.user, [alias], lifetime), "expires_in": lifetime})


def same_origin(request: HttpRequest) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a cross-site browser request (browsers send Origin on every POST)
    url = urlsplit(origin)  # the same scheme, host and port as this request: another port is another site
    return url.scheme == request.scheme and url.netloc.lower() == request.get_host().lower()


def token_for_session(request: HttpRequest, user: AbstractBaseUser) -> JsonResponse:
    """A token for the logged-in user, asked through the proxy by this site's own pages (sync).
    Session-authenticated, but fal's JS client sends no CSRF token: a cross-site POST is refused by
    its Origin instead (and the session cookie is SameSite=Lax, so it carries no session anyway)."""
    if not same_origin(request):
        return _error(403, "cross-origin requests are not allowed")
    return _issue_for(user, request.body, None)
