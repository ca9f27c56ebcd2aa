"""``GET /metrics``: Prometheus text, for the configured bearer token or a staff session with the
permission to see usage (``usage.view_connectionrecord``; superusers have it)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from realtime_site.gateway.runners import get_pool
from realtime_site.staff.dashboard import RECORDS_PERMISSION
from realtime_site.usage.metrics import REGISTRY, RUNNER_UP


def _bearer_ok(request: HttpRequest) -> bool:
    token = settings.REALTIME_METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


async def metrics(request: HttpRequest) -> HttpResponse:
    if not _bearer_ok(request):
        user = await request.auser()
        if not (user.is_authenticated and user.is_staff and await user.ahas_perm(RECORDS_PERMISSION)):
            refusal = f"the metrics bearer token, or staff with the {RECORDS_PERMISSION} permission, only\n"
            return HttpResponse(refusal, status=403, content_type="text/plain")
    pool = get_pool()
    await pool.ready()
    for runner in pool.runners:
        RUNNER_UP.labels(runner.url).set(1 if runner.healthy else 0)
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
